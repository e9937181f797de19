"""The Franka client's stop ramp: when the command that ends the motion may go out."""

from __future__ import annotations

import numpy as np
import pytest

from safebot.deploy.franka.client import finish_is_safe
from safebot.deploy.profiles import load_profile
from safebot.deploy.ratelimit import RateLimiter
from safebot.deploy.state import Command, CommandFlag, RobotMode
from safebot.deploy.stubs.controller import ControllerCore


def _core_at(name: str, dq_d: np.ndarray, ddq_d: np.ndarray) -> ControllerCore:
    core = ControllerCore(load_profile(name))
    core.q = np.zeros(7)  # keep the position check out of this test
    core.q_min[:] = -1e9
    core.q_max[:] = 1e9
    core.mode = RobotMode.MOVE
    core.dq_d, core.ddq_d = dq_d.copy(), ddq_d.copy()
    return core


def _finish(core: ControllerCore, qd: np.ndarray, *, lose_first: bool) -> int:
    """Send ``qd`` with FINISH as libfranka's ``finishMotion`` does: when the first send
    misses its cycle, the controller holds, and the same command arrives a cycle later."""
    if lose_first:
        core.command(None, 0.0)
    core.command(Command(1, 0, 1, CommandFlag.FINISH, 0.0, qd), 0.001)
    return core.errors


def _ramps(name: str, n: int = 40) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stop-ramp start states: velocities up to the limits, accelerations up to a_max."""
    prof = load_profile(name)
    v = np.asarray(prof.limits.joint.velocity)
    a = np.asarray(prof.limits.joint.acceleration)
    rng = np.random.default_rng(1)
    return [(rng.uniform(-0.9, 0.9, 7) * v, rng.uniform(-1, 1, 7) * a) for _ in range(n)]


@pytest.mark.parametrize("name", ["franka_fr3", "franka_panda"])
def test_the_finishing_command_is_valid_even_when_its_first_send_is_lost(name: str) -> None:
    lim = RateLimiter(load_profile(name))
    zero = np.zeros(7)
    for dq, ddq in _ramps(name):
        core = _core_at(name, dq, ddq)
        for _ in range(5000):
            if finish_is_safe(lim, core.dq_d, core.ddq_d):
                break
            core.command(
                Command(1, 0, 1, CommandFlag.NONE, 0.0, lim(zero, core.dq_d, core.ddq_d)), 0
            )
            assert core.errors == 0
        else:
            pytest.fail(f"the ramp from {dq}, {ddq} never reached a state it may finish from")
        for lose_first in (False, True):
            held = _core_at(name, core.dq_d, core.ddq_d)
            assert _finish(held, zero, lose_first=lose_first) == 0, (dq, ddq, lose_first)
            assert held.mode is RobotMode.IDLE


def test_finishing_on_a_small_velocity_alone_trips_the_jerk_check_after_a_lost_cycle() -> None:
    """The rule this replaced (finish once the limited command is below 1 mrad/s): its
    last step decelerates hard, and resent after a hold that is twice the jerk limit."""
    name = "franka_fr3"
    lim = RateLimiter(load_profile(name))
    zero = np.zeros(7)
    tripped = 0
    for dq, ddq in _ramps(name, 20):
        core = _core_at(name, dq, ddq)
        while True:
            qd = lim(zero, core.dq_d, core.ddq_d)
            if float(np.max(np.abs(qd))) < 1e-3:
                break
            core.command(Command(1, 0, 1, CommandFlag.NONE, 0.0, qd), 0)
        on_time = _core_at(name, core.dq_d, core.ddq_d)
        assert _finish(on_time, qd, lose_first=False) == 0
        tripped += _finish(_core_at(name, core.dq_d, core.ddq_d), qd, lose_first=True) != 0
    assert tripped > 0
