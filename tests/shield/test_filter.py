"""The safety filter against the test oracle (``tests/oracle.py``).

The oracle computes an arm's state with MuJoCo's own Jacobians and the rows and
margins in plain NumPy; the filter (numba, one call per step) must describe the same
feasible set: the same rows in the same order with the same kinds, the same margins,
the same projection and the same ``info``. States cover every task in ``tasks/*.toml``:
random policies at several widths, random joint configurations (outside the joint
margins, the workspace box and inside keep-out margins) and pushes into the table,
block and plate (contacts).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
import oracle
import pytest

from safebot import kernels
from safebot.envelope import Bounds, Envelope
from safebot.envs import ArmTaskEnv
from safebot.shield import ArmState, MujocoArmView, Shield
from safebot.shield import rows as shield_rows
from safebot.shield.packed import ROW_KINDS, PackedState, Rows, pack_bounds, pack_state

MakeTask = Callable[..., ArmTaskEnv]
TASKS = tuple(sorted(p.stem for p in (Path(__file__).parents[2] / "tasks").glob("*.toml")))
WIDTHS = (0.0, 0.4, 1.0)
RTOL = 1e-9  # the filter computes the pseudo-inverse and Jacobians its own way: rounding only


def test_every_shipped_task_is_covered() -> None:
    assert {"reach", "reach_joint", "push", "press"} <= set(TASKS)


def _states(env: Shield, rng: np.random.Generator, n: int) -> Iterator[int]:
    """Drive ``env`` through ``n`` varied states (yields the index); the caller inspects each."""
    base = env.unwrapped
    assert isinstance(base, ArmTaskEnv)
    phys = base.physics
    env.reset(seed=int(rng.integers(1 << 30)))
    k = env.action_space.shape[0]  # type: ignore[index]
    down = np.zeros(k)
    if base.action_mode == "ee_velocity":
        down[:] = (0.2, 0.0, -1.0)  # into the table, the block or the plate: contacts
    for i in range(n):
        yield i
        phase = i % 30
        if phase == 29:  # a random configuration, a little beyond the joint limits at times
            base.data.qpos[phys.qpos_adr] = rng.uniform(base.q_low - 0.05, base.q_high + 0.05)
            mujoco.mj_forward(base.model, base.data)
            continue
        if phase < 22:  # unshielded, at full speed: the shield would keep it off the surfaces
            _, _, terminated, truncated, _ = base.step(down)
        else:
            _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, k))
        if terminated or truncated:
            env.reset(seed=int(rng.integers(1 << 30)))


def _assert_same_rows(ref: Rows, got: Rows) -> None:
    assert got.A.shape == ref.A.shape, (got.A.shape, ref.A.shape)
    np.testing.assert_array_equal(got.kind, ref.kind)
    scale = 1.0 + np.abs(ref.A).max()
    np.testing.assert_allclose(got.A, ref.A, rtol=RTOL, atol=RTOL * scale)
    np.testing.assert_allclose(got.b, ref.b, rtol=RTOL, atol=RTOL * (1.0 + np.abs(ref.b).max()))


def _kin(env: Shield) -> Any:
    arm = env.arm
    assert isinstance(arm, MujocoArmView)
    return arm.kin


# --------------------------------------------------------------------------- rows and state


@pytest.mark.parametrize("task", TASKS)
def test_rows_and_margins_match_the_oracle(make_task: MakeTask, task: str) -> None:
    """build_into on pack_state(state) == oracle.build(state): rows, order, kinds; margins."""
    env = Shield(make_task(task))
    kin = _kin(env)
    rng = np.random.default_rng(0)
    for i in _states(env, rng, 90):
        env.set_width(WIDTHS[i % len(WIDTHS)])
        state = oracle.arm_state(kin)
        bounds = env.envelope.bounds()
        if state.sites:  # the link sites' radii (model.site_size) are part of the comparison
            assert len(state.site_radius) == len(state.sites) and min(state.site_radius) > 0
        _assert_same_rows(
            oracle.build(state, env.envelope, kin.scale, bounds),
            shield_rows.build(state, env.envelope, kin.scale, bounds),
        )


@pytest.mark.parametrize("task", TASKS)
def test_the_view_packs_the_oracles_state(make_task: MakeTask, task: str) -> None:
    """MujocoArmView.pack (numba on MuJoCo's arrays) == pack_state(oracle.arm_state)."""
    env = Shield(make_task(task))
    view = env.arm
    assert isinstance(view, MujocoArmView)
    rng = np.random.default_rng(1)
    contacts = 0
    for _ in _states(env, rng, 90):
        got = PackedState(len(view.scale))
        view.pack(got)
        ref = pack_state(oracle.arm_state(view.kin), len(view.scale))
        np.testing.assert_array_equal(got.dims[:8], ref.dims[:8])
        contacts += int(ref.dims[4])
        for name in ("E", "e", "ee_pos", "M", "c", "q", "q_low", "q_high", "site_pos", "S", "s",
                     "site_radius", "box_c", "box_h", "con_f", "con_N", "con_nu"):  # fmt: skip
            n = getattr(ref, name).shape[0]
            a, b = getattr(got, name), getattr(ref, name)
            if name in ("M", "c", "q", "q_low", "q_high"):
                n = int(ref.dims[1])
            elif name in ("site_pos", "S", "s", "site_radius"):
                n = int(ref.dims[2])
            elif name in ("box_c", "box_h"):
                n = int(ref.dims[3])
            elif name.startswith("con_"):
                n = int(ref.dims[4])
            np.testing.assert_allclose(a[:n], b[:n], rtol=RTOL, atol=1e-9, err_msg=name)
    if task in ("push", "press"):
        assert contacts > 0, "no contact seen: the contact path is untested"


# --------------------------------------------------------------------------- whole steps


def _reference_step(env: Shield, action: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """What the shield must do on ``action``, computed the readable way."""
    arm = env.arm
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    u_raw = np.clip(a, -1.0, 1.0) * arm.scale if np.isfinite(a).all() else np.full(a.shape, np.nan)
    state = arm.state() if not isinstance(arm, MujocoArmView) else oracle.arm_state(arm.kin)
    bounds = env.envelope.bounds()
    rows = oracle.build(state, env.envelope, arm.scale, bounds)
    u, active, status = kernels.project(u_raw, rows.A, rows.b, 1.0 / arm.scale**2, 0 * arm.scale)
    ok = status == kernels.STATUS_OK
    correction = float(np.linalg.norm((u - u_raw) / arm.scale)) if ok else float("nan")
    info: dict[str, Any] = {
        "shield/intervened": not ok or correction > 1e-9,
        "shield/correction": correction,
        "shield/active": sorted({ROW_KINDS[k] for k in rows.kind[active]} - {"action_box"}),
        "shield/status": kernels.STATUS_NAMES[status],
        "shield/width": env.envelope.mean_width(),
    }
    for kind, margin in oracle.margins(state, bounds).items():
        info[f"shield/margin/{kind}"] = margin
    return np.nan_to_num(u_raw), u, info


def _check_step(env: Shield, action: Any) -> dict[str, Any]:
    last_ref, u_ref, info_ref = _reference_step(env, action)
    _, _, _, _, info = env.step(action)
    shield_info = {k: v for k, v in info.items() if k.startswith("shield/")}
    assert shield_info.keys() == info_ref.keys()
    np.testing.assert_array_equal(env.last_action, last_ref)
    np.testing.assert_allclose(env.last_projected, u_ref, rtol=1e-7, atol=1e-9)
    for key in ("shield/status", "shield/active", "shield/intervened", "shield/width"):
        assert shield_info[key] == info_ref[key], key
    c, c_ref = shield_info["shield/correction"], info_ref["shield/correction"]
    assert (math.isnan(c) and math.isnan(c_ref)) or c == pytest.approx(c_ref, rel=1e-6, abs=1e-9)
    for key in info_ref:
        if key.startswith("shield/margin/"):
            assert isinstance(shield_info[key], float)
            assert shield_info[key] == pytest.approx(info_ref[key], rel=1e-9, abs=1e-12), key
    return info


@pytest.mark.parametrize("task", TASKS)
def test_shield_step_matches_the_reference_step(make_task: MakeTask, task: str) -> None:
    env = Shield(make_task(task))
    base = env.unwrapped
    assert isinstance(base, ArmTaskEnv)
    rng = np.random.default_rng(3)
    env.reset(seed=3)
    k = env.action_space.shape[0]  # type: ignore[index]
    down = np.array([0.2, 0.0, -1.0]) if k == 3 else np.zeros(k)
    touched = 0
    for i in range(200):
        if i % 25 == 0:
            env.set_width(float(rng.uniform()))
        if i % 50 < 15:  # unshielded at full speed into the table, block or plate
            base.step(down)
            continue
        if i % 37 == 5:
            action = np.full(k, np.nan)
        elif i % 37 == 6:
            action = np.array([np.inf] + [0.0] * (k - 1))
        elif i % 50 < 30:
            action = down + rng.normal(0.0, 0.3, k)  # keep pushing: contact rows
        else:
            action = rng.uniform(-1.2, 1.2, k).astype(np.float32 if i % 2 else np.float64)
        info = _check_step(env, action)
        bound = env.envelope.bounds().contact_force
        if bound is not None and info["shield/margin/contact_force"] < bound:
            touched += 1
        if info.get("physics_error") or i % 50 == 49:
            env.reset(seed=int(rng.integers(1 << 30)))
    if task in ("push", "press"):
        assert touched > 0, "no shielded step in contact: contact rows untested"


def test_nonfinite_actions_stop_safely(make_task: MakeTask) -> None:
    env = Shield(make_task("reach"))
    env.reset(seed=0)
    for bad in (np.full(3, np.nan), np.array([np.inf, 0.0, 0.0]), np.array([0.0, -np.inf, 0.0])):
        info = _check_step(env, bad)
        assert info["shield/status"] == "nonfinite"
        assert info["shield/intervened"] and math.isnan(info["shield/correction"])
        np.testing.assert_array_equal(env.last_projected, 0.0)


def test_a_width_set_on_the_envelope_reaches_the_cached_bounds(make_task: MakeTask) -> None:
    """Bounds are cached between width changes; a change made on the envelope is still seen."""
    env = Shield(make_task("reach"))
    env.reset(seed=0)
    fast = np.array([1.0, 0.0, 0.0])
    env.set_width(0.0)
    _check_step(env, fast)
    slow = float(np.linalg.norm(env.last_projected))
    env.envelope.set_width(1.0)  # not through the shield
    info = _check_step(env, fast)
    assert info["shield/width"] == 1.0
    assert float(np.linalg.norm(env.last_projected)) > slow
    env.envelope.barrier_gain = 1.0  # gains are part of the cache key too
    _check_step(env, fast)


def test_list_and_2d_actions_are_accepted(make_task: MakeTask) -> None:
    env = Shield(make_task("reach"))
    env.reset(seed=0)
    _check_step(env, [0.5, 0.1, -0.2])
    _check_step(env, np.array([[0.5, 0.1, -0.2]]))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(4))


# --------------------------------------------------------------------------- other adapters


class _StateOnly:
    """An adapter with only ``state()``: the filter packs it the generic way.

    ``offset`` adds a constant joint velocity (``c != 0``): an action map MuJoCo views
    never have, so the generic path's affine terms are exercised too.
    """

    def __init__(self, kin: Any, offset: float = 0.0) -> None:
        self.kin, self.scale, self.dt, self.offset = kin, kin.scale, kin.dt, offset

    def state(self) -> ArmState:
        st = oracle.arm_state(self.kin)
        if self.offset and st.qd_map is not None and st.ee_map is not None:
            M, c = st.qd_map
            c = c + self.offset
            J = st.ee_map[0] @ np.linalg.pinv(M)  # the ee map's Jacobian back from E = J M
            st.qd_map, st.ee_map = (M, c), (st.ee_map[0], J @ c)
        return st


@pytest.mark.parametrize(
    ("task", "offset"), [("reach", 0.0), ("press", 0.0), ("reach_joint", 0.01)]
)
def test_generic_adapter_path_matches_the_reference(
    make_task: MakeTask, task: str, offset: float
) -> None:
    base = make_task(task)
    env = Shield(base, arm=_StateOnly(base.kinematics, offset))
    rng = np.random.default_rng(4)
    env.reset(seed=4)
    k = env.action_space.shape[0]  # type: ignore[index]
    for i in range(60):
        a = np.array([0.2, 0.0, -1.0]) if (i < 30 and k == 3) else rng.uniform(-1, 1, k)
        _check_step(env, a)


def test_an_arm_with_a_non_hinge_joint_is_refused(make_task: MakeTask) -> None:
    env = make_task("push")
    free = [j for j in range(env.model.njnt) if env.model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE]
    assert free, "the push scene's block has a free joint"
    kin = env.kinematics
    bad = dataclasses.replace(kin, joints=np.array([*kin.joints[:-1], free[0]]))
    with pytest.raises(TypeError, match="hinge and slide"):
        MujocoArmView(bad)


def test_a_joint_velocity_bound_of_the_wrong_size_raises(make_task: MakeTask) -> None:
    env = Shield(make_task("reach_joint"))
    env.reset(seed=0)
    state = oracle.arm_state(_kin(env))
    bounds = Bounds(joint_velocity=np.ones(3))
    with pytest.raises(ValueError):
        oracle.build(state, env.envelope, env.arm.scale, bounds)
    with pytest.raises(ValueError, match="joint_velocity"):
        shield_rows.build(state, env.envelope, env.arm.scale, bounds)


def test_undersized_buffers_raise_instead_of_writing_past_them(make_task: MakeTask) -> None:
    env = Shield(make_task("reach"))
    env.reset(seed=0)
    state = oracle.arm_state(_kin(env))
    packed = pack_state(state, 3)
    pb = pack_bounds(env.envelope.bounds(), env.envelope, state.dt)
    A, b, kind = np.zeros((5, 3)), np.zeros(5), np.zeros(5, dtype=np.int64)
    with pytest.raises(ValueError, match="max_rows"):
        shield_rows.build_into(
            env.arm.scale, packed.Fk, packed.F3, packed.F1, packed.dims, pb.F, pb.flags, A, b, kind
        )


# --------------------------------------------------------------------------- the check can fail


def test_the_comparison_catches_a_wrong_row(make_task: MakeTask) -> None:
    """Guard against a vacuous test: a perturbed bound or a dropped row must be noticed."""
    env = Shield(make_task("reach"))
    env.reset(seed=0)
    state = oracle.arm_state(_kin(env))
    bounds = env.envelope.bounds()
    ref = oracle.build(state, env.envelope, env.arm.scale, bounds)
    assert bounds.keepout_margin is not None
    wrong = dataclasses.replace(bounds, keepout_margin=bounds.keepout_margin + 1e-6)
    with pytest.raises(AssertionError):
        _assert_same_rows(ref, shield_rows.build(state, env.envelope, env.arm.scale, wrong))
    with pytest.raises(AssertionError):
        _assert_same_rows(ref, Rows(ref.A[:-1], ref.b[:-1], ref.kind[:-1]))
    state.site_radius = [r + 1e-6 for r in state.site_radius]  # a radius read wrong is noticed
    with pytest.raises(AssertionError):
        _assert_same_rows(ref, shield_rows.build(state, env.envelope, env.arm.scale, bounds))


def test_envelope_revision_counts_width_changes() -> None:
    env = Envelope({})
    before = env.revision
    env.set_width(0.3)
    env.set_width({})
    assert env.revision == before + 2


def test_build_into_calls_the_registry_in_order() -> None:
    """Adding a limit kind is one function and one registry entry: build_into follows the registry."""
    import ast
    import inspect

    src = inspect.getsource(shield_rows.build_into.py_func)
    called = [
        n.func.id
        for n in ast.walk(ast.parse(src))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id.endswith("_rows")
    ]
    assert called == [fn.__name__ for _, fn in shield_rows.ROW_FUNCTIONS]
