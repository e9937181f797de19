"""Constraint rows A u <= b: stopping is feasible inside the envelope, and each row means what it says."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import mujoco
import numpy as np
import oracle as constraints
import pytest

from safebot import kernels
from safebot.envelope import Envelope, Limit
from safebot.envs import ArmTaskEnv
from safebot.shield import rows as numba_rows
from safebot.shield.packed import KIND_CODE, ROW_KINDS, ArmState, Rows
from safebot.spec import UncertaintySection, load_task

MakeTask = Callable[..., ArmTaskEnv]
TASKS = ("reach", "reach_joint", "push", "press")
GAIN, BACKOFF, DT = 5.0, 0.05, 0.04


class OracleView:
    """The arm's state computed the readable way (``tests/oracle.py``)."""

    def __init__(self, env: ArmTaskEnv) -> None:
        self.env = env

    def state(self) -> ArmState:
        return constraints.arm_state(self.env.kinematics)


@pytest.fixture(params=["oracle", "numba"])
def build(request: pytest.FixtureRequest) -> Callable[..., Rows]:
    """Every property of the stacked rows holds for the oracle and for the filter's numba rows."""
    return constraints.build if request.param == "oracle" else numba_rows.build


def _identity_state(pos: np.ndarray | None = None, **kw: object) -> ArmState:
    """A point end effector whose velocity is the action itself (u in m/s)."""
    eye = (np.eye(3), np.zeros(3))
    p = np.zeros(3) if pos is None else np.asarray(pos, dtype=np.float64)
    return ArmState(dt=DT, ee_pos=p, ee_map=eye, **kw)  # type: ignore[arg-type]


def _project(a: np.ndarray, rows: Rows) -> np.ndarray:
    u, _, status = kernels.project(a, rows.A, rows.b, np.ones(len(a)), np.zeros(len(a)))
    assert kernels.STATUS_NAMES[status] == "ok"
    assert np.all(rows.A @ u <= rows.b + 1e-9)
    return u


def _place(env: ArmTaskEnv, q: np.ndarray) -> None:
    env.data.qpos[env.physics.qpos_adr] = q
    env.data.qvel[:] = 0.0
    mujoco.mj_forward(env.model, env.data)


def _states_inside(env: ArmTaskEnv, envelope: Envelope, n: int, seed: int) -> list[ArmState]:
    """Random joint configurations inside the start envelope (rejection sampling)."""
    view = OracleView(env)
    start = envelope.bounds(0.0)
    rng = np.random.default_rng(seed)
    out: list[ArmState] = []
    for _ in range(20_000):
        margin = (start.joint_margin or 0.0) + 0.01
        _place(env, rng.uniform(env.q_low + margin, env.q_high - margin))
        state = view.state()
        if min(constraints.margins(state, start).values()) <= 0.0:
            continue  # outside the workspace, too near the obstacle or pressing too hard
        out.append(state)
        if len(out) == n:
            return out
    raise AssertionError(f"only {len(out)} states inside the envelope")


def _press(env: ArmTaskEnv, min_force: float) -> ArmState:
    """Move over the press goal, descend, and press until an arm contact exceeds ``min_force``."""
    view = OracleView(env)
    goal = env.goal
    for _ in range(200):
        p = env.physics.ee_pos()
        state = view.state()
        if state.contacts and max(f for f, _ in state.contacts) > min_force:
            return state
        if np.linalg.norm(p[:2] - goal[:2]) > 0.01 and p[2] > 0.1:
            v = 3.0 * np.array([goal[0] - p[0], goal[1] - p[1], 0.0])
        elif not state.contacts:
            v = np.array([0.0, 0.0, -0.3 if p[2] > 0.08 else -0.05])
        else:
            v = np.array([0.0, 0.0, -0.01])
        env.step(np.clip(v / env.action_scale, -1.0, 1.0))
    raise AssertionError(f"no contact above {min_force} N")


# --------------------------------------------------------------------------- stopping is feasible


@pytest.mark.parametrize("task", TASKS)
def test_stopping_is_feasible_inside_the_envelope(
    make_task: MakeTask, task: str, build: Callable[..., Rows]
) -> None:
    env = make_task(task)
    env.reset(seed=0)
    envelope = Envelope.from_spec(env.task.limits)
    scale = env.action_scale
    kinds_seen: set[int] = set()
    for state in _states_inside(env, envelope, 40, seed=1):
        for width in (0.0, 0.5, 1.0):
            rows = build(state, envelope, scale, envelope.bounds(width))
            assert rows.A.shape == (len(rows.b), len(scale))
            assert len(rows.b) <= 64  # the kernel's design size
            assert np.all(np.isfinite(rows.A)) and np.all(np.isfinite(rows.b))
            zero = np.zeros(len(scale))
            violated = rows.A @ zero - rows.b
            assert np.all(violated <= 1e-12), [ROW_KINDS[k] for k in rows.kind[violated > 1e-12]]
            kinds_seen.update(rows.kind.tolist())
            # and the kernel leaves a safe stop alone
            np.testing.assert_array_equal(_project(zero, rows), zero)
    expected = {"action_box", "joint_velocity", "ee_speed", "workspace"}
    if env.task.limits.keepout is not None:
        expected.add("keepout")
    assert expected <= {ROW_KINDS[k] for k in kinds_seen}


def test_stopping_is_feasible_while_pressing_below_the_bound(
    make_task: MakeTask, build: Callable[..., Rows]
) -> None:
    # the plate where the spec declares it: this test's descent is scripted in heights
    spec = load_task("press")
    env = make_task(spec.model_copy(update={"uncertainty": UncertaintySection()}))
    env.reset(seed=0)
    envelope = Envelope.from_spec(env.task.limits)
    state = _press(env, 2.0)
    assert max(f for f, _ in state.contacts) < envelope.bounds(0.0).contact_force  # type: ignore[operator]
    rows = build(state, envelope, env.action_scale)
    assert KIND_CODE["contact_force"] in rows.kind
    assert np.all(rows.b >= 0.0)


# --------------------------------------------------------------------------- ee speed


def _polytope_max_norm(A: np.ndarray, b: np.ndarray) -> float:
    """Largest ||v|| over {A v <= b} in 3-D: the maximum of a convex function sits at a vertex."""
    best = 0.0
    for rows in itertools.combinations(range(len(b)), 3):
        M = A[list(rows)]
        if abs(np.linalg.det(M)) < 1e-12:
            continue
        v = np.linalg.solve(M, b[list(rows)])
        if np.all(A @ v <= b + 1e-12):
            best = max(best, float(np.linalg.norm(v)))
    return best


@pytest.mark.parametrize("s", [0.1, 1.0, 7.0])
def test_ee_speed_rows_bound_the_norm(s: float) -> None:
    rows = constraints.ee_speed_rows(_identity_state(), np.array([s, s, s]))
    assert set(rows.kind.tolist()) == {KIND_CODE["ee_speed"]}
    vmax = _polytope_max_norm(rows.A, rows.b)
    assert vmax <= 1.24 * s
    assert vmax > 1.2 * s  # the bound is tight, not a much smaller box
    # per axis the full bound is available
    for j in range(3):
        e = np.zeros(3)
        e[j] = 10 * s
        assert _project(e, rows)[j] == pytest.approx(s)
    # the box alone would allow sqrt(3) s along a diagonal: the corner rows cut that
    diagonal = _project(np.full(3, 10 * s), rows)
    assert np.linalg.norm(diagonal) == pytest.approx(s, rel=1e-9)


@pytest.mark.parametrize("task", TASKS)
def test_ee_speed_rows_on_arm_states(
    make_task: MakeTask, task: str, build: Callable[..., Rows]
) -> None:
    """Project large random commands: the end effector's velocity never exceeds 1.24 s."""
    env = make_task(task)
    env.reset(seed=0)
    envelope = Envelope.from_spec(env.task.limits)
    rng = np.random.default_rng(2)
    for state in _states_inside(env, envelope, 5, seed=3):
        for width in (0.0, 1.0):
            bounds = envelope.bounds(width)
            s = float(np.min(bounds.ee_speed))  # type: ignore[arg-type]
            rows = build(state, envelope, env.action_scale, bounds)
            E, e = state.ee_map  # type: ignore[misc]
            for _ in range(20):
                a = rng.normal(size=len(env.action_scale))
                u = _project(100.0 * a / np.linalg.norm(a) * env.action_scale, rows)
                v = E @ u + e
                assert np.linalg.norm(v) <= 1.24 * s + 1e-9
                assert np.all(np.abs(v) <= bounds.ee_speed + 1e-9)  # type: ignore[operator]


# --------------------------------------------------------------------------- barriers


def test_workspace_barrier_shrinks_to_zero_at_the_boundary() -> None:
    low, high = np.array([0.0, 0.0, 0.0]), np.array([1.0, 1.0, 1.0])
    allowed = []
    for d in (0.2, 0.1, 0.01, 0.0, -0.01, -1.0):
        state = _identity_state([high[0] - d, 0.5, 0.5])
        rows = constraints.workspace_rows(state, low, high, GAIN, BACKOFF)
        assert rows.A.shape == (6, 3)
        plus_x = int(np.argmax(rows.A[:, 0]))  # the row on +x velocity
        np.testing.assert_array_equal(rows.A[plus_x], [1.0, 0.0, 0.0])
        allowed.append(rows.b[plus_x])
    # rate toward the wall = gain * distance: 1, 0.5, 0.05, then 0 at the wall
    np.testing.assert_allclose(allowed[:4], [GAIN * 0.2, GAIN * 0.1, GAIN * 0.01, 0.0])
    # outside: must back off, but never faster than the back-off speed
    assert allowed[4] == pytest.approx(-GAIN * 0.01)
    assert allowed[5] == pytest.approx(-BACKOFF)
    # at the wall a command into it is cut to zero, one along it passes
    rows = constraints.workspace_rows(_identity_state([1.0, 0.5, 0.5]), low, high, GAIN, BACKOFF)
    u = _project(np.array([0.3, 0.2, 0.0]), rows)
    np.testing.assert_allclose(u, [0.0, 0.2, 0.0], atol=1e-12)


def test_workspace_barrier_on_the_arm(make_task: MakeTask, build: Callable[..., Rows]) -> None:
    # an envelope whose +x wall passes through the end effector: no further +x motion
    env = make_task("reach")
    env.reset(seed=0)
    state = OracleView(env).state()
    p = state.ee_pos
    start = [*(p - 0.3), p[0], *(p[1:] + 0.3)]
    ws = Limit.make("workspace", start, [-5.0] * 3 + [5.0] * 3, [-1.0] * 3 + [1.0] * 3)
    envelope = Envelope({"workspace": ws, "ee_speed": Limit.make("ee_speed", [1.0] * 3, 1.0)})
    rows = build(state, envelope, env.action_scale)
    u = _project(np.array([1.0, 0.3, 0.0]), rows)
    E, e = state.ee_map  # type: ignore[misc]
    assert (E @ u + e)[0] <= 1e-9
    assert (E @ u + e)[1] > 0.2


def test_keepout_row_forbids_approaching_at_the_margin() -> None:
    centre, half, margin = np.zeros(3), np.array([0.1, 0.2, 0.3]), 0.05
    site = np.array([0.1 + margin, 0.0, 0.0])  # on the +x face's margin
    state = _identity_state(site, sites=[(site, (np.eye(3), np.zeros(3)))], boxes=[(centre, half)])
    rows = constraints.keepout_rows(state, margin, GAIN, BACKOFF)
    assert rows.kind.tolist() == [KIND_CODE["keepout"]]
    toward, away, along = np.array([-0.1, 0, 0]), np.array([0.1, 0, 0]), np.array([0, 0.1, 0.1])
    assert np.all(rows.A @ toward > rows.b)
    assert np.all(rows.A @ away <= rows.b)
    assert np.all(rows.A @ along <= rows.b)
    u = _project(np.array([-0.3, 0.1, 0.0]), rows)
    np.testing.assert_allclose(u, [0.0, 0.1, 0.0], atol=1e-12)
    # further out the approach rate is gain * (distance - margin)
    far = np.array([-0.5, 0.3, 0.0])  # nearest the -x face, 0.4 - margin beyond the margin
    state = _identity_state(far, sites=[(far, (np.eye(3), np.zeros(3)))], boxes=[(centre, half)])
    rows = constraints.keepout_rows(state, margin, GAIN, BACKOFF)
    np.testing.assert_allclose(rows.A, [[1.0, 0.0, 0.0]])
    assert rows.b[0] == pytest.approx(GAIN * (0.4 - margin))


def test_keepout_on_the_arm(make_task: MakeTask, build: Callable[..., Rows]) -> None:
    # margin = the current distance of the nearest site's sphere to the obstacle: no approach
    env = make_task("reach")
    env.reset(seed=0)
    view = OracleView(env)
    state = view.state()
    (centre, half), *_ = state.boxes
    ee = state.sites[0][0]
    np.testing.assert_allclose(ee, state.ee_pos)  # ee_site is listed first in reach.toml
    sep = np.abs(ee - centre) - half
    j = int(np.argmax(sep))
    margins = [
        float(np.max(np.abs(p - centre) - half)) - r
        for (p, _), r in zip(state.sites, state.site_radius, strict=True)
    ]
    margin = min(margins)
    envelope = Envelope(
        {
            "keepout": Limit.make("keepout", margin, margin, -1.0),
            "ee_speed": Limit.make("ee_speed", [1.0] * 3, 1.0),
        }
    )
    rows = build(state, envelope, env.action_scale)
    assert KIND_CODE["keepout"] in rows.kind
    toward = np.sign(centre - ee) * (np.arange(3) == j)
    u = _project(toward * 1.0, rows)
    closest = int(np.argmin(margins))
    pos, (S, s) = state.sites[closest]
    rel = pos - centre
    k = int(np.argmax(np.abs(rel) - half))
    approach = -np.sign(rel[k]) * (S @ u + s)[k]
    assert approach <= 1e-9


HAND_RADIUS = 0.046  # site_hand's size in assets/panda/panda.xml


def test_keepout_keeps_the_sphere_around_a_site_outside_the_box() -> None:
    """A site is the centre of a bulky link: its sphere, not its centre, must keep the margin."""
    centre, half, margin = np.zeros(3), np.array([0.1, 0.2, 0.3]), 0.02
    site = np.array([0.1 + margin + 0.03, 0.0, 0.0])  # centre 3 cm beyond the margin
    sites = [(site, (np.eye(3), np.zeros(3)))]
    state = _identity_state(site, sites=sites, boxes=[(centre, half)], site_radius=[HAND_RADIUS])
    rows = constraints.keepout_rows(state, margin, GAIN, BACKOFF)
    # the sphere is 1.6 cm inside the margin: back off, at most at the back-off speed
    assert rows.b[0] == pytest.approx(max(GAIN * (0.03 - HAND_RADIUS), -BACKOFF))
    assert rows.b[0] < 0.0
    u = _project(np.array([-0.3, 0.1, 0.0]), rows)  # toward the box, and along it
    assert u[0] >= BACKOFF - 1e-12  # cut to a retreat
    assert u[1] == pytest.approx(0.1)
    bounds = Envelope({"keepout": Limit.make("keepout", margin, margin, -1.0)}).bounds()
    assert constraints.margins(state, bounds)["keepout"] == pytest.approx(0.03 - HAND_RADIUS)
    # the same site as a point (no radii given: backward compatible) may still approach
    point = _identity_state(site, sites=sites, boxes=[(centre, half)])
    assert constraints.keepout_rows(point, margin, GAIN, BACKOFF).b[0] == pytest.approx(GAIN * 0.03)
    assert constraints.margins(point, bounds)["keepout"] == pytest.approx(0.03)
    bad = _identity_state(site, sites=sites, boxes=[(centre, half)], site_radius=[0.01, 0.02])
    with pytest.raises(ValueError, match="radii"):
        constraints.keepout_rows(bad, margin, GAIN, BACKOFF)


def test_keepout_on_the_arm_counts_the_hand_radius(
    make_task: MakeTask, build: Callable[..., Rows]
) -> None:
    """The hand's centre beyond the margin but its sphere (0.046 m) inside: approach is cut."""
    env = make_task("reach")
    env.reset(seed=0)
    for _ in range(100):  # lower the hand beside the obstacle (unshielded, slowly)
        if env.physics.ee_pos()[2] < 0.2:
            break
        env.step(np.clip(np.array([0.0, 0.0, -0.3]) / env.action_scale, -1.0, 1.0))
    for _ in range(5):
        env.step(np.zeros(3))
    state = OracleView(env).state()
    spec = env.task.limits.keepout
    assert spec is not None
    hand = spec.sites.index("site_hand")
    # the wrist, link7, the fingers and the hand's side spheres pass the box as closely as
    # site_hand here: keep site_hand alone next to the box so its own radius decides the margin
    keep = [
        i for i, name in enumerate(spec.sites) if name in ("ee_site", "site_hand", "site_link5")
    ]
    state.sites = [state.sites[i] for i in keep]
    state.site_radius = [state.site_radius[i] for i in keep]
    hand = keep.index(hand)
    assert state.site_radius[hand] == pytest.approx(HAND_RADIUS)
    (centre, half), *_ = state.boxes
    seps = [float(np.max(np.abs(p - centre) - half)) for p, _ in state.sites]
    assert int(np.argmin(seps)) == hand  # the hand's centre is the site nearest the box
    margin = seps[hand] - 0.02  # every centre is beyond the margin, the hand's by 2 cm
    envelope = Envelope(
        {
            "keepout": Limit.make("keepout", margin, margin, -1.0),
            "ee_speed": Limit.make("ee_speed", [1.0] * 3, 1.0),
        }
    )
    bounds = envelope.bounds()
    m = constraints.margins(state, bounds)["keepout"]
    assert m == pytest.approx(0.02 - HAND_RADIUS)  # negative: the hand's sphere is inside
    rows = build(state, envelope, env.action_scale, bounds)
    keepout = np.flatnonzero(rows.kind == KIND_CODE["keepout"])
    assert len(keepout) == len(state.sites)  # one box: one row per site, in order
    assert rows.b[keepout[hand]] < 0.0  # the hand must back off
    pos, (S, s) = state.sites[hand]
    rel = pos - centre
    j = int(np.argmax(np.abs(rel) - half))
    toward = np.zeros(3)
    toward[j] = -np.sign(rel[j])  # the hand's way into the box
    u = _project(toward, rows)
    assert -np.sign(rel[j]) * (S @ u + s)[j] < 0.0  # the hand moves away instead


def test_contact_row_forbids_pushing_further_at_the_bound() -> None:
    n = np.array([0.0, 0.0, -1.0])  # pushing down into a surface
    fmax = 20.0
    allowed = []
    for force in (0.0, 10.0, 20.0, 22.0, 1e6):
        state = _identity_state(contacts=[(force, (n.copy(), 0.0))])
        rows = constraints.contact_rows(state, fmax, BACKOFF)
        np.testing.assert_array_equal(rows.A, [n])
        allowed.append(float(rows.b[0]))
    v0 = constraints.CONTACT_APPROACH_SPEED
    np.testing.assert_allclose(allowed, [v0, 0.5 * v0, 0.0, -0.1 * v0, -BACKOFF])
    state = _identity_state(contacts=[(fmax, (n, 0.0))])
    rows = constraints.contact_rows(state, fmax, BACKOFF)
    u = _project(np.array([0.1, 0.0, -0.4]), rows)  # down and sideways
    np.testing.assert_allclose(u, [0.1, 0.0, 0.0], atol=1e-12)
    # only the strongest contacts get rows
    many = [(float(f), (n, 0.0)) for f in range(10)]
    rows = constraints.contact_rows(_identity_state(contacts=many), fmax, BACKOFF)
    assert len(rows.b) == constraints.MAX_CONTACT_ROWS
    np.testing.assert_allclose(rows.b, v0 * (1 - np.array([9.0, 8.0, 7.0, 6.0]) / fmax))


def test_contact_row_on_the_arm(make_task: MakeTask, build: Callable[..., Rows]) -> None:
    env = make_task("press")
    env.reset(seed=0)
    state = _press(env, 2.0)
    f = max(f for f, _ in state.contacts)
    assert f > 2.0
    # a bound at the measured force: pressing further down is cut to no approach
    envelope = Envelope(
        {
            "contact_force": Limit.make("contact_force", f, f),
            "ee_speed": Limit.make("ee_speed", [1.0] * 3, 1.0),
        }
    )
    rows = build(state, envelope, env.action_scale)
    contact = rows.kind == KIND_CODE["contact_force"]
    assert contact.any()
    u = _project(np.array([0.0, 0.0, -0.3]), rows)
    strongest = max(state.contacts, key=lambda c: c[0])
    N, nu = strongest[1]
    assert N @ u + nu <= 1e-9
    # lifting off is always allowed
    up = np.array([0.0, 0.0, 0.2])
    assert np.all(rows.A[contact] @ up <= rows.b[contact])


def test_joint_rows_merge_velocity_box_and_position_barrier() -> None:
    from safebot.envelope import Bounds

    q_low, q_high = -np.ones(3), np.ones(3)
    margin = 0.1
    q = np.array([0.0, 1.0 - margin, -1.0 + margin + 0.01])  # free, at the upper margin, near lower
    state = ArmState(
        dt=DT,
        ee_pos=np.zeros(3),
        ee_map=None,
        qd_map=(np.eye(3), np.zeros(3)),
        q=q,
        q_low=q_low,
        q_high=q_high,
    )
    bounds = Bounds(joint_velocity=np.array([0.5, 0.5, 0.5]), joint_margin=margin)
    rows = constraints.joint_rows(state, np.ones(3), bounds, GAIN, BACKOFF)
    u = _project(np.array([2.0, 2.0, -2.0]), rows)
    np.testing.assert_allclose(u, [0.5, 0.0, -GAIN * 0.01], atol=1e-12)
    kinds = {ROW_KINDS[k] for k in rows.kind}
    assert kinds == {"joint_velocity", "joint_position"}
    # joint 2 at its upper margin may still move down at full speed
    u = _project(np.array([0.0, -2.0, 0.0]), rows)
    assert u[1] == pytest.approx(-0.5)


def test_margins_are_signed_distances() -> None:
    envelope = Envelope(
        {
            "workspace": Limit(
                "workspace",
                np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]),
                np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]),
                np.array([-1.0] * 3 + [1.0] * 3),
            ),
            "keepout": Limit.make("keepout", 0.1, 0.1, -1.0),
        }
    )
    box = (np.array([3.0, 0.5, 0.5]), np.full(3, 0.5))
    inside = np.array([0.9, 0.5, 0.5])
    state = _identity_state(inside, sites=[(inside, (np.eye(3), np.zeros(3)))], boxes=[box])
    m = constraints.margins(state, envelope.bounds())
    assert m["workspace"] == pytest.approx(0.1)
    assert m["keepout"] == pytest.approx(2.5 - 0.9 - 0.1)
    outside = np.array([1.2, 0.5, 0.5])
    state = _identity_state(outside, sites=[(outside, (np.eye(3), np.zeros(3)))], boxes=[box])
    assert constraints.margins(state, envelope.bounds())["workspace"] == pytest.approx(-0.2)


def test_build_labels_rows_and_clamps_the_barrier_gain(build: Callable[..., Rows]) -> None:
    envelope = Envelope(
        {
            "ee_speed": Limit.make("ee_speed", [0.2] * 3, 1.0),
            "workspace": Limit(
                "workspace",
                np.array([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]),
                np.array([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]),
                np.array([-1.0] * 3 + [1.0] * 3),
            ),
        },
        barrier_gain=1000.0,
    )
    state = _identity_state([0.9, 0.0, 0.0])
    rows = build(state, envelope, np.ones(3))
    kinds = [ROW_KINDS[k] for k in rows.kind]
    assert kinds.count("action_box") == 6
    assert kinds.count("ee_speed") == 14
    assert kinds.count("workspace") == 6
    # gain * dt < 1: one control step can close at most 90 % of the distance to the wall
    ws = rows.b[rows.kind == KIND_CODE["workspace"]]
    assert ws.min() == pytest.approx(0.9 / DT * 0.1)
