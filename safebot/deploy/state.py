"""What a controller reports and is told each cycle, whichever vendor protocol carried it.

The vendor clients (:mod:`safebot.deploy.franka.client` over libfranka's protocol,
:mod:`safebot.deploy.ur.client` over RTDE) turn the vendor's state into a
:class:`RobotState`, and the stubs' controller core (:mod:`safebot.deploy.stubs.controller`)
takes a :class:`Command`; the error flags are named as libfranka names them, plus
UR's protective stop and watchdog.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

import numpy as np
from numpy.typing import NDArray

#: Error flags: bits 0-36 follow libfranka's ``research_interface::robot::Error``
#: order (libfranka ``errors.h``); bits 48+ are stub extensions.
FRANKA_FLAGS: tuple[str, ...] = (
    "joint_position_limits_violation",
    "cartesian_position_limits_violation",
    "self_collision_avoidance_violation",
    "joint_velocity_violation",
    "cartesian_velocity_violation",
    "force_control_safety_violation",
    "joint_reflex",
    "cartesian_reflex",
    "max_goal_pose_deviation_violation",
    "max_path_pose_deviation_violation",
    "cartesian_velocity_profile_safety_violation",
    "joint_position_motion_generator_start_pose_invalid",
    "joint_motion_generator_position_limits_violation",
    "joint_motion_generator_velocity_limits_violation",
    "joint_motion_generator_velocity_discontinuity",
    "joint_motion_generator_acceleration_discontinuity",
    "cartesian_position_motion_generator_start_pose_invalid",
    "cartesian_motion_generator_elbow_limit_violation",
    "cartesian_motion_generator_velocity_limits_violation",
    "cartesian_motion_generator_velocity_discontinuity",
    "cartesian_motion_generator_acceleration_discontinuity",
    "cartesian_motion_generator_elbow_sign_inconsistent",
    "cartesian_motion_generator_start_elbow_invalid",
    "force_controller_desired_force_tolerance_violation",
    "start_elbow_sign_inconsistent",
    "communication_constraints_violation",
    "power_limit_violation",
    "cartesian_motion_generator_joint_position_limits_violation",
    "cartesian_motion_generator_joint_velocity_limits_violation",
    "cartesian_motion_generator_joint_velocity_discontinuity",
    "cartesian_motion_generator_joint_acceleration_discontinuity",
    "cartesian_position_motion_generator_invalid_frame",
    "controller_torque_discontinuity",
    "joint_p2p_insufficient_torque_for_planning",
    "tau_j_range_violation",
    "instability_detected",
    "joint_move_in_wrong_direction",
)
#: Stub extensions: a non-finite command (libfranka rejects it client-side, the
#: stub rejects it too), UR's protective stop, UR's RTDE watchdog.
EXTRA_FLAGS: dict[str, int] = {"invalid_command": 48, "protective_stop": 49, "watchdog_timeout": 50}

FLAG_BITS: dict[str, int] = {name: i for i, name in enumerate(FRANKA_FLAGS)} | EXTRA_FLAGS
FLAGS: tuple[str, ...] = tuple(FLAG_BITS)


class RobotMode(IntEnum):
    """libfranka's robot modes, plus UR's protective stop and a stopped program."""

    OTHER = 0
    IDLE = 1
    MOVE = 2
    GUIDING = 3
    REFLEX = 4
    USER_STOPPED = 5
    AUTOMATIC_ERROR_RECOVERY = 6
    PROTECTIVE_STOP = 7
    STOPPED = 8


class CommandFlag(IntFlag):
    NONE = 0
    #: Franka ``automaticErrorRecovery()`` / UR "unlock protective stop": clears
    #: latched errors and returns to Idle; the command's velocities are ignored.
    RECOVER = 1
    #: ``MotionFinished``: this is the last command of the motion; back to Idle.
    FINISH = 2


def flags_to_mask(names: list[str] | tuple[str, ...]) -> int:
    """Bitmask for error flag ``names`` (unknown names raise ``KeyError``)."""
    mask = 0
    for name in names:
        mask |= 1 << FLAG_BITS[name]
    return mask


def mask_to_flags(mask: int) -> list[str]:
    """Names of the flags set in ``mask`` in bit order; unknown bits as ``bit<N>``."""
    names = [name for name, bit in FLAG_BITS.items() if mask >> bit & 1]
    known = flags_to_mask(names)
    rest = mask & ~known
    names += [f"bit{i}" for i in range(64) if rest >> i & 1]
    return names


FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class RobotState:
    """What the controller reports in one cycle (``seq`` / ``t_ns``: its cycle counter and clock)."""

    seq: int
    t_ns: int
    t_echo_ns: int
    cmd_seq: int
    mode: RobotMode
    lost_consecutive: int
    lost_total: int
    overruns: int
    errors: int
    q: FloatArray
    dq: FloatArray
    dq_d: FloatArray
    ddq_d: FloatArray
    tau_ext: FloatArray
    wrench: FloatArray
    ee_pos: FloatArray

    @property
    def dof(self) -> int:
        return int(self.q.shape[0])

    @property
    def faults(self) -> list[str]:
        return mask_to_flags(self.errors)


@dataclass(frozen=True, slots=True)
class Command:
    """What the controller core is told in one cycle: joint velocity targets plus flags."""

    seq: int
    t_ns: int
    state_seq: int
    flags: CommandFlag
    acceleration: float
    qd: FloatArray

    @property
    def dof(self) -> int:
        return int(self.qd.shape[0])


def is_finite(x: FloatArray) -> bool:
    """All entries finite (no NaN / inf); cheap enough for every cycle."""
    return bool(np.isfinite(x).all())
