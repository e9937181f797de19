"""The shield's fast path against the readable reference.

``constraints.build``/``margins`` and ``SafebotArmView.state()`` are the
reference; the hot path (``pack_state`` + ``build_into``, the numba
``SafebotArmView.pack``/``rows_into`` and the cached bounds in ``Shield.step``)
must describe the same feasible set: the same rows in the same order with the
same kinds, the same margins, the same projection and the same ``info``.
States cover every task in ``tasks/*.toml``: random policies at several widths,
random joint configurations (outside the joint margins, the workspace box and
inside keep-out margins) and pushes into the table, block and plate (contacts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
import pytest

from safebot import constraints, kernels
from safebot.constraints import PackedState, Rows
from safebot.envelope import Bounds, Envelope, Limit
from safebot.envs import ArmTaskEnv
from safebot.envs.tasks import ReachEnv
from safebot.shield import ArmView, SafebotArmView, Shield

MakeTask = Callable[..., ArmTaskEnv]
TASKS = tuple(sorted(p.stem for p in (Path(__file__).parents[1] / "tasks").glob("*.toml")))
WIDTHS = (0.0, 0.4, 1.0)
RTOL = 1e-9  # the fast path computes the pseudo-inverse and Jacobians its own way: rounding only


def test_every_shipped_task_is_covered() -> None:
    assert {"reach", "reach_joint", "push", "press"} <= set(TASKS)


# --------------------------------------------------------------------------- helpers


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
            q = rng.uniform(base.q_low - 0.05, base.q_high + 0.05)
            base.data.qpos[phys.qpos_adr] = q
            mujoco.mj_forward(base.model, base.data)
            continue
        if phase < 22:  # unshielded, at full speed: the shield would keep it off the surfaces
            _, _, terminated, truncated, _ = base.step(down)
        else:
            _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, k))
        if terminated or truncated:
            env.reset(seed=int(rng.integers(1 << 30)))


def _assert_same_rows(ref: Rows, fast: Rows) -> None:
    assert fast.A.shape == ref.A.shape, (fast.A.shape, ref.A.shape)
    np.testing.assert_array_equal(fast.kind, ref.kind)
    scale = 1.0 + np.abs(ref.A).max()
    np.testing.assert_allclose(fast.A, ref.A, rtol=RTOL, atol=RTOL * scale)
    np.testing.assert_allclose(fast.b, ref.b, rtol=RTOL, atol=RTOL * (1.0 + np.abs(ref.b).max()))


def _fast_rows(arm: SafebotArmView, env: Shield) -> tuple[Rows, dict[str, float]]:
    """Rows and margins through the shield's own hot path (``rows_into``)."""
    bounds = constraints.pack_bounds(env.envelope.bounds(), env.envelope, arm.dt)
    buf = constraints.StepBuffers(len(arm.scale))
    m, mask = arm.rows_into(np.zeros(len(arm.scale)), bounds, buf)
    constraints.check_rows(m, buf.state, bounds)
    rows = Rows(buf.A[:m].copy(), buf.b[:m].copy(), buf.kind[:m].copy())
    margins = {
        k: float(buf.margins[i]) for i, k in enumerate(constraints.MARGIN_KINDS) if mask >> i & 1
    }
    return rows, margins


def _view(env: Shield) -> SafebotArmView:
    assert isinstance(env.arm, SafebotArmView)
    return env.arm


# --------------------------------------------------------------------------- the row builder


@pytest.mark.parametrize("task", TASKS)
def test_packed_rows_and_margins_match_the_reference(make_task: MakeTask, task: str) -> None:
    """build_into on pack_state(state) == build(state): same rows, order, kinds; same margins."""
    env = Shield(make_task(task))
    arm = _view(env)
    rng = np.random.default_rng(0)
    for i in _states(env, rng, 90):
        env.set_width(WIDTHS[i % len(WIDTHS)])
        state = arm.state()
        bounds = env.envelope.bounds()
        if state.sites:  # the link sites' radii (model.site_size) are part of the comparison
            assert len(state.site_radius) == len(state.sites) and min(state.site_radius) > 0
        packed = constraints.pack_state(state, len(arm.scale))
        pb = constraints.pack_bounds(bounds, env.envelope, state.dt)
        _assert_same_rows(
            constraints.build(state, env.envelope, arm.scale, bounds),
            constraints.build_packed(packed, pb, arm.scale),
        )
        assert constraints.margins_packed(packed, pb) == constraints.margins(state, bounds)


@pytest.mark.parametrize("task", TASKS)
def test_fast_arm_state_matches_state(make_task: MakeTask, task: str) -> None:
    """SafebotArmView.pack (numba on MuJoCo's arrays) == pack_state(SafebotArmView.state())."""
    env = Shield(make_task(task))
    arm = _view(env)
    assert arm._fast
    rng = np.random.default_rng(1)
    contacts = 0
    for _ in _states(env, rng, 90):
        ref = constraints.pack_state(arm.state(), len(arm.scale))
        fast = PackedState(len(arm.scale))
        arm.pack(fast)
        np.testing.assert_array_equal(fast.dims[:8], ref.dims[:8])
        nc = int(ref.dims[constraints.D_NC])
        contacts += nc
        for name in ("ee_pos", "E", "e", "M", "c", "q", "q_low", "q_high"):
            np.testing.assert_allclose(
                getattr(fast, name), getattr(ref, name), rtol=RTOL, atol=1e-12
            )
        np.testing.assert_array_equal(fast.site_radius, ref.site_radius)  # model.site_size
        for name in ("site_pos", "S", "s", "box_c", "box_h"):
            np.testing.assert_allclose(
                getattr(fast, name), getattr(ref, name), rtol=RTOL, atol=1e-12
            )
        for name in ("con_f", "con_N", "con_nu"):
            x, y = getattr(fast, name)[:nc], getattr(ref, name)[:nc]
            np.testing.assert_allclose(
                x, y, rtol=RTOL, atol=1e-9 * (1.0 + np.abs(y).max(initial=0))
            )
    if task in ("push", "press"):
        assert contacts > 0, "the driven states never touched anything: contact rows untested"


@pytest.mark.parametrize("task", TASKS)
def test_fast_rows_project_like_the_reference(make_task: MakeTask, task: str) -> None:
    """The hot path's rows give the same projection as build(state()) on many actions."""
    env = Shield(make_task(task))
    arm = _view(env)
    rng = np.random.default_rng(2)
    w = 1.0 / arm.scale**2
    for i in _states(env, rng, 60):
        env.set_width(WIDTHS[i % len(WIDTHS)])
        state = arm.state()
        bounds = env.envelope.bounds()
        ref = constraints.build(state, env.envelope, arm.scale, bounds)
        fast, margins = _fast_rows(arm, env)
        _assert_same_rows(ref, fast)
        assert margins == constraints.margins(state, bounds)
        for a in rng.uniform(-1.3, 1.3, (8, len(arm.scale))):
            u_raw = np.clip(a, -1, 1) * arm.scale
            p_ref = kernels.solve(u_raw, ref.A, ref.b, w)
            p_fast = kernels.solve(u_raw, fast.A, fast.b, w)
            assert p_fast.status == p_ref.status
            np.testing.assert_allclose(p_fast.action, p_ref.action, rtol=1e-7, atol=1e-9)


# --------------------------------------------------------------------------- the shield step


def _reference_step(
    env: Shield, action: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """What Shield.step computed before the fast path, from the current state (nothing stepped).

    Returns ``(last_action, last_projected, info entries)``.
    """
    arm = env.arm
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if np.isfinite(a).all():
        u_raw = np.clip(a, -1.0, 1.0) * arm.scale
    else:
        u_raw = np.full(a.shape, np.nan)
    state = arm.state()
    bounds = env.envelope.bounds()
    rows = constraints.build(state, env.envelope, arm.scale, bounds)
    u, active, status = kernels.project(u_raw, rows.A, rows.b, env._w, env._safe)
    if status == kernels.STATUS_OK:
        diff = (u - u_raw) / arm.scale
        correction = float(np.sqrt(diff @ diff))
    else:
        correction = float("nan")
    info: dict[str, Any] = {
        "shield/intervened": status != kernels.STATUS_OK or correction > 1e-9,
        "shield/correction": correction,
        "shield/active": sorted(
            {constraints.ROW_KINDS[k] for k in rows.kind[active]} - {"action_box"}
        ),
        "shield/status": kernels.STATUS_NAMES[status],
        "shield/width": env.envelope.mean_width(),
    }
    for kind, margin in constraints.margins(state, bounds).items():
        info[f"shield/margin/{kind}"] = margin
    return np.nan_to_num(u_raw), u, info


def _check_step(env: Shield, action: np.ndarray) -> dict[str, Any]:
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
            assert shield_info[key] == info_ref[key], key  # same numbers, not just close
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


def test_nonfinite_actions_stop_safely_on_the_fast_path(make_task: MakeTask) -> None:
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
    _check_step(env, [0.5, 0.1, -0.2])  # type: ignore[arg-type]
    _check_step(env, np.array([[0.5, 0.1, -0.2]]))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(4))


# --------------------------------------------------------------------------- other adapters


class _StateOnly(ArmView):
    """An adapter with only ``state()``: the shield packs it the generic way."""

    def __init__(self, inner: SafebotArmView) -> None:
        self.inner, self.scale, self.dt = inner, inner.scale, inner.dt

    def state(self) -> constraints.ArmState:
        return self.inner.state()


@pytest.mark.parametrize("task", ["reach", "press"])
def test_generic_adapter_path_matches_the_reference(make_task: MakeTask, task: str) -> None:
    base = make_task(task)
    env = Shield(base, arm=_StateOnly(SafebotArmView(base)))
    rng = np.random.default_rng(4)
    env.reset(seed=4)
    for i in range(60):
        a = np.array([0.2, 0.0, -1.0]) if i < 30 else rng.uniform(-1, 1, 3)
        _check_step(env, a)


class _NullSpaceReach(ReachEnv):
    """An env with its own action map (``c != 0``): the adapter must not take the fast path."""

    def action_map(self) -> tuple[np.ndarray, np.ndarray]:
        M, c = super().action_map()
        return M, c + 0.01


def test_an_env_with_its_own_action_map_leaves_the_fast_path() -> None:
    base = _NullSpaceReach("reach")
    env = Shield(base)
    assert not _view(env)._fast
    env.reset(seed=5)
    rng = np.random.default_rng(5)
    for _ in range(40):
        _check_step(env, rng.uniform(-1, 1, 3))
    env.close()


def _random_state(rng: np.random.Generator, k: int, radii: bool) -> constraints.ArmState:
    """A hand-built state: random sites around two boxes, some inside, with or without radii."""
    boxes = [(rng.uniform(-0.2, 0.2, 3), rng.uniform(0.05, 0.2, 3)) for _ in range(2)]
    sites = [
        (rng.uniform(-0.5, 0.5, 3), (rng.normal(size=(3, k)), rng.normal(0.0, 0.05, 3)))
        for _ in range(4)
    ]
    return constraints.ArmState(
        dt=0.04,
        ee_pos=sites[0][0].copy(),
        ee_map=(rng.normal(size=(3, k)), np.zeros(3)),
        sites=sites,
        boxes=boxes,
        site_radius=list(rng.uniform(0.0, 0.1, len(sites))) if radii else [],
    )


def test_site_radii_pack_and_build_like_the_reference() -> None:
    """Hand-built states (ArmState made by callers, with and without site radii) through
    pack_state + build_into / margins_into == build / margins, at every keep-out margin."""
    rng = np.random.default_rng(6)
    k = 3
    for i in range(200):
        state = _random_state(rng, k, radii=i % 4 != 0)
        margin = float(rng.uniform(0.0, 0.1))
        envelope = Envelope(
            {
                "keepout": Limit.make("keepout", margin, margin, -1.0),
                "ee_speed": Limit.make("ee_speed", [1.0] * 3, 1.0),
            }
        )
        bounds = envelope.bounds()
        packed = constraints.pack_state(state, k)
        np.testing.assert_array_equal(packed.site_radius, state.radii())
        pb = constraints.pack_bounds(bounds, envelope, state.dt)
        ref = constraints.build(state, envelope, np.ones(k), bounds)
        _assert_same_rows(ref, constraints.build_packed(packed, pb, np.ones(k)))
        assert constraints.margins_packed(packed, pb) == constraints.margins(state, bounds)
    # a state packed after one with radii: no stale radius survives in the reused buffers
    out = constraints.pack_state(_random_state(rng, k, radii=True), k)
    state = _random_state(rng, k, radii=False)
    constraints.pack_state(state, k, out)
    np.testing.assert_array_equal(out.site_radius, 0.0)


def test_arm_index_refuses_free_joints(make_task: MakeTask) -> None:
    base = make_task("push")
    block = mujoco.mj_name2id(base.model, mujoco.mjtObj.mjOBJ_BODY, "block")
    free = np.array([base.model.body_jntadr[block]])
    idx = constraints.arm_index(base.model, k=3, joints=free, ee_site=0, sites=[], boxes=[])
    assert idx is None


# --------------------------------------------------------------------------- bad input


def test_a_joint_velocity_bound_of_the_wrong_size_raises_like_build(make_task: MakeTask) -> None:
    env = Shield(make_task("reach_joint"))
    env.reset(seed=0)
    arm = _view(env)
    state = arm.state()
    bounds = Bounds(joint_velocity=np.ones(3))
    envelope = env.envelope
    with pytest.raises(ValueError):
        constraints.build(state, envelope, arm.scale, bounds)
    packed = constraints.pack_state(state, len(arm.scale))
    with pytest.raises(ValueError, match="joint_velocity"):
        constraints.build_packed(
            packed, constraints.pack_bounds(bounds, envelope, state.dt), arm.scale
        )


def test_undersized_buffers_raise_instead_of_writing_past_them(make_task: MakeTask) -> None:
    env = Shield(make_task("reach"))
    env.reset(seed=0)
    arm = _view(env)
    bounds = constraints.pack_bounds(env.envelope.bounds(), env.envelope, arm.dt)
    arm.pack(PackedState(3))  # pack reserves what it needs
    empty = PackedState(3)  # capacity 0
    qpos, xanchor, xaxis, site_xpos, geom_xpos, geom_size, site_size = arm._mj
    with pytest.raises(ValueError, match="too small"):
        constraints.arm_state_into(
            arm._mode, 0.05, arm._idx, qpos, xanchor, xaxis, site_xpos, geom_xpos, geom_size,
            site_size, env.unwrapped.q_low, env.unwrapped.q_high, arm._con, 0, arm._work,
            empty.Fk, empty.F3, empty.F1, empty.dims,
        )  # fmt: skip
    fits = PackedState(3)
    arm.pack(fits)
    with pytest.raises(ValueError, match="site_size"):  # not the model's (nsite, 3) array
        constraints.arm_state_into(
            arm._mode, 0.05, arm._idx, qpos, xanchor, xaxis, site_xpos, geom_xpos, geom_size,
            site_size[:1], env.unwrapped.q_low, env.unwrapped.q_high, arm._con, 0, arm._work,
            fits.Fk, fits.F3, fits.F1, fits.dims,
        )  # fmt: skip
    packed = constraints.pack_state(arm.state(), 3)
    A, b, kind = np.zeros((5, 3)), np.zeros(5), np.zeros(5, dtype=np.int64)
    with pytest.raises(ValueError, match="max_rows"):
        constraints.build_into(
            arm.scale,
            packed.Fk,
            packed.F3,
            packed.F1,
            packed.dims,
            bounds.F,
            bounds.flags,
            A,
            b,
            kind,
        )


# --------------------------------------------------------------------------- the check can fail


def test_the_comparison_catches_a_wrong_row(make_task: MakeTask) -> None:
    """Guard against a vacuous test: a perturbed bound or a dropped row must be noticed."""
    env = Shield(make_task("reach"))
    env.reset(seed=0)
    arm = _view(env)
    state = arm.state()
    bounds = env.envelope.bounds()
    ref = constraints.build(state, env.envelope, arm.scale, bounds)
    pb = constraints.pack_bounds(bounds, env.envelope, state.dt)
    pb.par[constraints.P_KEEPOUT] += 1e-6  # a slightly different keep-out margin
    wrong = constraints.build_packed(constraints.pack_state(state, 3), pb, arm.scale)
    with pytest.raises(AssertionError):
        _assert_same_rows(ref, wrong)
    with pytest.raises(AssertionError):
        _assert_same_rows(ref, Rows(ref.A[:-1], ref.b[:-1], ref.kind[:-1]))
    # a site radius the fast path ignored (or got wrong) would be noticed too
    packed = constraints.pack_state(state, 3)
    packed.site_radius[:] += 1e-6
    pb = constraints.pack_bounds(bounds, env.envelope, state.dt)
    with pytest.raises(AssertionError):
        _assert_same_rows(ref, constraints.build_packed(packed, pb, arm.scale))
    assert constraints.margins_packed(packed, pb) != constraints.margins(state, bounds)


def test_envelope_revision_counts_width_changes() -> None:
    env = Envelope({})
    before = env._revision
    env.set_width(0.3)
    env.set_width({})
    assert env._revision == before + 2
