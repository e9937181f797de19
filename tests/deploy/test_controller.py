"""The controller core's checks, faults and modes, driven in simulated time (no I/O)."""

from __future__ import annotations

import numpy as np
import pytest

from safebot.deploy.profiles import ControllerProfile, load_profile
from safebot.deploy.state import Command, CommandFlag, RobotMode, mask_to_flags
from safebot.deploy.stubs.controller import ControllerCore, PlantState

ACC_DISC = "joint_motion_generator_acceleration_discontinuity"
VEL_DISC = "joint_motion_generator_velocity_discontinuity"


class Driver:
    """Feeds commands to a core one cycle at a time."""

    def __init__(self, name: str) -> None:
        self.profile: ControllerProfile = load_profile(name)
        self.core = ControllerCore(self.profile)
        self.k = 0
        self.seq = 0

    def send(
        self,
        qd: list[float] | np.ndarray | None,
        flags: CommandFlag = CommandFlag.NONE,
        accel: float = 0.0,
    ) -> None:
        cmd = None
        if qd is not None:
            self.seq += 1
            cmd = Command(self.seq, 0, self.k - 1, flags, accel, np.asarray(qd, dtype=np.float64))
        self.core.command(cmd, self.k * self.profile.dt, last_state_seq=self.k - 1)
        self.k += 1

    @property
    def flags(self) -> list[str]:
        return mask_to_flags(self.core.errors)


def ramp(d: Driver, joint: int, accel: float, cycles: int) -> None:
    """Constant acceleration on one joint, entered with a jerk-limited ramp."""
    j = d.profile.limits.joint.jerk[joint]  # type: ignore[index]
    a = 0.0
    for _ in range(cycles):
        a = min(accel, a + 0.9 * j * d.profile.dt)
        qd = d.core.dq_d.copy()
        qd[joint] += a * d.profile.dt
        d.send(qd)


def test_velocity_jump_beyond_acceleration_limit_is_a_reflex() -> None:
    d = Driver("franka_fr3")
    jump = np.zeros(7)
    jump[0] = 0.5  # 0.5 rad/s in 1 ms: 500 rad/s² >> 10
    d.send(jump)
    assert ACC_DISC in d.flags and VEL_DISC in d.flags
    assert d.core.mode is RobotMode.REFLEX
    np.testing.assert_array_equal(d.core.dq_d, 0.0)  # the command was not executed


def test_jerk_only_violation_raises_acceleration_discontinuity_alone() -> None:
    d = Driver("franka_fr3")
    qd = np.zeros(7)
    qd[2] = 6.0 * d.profile.dt  # accel 6 <= 10, but jerk 6000 > 5000
    d.send(qd)
    assert d.flags == [ACC_DISC]


def test_smooth_ramp_is_accepted_and_velocity_limit_enforced() -> None:
    d = Driver("franka_fr3")
    ramp(d, 0, 9.0, 100)
    assert d.core.errors == 0 and d.core.mode is RobotMode.MOVE
    qd = d.core.dq_d.copy()
    qd[4] = 5.3  # beyond 5.26 (and a jump)
    d.send(qd)
    assert "joint_motion_generator_velocity_limits_violation" in d.flags


def test_ignored_in_reflex_until_automatic_error_recovery() -> None:
    d = Driver("franka_panda")
    d.send([1.0] + [0.0] * 6)
    assert d.core.mode is RobotMode.REFLEX
    d.send([0.0] * 7)  # ignored: still Reflex
    assert d.core.mode is RobotMode.REFLEX and d.core.errors
    d.send([0.0] * 7, CommandFlag.RECOVER)
    assert d.core.mode is RobotMode.IDLE and d.core.errors == 0
    ramp(d, 1, 5.0, 20)
    assert d.core.mode is RobotMode.MOVE and d.core.errors == 0


def test_lost_cycles_beyond_tolerance() -> None:
    d = Driver("franka_fr3")
    ramp(d, 0, 1.0, 5)
    held = d.core.dq_d.copy()
    for _ in range(19):
        d.send(None)
    assert d.core.errors == 0 and d.core.lost_consecutive == 19
    np.testing.assert_array_equal(d.core.dq_d, held)  # extrapolated: velocity held
    d.send(None)
    assert d.flags == ["communication_constraints_violation"]
    assert d.core.mode is RobotMode.REFLEX


def test_lost_cycles_do_not_count_when_idle() -> None:
    d = Driver("franka_fr3")
    for _ in range(50):
        d.send(None)
    assert d.core.errors == 0 and d.core.lost_total == 0


def test_stale_command_counts_as_lost() -> None:
    d = Driver("franka_fr3")
    ramp(d, 0, 10.0, 30)  # accelerating at the limit
    qd = d.core.dq_d + d.core.ddq_d * d.profile.dt
    stale = Command(d.seq + 1, 0, d.k - 3, CommandFlag.NONE, 0.0, qd)  # answers an old state
    d.core.command(stale, d.k * d.profile.dt, last_state_seq=d.k - 1)
    assert d.core.commands_stale == 1 and d.core.lost_consecutive == 1 and d.core.errors == 0


def test_nan_command_is_rejected() -> None:
    d = Driver("franka_fr3")
    d.send([np.nan] + [0.0] * 6)
    assert d.flags == ["invalid_command"] and d.core.mode is RobotMode.REFLEX
    assert np.isfinite(d.core.dq_d).all()


def test_finish_at_speed_is_a_discontinuity_finish_at_rest_is_idle() -> None:
    d = Driver("franka_fr3")
    ramp(d, 0, 5.0, 100)
    d.send(d.core.dq_d.copy(), CommandFlag.FINISH)
    assert VEL_DISC in d.flags
    d = Driver("franka_fr3")
    ramp(d, 0, 1.0, 3)
    d.send(np.zeros(7), CommandFlag.FINISH)
    assert d.core.errors == 0 and d.core.mode is RobotMode.IDLE


def test_command_into_a_joint_limit() -> None:
    d = Driver("franka_fr3")
    d.core.q = np.asarray(d.profile.limits.joint.position_max) - 1e-6
    qd = np.zeros(7)
    qd[3] = 4e-3  # within acceleration and jerk limits, 4e-6 rad per cycle
    d.send(qd)
    assert d.flags == ["joint_motion_generator_position_limits_violation"]


def _plant_state(n: int, *, tau: float = 0.0, force: float = 0.0, dq: float = 0.0) -> PlantState:
    wrench = np.zeros(6)
    wrench[2] = force
    tau_ext = np.zeros(n)
    tau_ext[1] = tau
    q = np.asarray(load_profile("franka_fr3").plant.home)
    return PlantState(q=q, dq=np.full(n, dq), tau_ext=tau_ext, wrench=wrench, ee_pos=np.zeros(3))


@pytest.mark.parametrize(
    ("kw", "flag"),
    [
        ({"tau": 25.0}, "joint_reflex"),
        ({"force": -21.0}, "cartesian_reflex"),
        ({"dq": 2.9}, "joint_velocity_violation"),
    ],
)
def test_measured_thresholds(kw: dict[str, float], flag: str) -> None:
    d = Driver("franka_fr3")
    ramp(d, 0, 1.0, 3)
    d.core.observe(_plant_state(7))  # below every threshold
    assert d.core.errors == 0
    d.core.observe(_plant_state(7, **kw))
    assert flag in d.flags and d.core.mode is RobotMode.REFLEX


# ---------------------------------------------------------------- UR / speedJ


def test_speedj_watchdog_in_simulated_time() -> None:
    d = Driver("ur5e")
    d.send([0.5, -0.25, 0, 0, 0, 0], accel=2.0)
    for _ in range(50):  # 50 silent cycles of 2 ms = 0.1 s: speedJ keeps ramping
        d.send(None)
    assert d.core.errors == 0 and d.core.dq_d[0] > 0
    d.send(None)  # 0.102 s since the last command > watchdog 0.1 s
    assert d.flags == ["watchdog_timeout"] and d.core.mode is RobotMode.STOPPED
    np.testing.assert_array_equal(d.core.dq_d, 0.0)


def test_speedj_ramp_shape() -> None:
    d = Driver("ur5e")
    for _ in range(10):
        d.send([0.5, -0.25, 0, 0, 0, 0], accel=2.0)
    # leading axis at 2 rad/s² for 10 cycles of 2 ms; the other scaled to arrive together
    assert d.core.dq_d[0] == pytest.approx(2.0 * 10 * 0.002)
    assert d.core.dq_d[1] == pytest.approx(-0.5 * d.core.dq_d[0])
    for _ in range(200):
        d.send([0.5, -0.25, 0, 0, 0, 0], accel=2.0)
    np.testing.assert_allclose(d.core.dq_d[:2], [0.5, -0.25])


def test_protective_stop_needs_acknowledgement() -> None:
    d = Driver("ur5e")
    d.send([3.3, 0, 0, 0, 0, 0])  # above 180°/s
    assert set(d.flags) == {"joint_velocity_violation", "protective_stop"}
    assert d.core.mode is RobotMode.PROTECTIVE_STOP
    for _ in range(5):
        d.send([0.1, 0, 0, 0, 0, 0])
    assert d.core.mode is RobotMode.PROTECTIVE_STOP and not d.core.dq_d.any()
    d.send([0.0] * 6, CommandFlag.RECOVER)
    assert d.core.mode is RobotMode.IDLE and d.core.errors == 0
    d.send([0.1, 0, 0, 0, 0, 0])
    assert d.core.mode is RobotMode.MOVE and d.core.dq_d[0] > 0
