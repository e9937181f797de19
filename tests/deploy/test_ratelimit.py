"""libfranka limitRate semantics, and that the controller's own checks accept its output."""

from __future__ import annotations

import numpy as np
import pytest

from safebot.deploy.profiles import load_profile
from safebot.deploy.ratelimit import LIMIT_EPS, NonFiniteCommand, RateLimiter, limit_rate
from safebot.deploy.state import Command, CommandFlag, RobotMode
from safebot.deploy.stubs.controller import ControllerCore


def test_matches_libfranka_formula_on_one_step() -> None:
    # one joint, dt 1 ms, v 2, a 10, j 5000; from rest, command 1 rad/s
    out = limit_rate(
        np.array([1.0]),
        np.array([0.0]),
        np.array([0.0]),
        dt=1e-3,
        v_max=np.array([2.0]),
        a_max=np.array([10.0]),
        j_max=np.array([5000.0]),
    )
    # jerk clamps to 5000 -> accel 5 -> v = 0.005
    assert out[0] == pytest.approx(0.005)
    # near the velocity limit the acceleration bound (j/a)(v_max - v_last) takes over
    out = limit_rate(
        np.array([5.0]),
        np.array([1.999]),
        np.array([10.0]),
        dt=1e-3,
        v_max=np.array([2.0]),
        a_max=np.array([10.0]),
        j_max=np.array([5000.0]),
    )
    assert out[0] == pytest.approx(1.999 + (5000 / 10) * 0.001 * 1e-3)


def test_rejects_nan_and_inf() -> None:
    lim = RateLimiter(load_profile("franka_fr3"))
    z = np.zeros(7)
    for bad in (np.nan, np.inf, -np.inf):
        qd = z.copy()
        qd[3] = bad
        with pytest.raises(NonFiniteCommand):
            lim(qd, z, z)


@pytest.mark.parametrize("name", ["franka_fr3", "franka_panda"])
def test_limited_commands_always_pass_the_controller_checks(name: str) -> None:
    """Random step targets (up to 1.5x the limits), limited, never trip the stub's checks."""
    prof = load_profile(name)
    lim = RateLimiter(prof)
    core = ControllerCore(prof)
    core.q = np.zeros(7)  # keep the position check out of this test
    core.q_min[:] = -1e9
    core.q_max[:] = 1e9
    rng = np.random.default_rng(0)
    v = np.asarray(prof.limits.joint.velocity)
    a = np.asarray(prof.limits.joint.acceleration)
    j = np.asarray(prof.limits.joint.jerk)
    prev_qd, prev_acc = np.zeros(7), np.zeros(7)
    for k in range(6000):
        if k % 150 == 0:
            target = rng.uniform(-1.5, 1.5, 7) * v
        qd = lim(target, core.dq_d, core.ddq_d)
        acc = (qd - prev_qd) / prof.dt
        assert np.all(np.abs(qd) <= v - LIMIT_EPS + 1e-12)
        assert np.all(np.abs(acc) <= a - LIMIT_EPS + 1e-6)
        assert np.all(np.abs((acc - prev_acc) / prof.dt) <= j + 1e-3)
        prev_qd, prev_acc = qd, acc
        core.command(Command(k + 1, 0, k, CommandFlag.NONE, 0.0, qd), k * prof.dt)
        assert core.errors == 0, k
    assert core.mode is RobotMode.MOVE


def test_speedj_profile_limits_acceleration_only() -> None:
    prof = load_profile("ur5e")
    lim = RateLimiter(prof)
    assert lim.j_max is None and lim.a_max is not None
    out = lim(np.full(6, 10.0), np.zeros(6), np.zeros(6))
    np.testing.assert_allclose(out, (prof.speedj.acceleration - LIMIT_EPS) * prof.dt)  # type: ignore[union-attr]
