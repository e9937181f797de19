"""libfranka's network protocol, version 10, as the wire sees it (what pylibfranka 0.21.3 speaks).

Sources (public): ``frankarobotics/libfranka-common``
``include/research_interface/robot/service_types.h`` (TCP commands, ``kVersion``,
``kCommandPort``) and ``rbk_types.h`` (the UDP ``RobotState`` and ``RobotCommand``),
and ``frankaemika/libfranka`` ``src/robot_impl.cpp`` / ``src/network.h`` for how the
client uses them. Everything is ``#pragma pack(1)``, little-endian (x86-64).

TCP, port :data:`COMMAND_PORT` on the robot: every message is a 12-byte header
``command u32, command_id u32, size u32`` (``size`` counts the header) and a payload.
A response carries the request's ``command`` and ``command_id``; its payload starts
with a ``u8`` status (0 = success).

UDP, 1 kHz: the robot sends :data:`STATE_DTYPE` (``RobotState``) to the client's
``udp_port`` (from ``Connect``); the client answers each state with
:data:`COMMAND_DTYPE` (``RobotCommand``) carrying that state's ``message_id``, sent
to the address the state came from. ``message_id`` counts milliseconds: libfranka
reports it as ``RobotState.time``.
"""

from __future__ import annotations

import struct
from enum import IntEnum

import numpy as np

from safebot.deploy.state import FRANKA_FLAGS

#: research_interface::robot::kVersion of the libfranka release pylibfranka 0.21.3 bundles
VERSION = 10
#: research_interface::robot::kCommandPort
COMMAND_PORT = 1337

HEADER = struct.Struct("<III")  # command, command_id, size (incl. header)


class Command(IntEnum):
    """``research_interface::robot::Command`` as pylibfranka 0.21.3 numbers it.

    Its version-10 header has no ``kLoadModelLibrary`` (libfranka-common removed the
    model library), so ``kGetRobotModel`` is 11: measured, pylibfranka sends
    command 11 with an empty payload right after ``Connect``.
    """

    CONNECT = 0
    MOVE = 1
    STOP_MOVE = 2
    SET_COLLISION_BEHAVIOR = 3
    SET_JOINT_IMPEDANCE = 4
    SET_CARTESIAN_IMPEDANCE = 5
    SET_GUIDING_MODE = 6
    SET_EE_TO_K = 7
    SET_NE_TO_EE = 8
    SET_LOAD = 9
    AUTOMATIC_ERROR_RECOVERY = 10
    #: the robot's URDF (status u8 + UTF-8 text); pylibfranka 0.21.3 asks for it while
    #: connecting and parses the joint velocity limits from it
    GET_ROBOT_MODEL = 11


class ConnectStatus(IntEnum):
    SUCCESS = 0
    INCOMPATIBLE_LIBRARY_VERSION = 1


class MoveStatus(IntEnum):
    """``Move::Status``: the first response is MOTION_STARTED, the last says how it ended."""

    SUCCESS = 0
    MOTION_STARTED = 1
    PREEMPTED = 2
    PREEMPTED_DUE_TO_ACTIVATED_SAFETY_FUNCTIONS = 3
    COMMAND_REJECTED_DUE_TO_ACTIVATED_SAFETY_FUNCTIONS = 4
    COMMAND_NOT_POSSIBLE_REJECTED = 5
    START_AT_SINGULAR_POSE_REJECTED = 6
    INVALID_ARGUMENT_REJECTED = 7
    REFLEX_ABORTED = 8
    EMERGENCY_ABORTED = 9
    INPUT_ERROR_ABORTED = 10
    ABORTED = 11


class MoveControllerMode(IntEnum):
    """``Move::ControllerMode`` (u32 in the Move request)."""

    JOINT_IMPEDANCE = 0
    CARTESIAN_IMPEDANCE = 1
    EXTERNAL_CONTROLLER = 2


class MoveMotionGeneratorMode(IntEnum):
    """``Move::MotionGeneratorMode`` (u32 in the Move request)."""

    JOINT_POSITION = 0
    JOINT_VELOCITY = 1
    CARTESIAN_POSITION = 2
    CARTESIAN_VELOCITY = 3
    NONE = 4


class MotionGeneratorMode(IntEnum):
    """``rbk_types.h`` MotionGeneratorMode (u8 in the state): note Idle = 0 here."""

    IDLE = 0
    JOINT_POSITION = 1
    JOINT_VELOCITY = 2
    CARTESIAN_POSITION = 3
    CARTESIAN_VELOCITY = 4
    NONE = 5


class ControllerMode(IntEnum):
    """``rbk_types.h`` ControllerMode (u8 in the state)."""

    JOINT_IMPEDANCE = 0
    CARTESIAN_IMPEDANCE = 1
    EXTERNAL_CONTROLLER = 2
    OTHER = 3


#: Move request payload: controller mode u32, motion generator mode u32, the maximum
#: path and goal pose deviations (translation, rotation, elbow; f64 each). pylibfranka
#: 0.21.3 sends 57 more bytes (all zero for velocity control: the asynchronous position
#: mode's maximum velocities and their flag); the stub reads the first 56 and ignores them.
MOVE_REQUEST = struct.Struct("<II6d")
#: Connect request payload: version u16, udp_port u16; response: status u8, version u16
CONNECT_REQUEST = struct.Struct("<HH")
CONNECT_RESPONSE = struct.Struct("<BH")
#: SetCollisionBehavior payload: 4 x 7 joint torque thresholds (lower/upper during
#: acceleration, lower/upper nominal), then 4 x 6 Cartesian force thresholds, f64
COLLISION_REQUEST = struct.Struct("<28d24d")

#: index of each error flag in RobotState.errors / reflex_reason (bool[41]):
#: research_interface::robot::Error order, which is also libfranka's Errors order
ERRORS: tuple[str, ...] = (
    *FRANKA_FLAGS,  # 0-36: the state module's names, in libfranka's order
    "cartesian_spline_motion_generator_violation",
    "joint_via_motion_generator_planning_joint_limit_violation",
    "base_acceleration_initialization_timeout",
    "base_acceleration_invalid_reading",
)
N_ERRORS = 41
ERROR_INDEX: dict[str, int] = {name: i for i, name in enumerate(ERRORS)}

_F = "<f4"
#: rbk_types.h ``RobotState`` (version 10: float arrays, accelerometer fields)
STATE_DTYPE = np.dtype(
    [
        ("message_id", "<u8"),
        ("O_T_EE", _F, 16),
        ("O_T_EE_d", _F, 16),
        ("F_T_EE", _F, 16),
        ("EE_T_K", _F, 16),
        ("F_T_NE", _F, 16),
        ("NE_T_EE", _F, 16),
        ("m_ee", _F),
        ("I_ee", _F, 9),
        ("F_x_Cee", _F, 3),
        ("m_load", _F),
        ("I_load", _F, 9),
        ("F_x_Cload", _F, 3),
        ("elbow", _F, 2),
        ("elbow_d", _F, 2),
        ("tau_J", _F, 7),
        ("tau_J_d", _F, 7),
        ("dtau_J", _F, 7),
        ("q", _F, 7),
        ("q_d", _F, 7),
        ("dq", _F, 7),
        ("dq_d", _F, 7),
        ("ddq_d", _F, 7),
        ("joint_contact", _F, 7),
        ("cartesian_contact", _F, 6),
        ("joint_collision", _F, 7),
        ("cartesian_collision", _F, 6),
        ("tau_ext_hat_filtered", _F, 7),
        ("O_F_ext_hat_K", _F, 6),
        ("K_F_ext_hat_K", _F, 6),
        ("O_dP_EE_d", _F, 6),
        ("O_ddP_O", _F, 3),
        ("elbow_c", _F, 2),
        ("delbow_c", _F, 2),
        ("ddelbow_c", _F, 2),
        ("O_T_EE_c", _F, 16),
        ("O_dP_EE_c", _F, 6),
        ("O_ddP_EE_c", _F, 6),
        ("theta", _F, 7),
        ("dtheta", _F, 7),
        ("accelerometer_top", _F, 18),
        ("accelerometer_bottom", _F, 18),
        ("motion_generator_mode", "u1"),
        ("controller_mode", "u1"),
        ("errors", "u1", N_ERRORS),
        ("reflex_reason", "u1", N_ERRORS),
        ("robot_mode", "u1"),
        ("control_command_success_rate", _F),
    ]
)

#: rbk_types.h ``RobotCommand``: message_id, MotionGeneratorCommand, ControllerCommand
COMMAND_DTYPE = np.dtype(
    [
        ("message_id", "<u8"),
        ("q_c", "<f8", 7),
        ("dq_c", "<f8", 7),
        ("O_T_EE_c", "<f8", 16),
        ("O_dP_EE_c", "<f8", 6),
        ("elbow_c", "<f8", 2),
        ("valid_elbow", "u1"),
        ("motion_generation_finished", "u1"),
        ("tau_J_d", "<f8", 7),
        ("torque_command_finished", "u1"),
    ]
)


class WireError(ValueError):
    """Bytes that are not a valid libfranka message."""


def pack_message(command: int, command_id: int, payload: bytes = b"") -> bytes:
    """One TCP message: header + payload."""
    return HEADER.pack(command, command_id, HEADER.size + len(payload)) + payload


def errors_array(names: list[str] | tuple[str, ...]) -> np.ndarray:
    """bool[41] (as u1) with the named flags set."""
    out = np.zeros(N_ERRORS, dtype=np.uint8)
    for name in names:
        out[ERROR_INDEX[name]] = 1
    return out


def error_names(flags: np.ndarray) -> list[str]:
    """Names of the set entries of a bool[41] array, in wire order."""
    return [ERRORS[i] for i in np.flatnonzero(flags)]
