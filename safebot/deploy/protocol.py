"""The loopback UDP protocol between a deploy client and a controller stub.

Every datagram starts with the same 20-byte header; all fields are
little-endian. Arrays hold ``dof`` float64 values (7 for Franka, 6 for UR).

Header (20 bytes, ``<4sBBBBIq``):

=======  =====  ======  ==============================================
offset   size   type    field
=======  =====  ======  ==============================================
0        4      bytes   magic ``b"SBDP"``
4        1      u8      protocol version (:data:`VERSION`)
5        1      u8      message type (:class:`MsgType`)
6        1      u8      dof (0 for HELLO / BYE)
7        1      u8      reserved, 0
8        4      u32     sequence number of the sender (wraps at 2**32)
12       8      i64     sender's send time, ``time.perf_counter_ns()``
=======  =====  ======  ==============================================

STATE body (stub -> client; 32 bytes + ``8 * (5 dof + 9)``):
``t_echo_ns`` i64 (send time of the command last applied), ``cmd_seq`` u32
(its sequence number), ``mode`` u8 (:class:`RobotMode`), reserved u8,
``lost_consecutive`` u16, ``lost_total`` u32, ``overruns`` u32 (stub cycles it
ran late), ``errors`` u64 (bitmask over :data:`FLAGS`), then float64 arrays
``q``, ``dq``, ``dq_d`` (last commanded velocity), ``ddq_d`` (its finite
difference), ``tau_ext`` (each ``dof``), ``wrench`` (6: force N, moment Nm about
the end effector, base frame) and ``ee_pos`` (3, m).

COMMAND body (client -> stub; 16 bytes + ``8 dof``): ``state_seq`` u32 (the
state this command answers), ``flags`` u32 (:class:`CommandFlag`),
``acceleration`` f64 (speedJ acceleration in rad/s², 0 = profile default;
ignored by the joint-velocity interface), then ``qd`` (``dof`` float64, rad/s).

HELLO (client -> stub) registers the sender as the receiver of the state
stream; BYE ends the stream. Both are a header only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

import numpy as np
from numpy.typing import NDArray

MAGIC = b"SBDP"
VERSION = 1
SEQ_MOD = 2**32

HEADER = struct.Struct("<4sBBBBIq")
_STATE_FIXED = struct.Struct("<qIBBHIIQ")
_COMMAND_FIXED = struct.Struct("<IId")

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


class ProtocolError(ValueError):
    """A datagram is not a valid safebot deploy message."""


class MsgType(IntEnum):
    HELLO = 1
    STATE = 2
    COMMAND = 3
    BYE = 4


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


def seq_next(seq: int) -> int:
    return (seq + 1) % SEQ_MOD


def seq_newer(a: int, b: int) -> bool:
    """True if sequence number ``a`` is newer than ``b`` (serial arithmetic, RFC 1982)."""
    diff = (a - b) % SEQ_MOD
    return 0 < diff < SEQ_MOD // 2


FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class RobotState:
    """One STATE message: what the controller reports each cycle."""

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
    """One COMMAND message: joint velocity targets plus flags."""

    seq: int
    t_ns: int
    state_seq: int
    flags: CommandFlag
    acceleration: float
    qd: FloatArray

    @property
    def dof(self) -> int:
        return int(self.qd.shape[0])


@dataclass(frozen=True, slots=True)
class Control:
    """HELLO or BYE."""

    kind: MsgType
    seq: int
    t_ns: int


Message = RobotState | Command | Control


def _state_size(dof: int) -> int:
    return HEADER.size + _STATE_FIXED.size + 8 * (5 * dof + 9)


def _command_size(dof: int) -> int:
    return HEADER.size + _COMMAND_FIXED.size + 8 * dof


def pack_state(s: RobotState) -> bytes:
    dof = s.dof
    arrays = (s.q, s.dq, s.dq_d, s.ddq_d, s.tau_ext)
    for a in arrays:
        if a.shape != (dof,):
            raise ProtocolError(f"state arrays must all have {dof} entries, got {a.shape}")
    if s.wrench.shape != (6,) or s.ee_pos.shape != (3,):
        raise ProtocolError("state wrench must have 6 entries and ee_pos 3")
    head = HEADER.pack(MAGIC, VERSION, MsgType.STATE, dof, 0, s.seq % SEQ_MOD, s.t_ns)
    fixed = _STATE_FIXED.pack(
        s.t_echo_ns,
        s.cmd_seq % SEQ_MOD,
        int(s.mode),
        0,
        min(s.lost_consecutive, 0xFFFF),
        s.lost_total % SEQ_MOD,
        s.overruns % SEQ_MOD,
        s.errors,
    )
    body = np.concatenate((*arrays, s.wrench, s.ee_pos)).astype("<f8", copy=False)
    return head + fixed + body.tobytes()


def pack_command(c: Command) -> bytes:
    dof = c.dof
    if c.qd.ndim != 1 or not 1 <= dof <= 255:
        raise ProtocolError(f"command qd must be a 1-D array with 1..255 entries, got {c.qd.shape}")
    head = HEADER.pack(MAGIC, VERSION, MsgType.COMMAND, dof, 0, c.seq % SEQ_MOD, c.t_ns)
    fixed = _COMMAND_FIXED.pack(c.state_seq % SEQ_MOD, int(c.flags), float(c.acceleration))
    return head + fixed + c.qd.astype("<f8", copy=False).tobytes()


def pack_control(kind: MsgType, seq: int, t_ns: int) -> bytes:
    if kind not in (MsgType.HELLO, MsgType.BYE):
        raise ProtocolError(f"control messages are HELLO or BYE, got {kind!r}")
    return HEADER.pack(MAGIC, VERSION, kind, 0, 0, seq % SEQ_MOD, t_ns)


def unpack(data: bytes) -> Message:
    """Decode one datagram.

    Raises:
        ProtocolError: bad magic, version, type or length.
    """
    if len(data) < HEADER.size:
        raise ProtocolError(f"datagram of {len(data)} bytes is shorter than the header")
    magic, version, mtype, dof, _, seq, t_ns = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise ProtocolError(f"protocol version {version}, this side speaks {VERSION}")
    try:
        kind = MsgType(mtype)
    except ValueError:
        raise ProtocolError(f"unknown message type {mtype}") from None
    if kind in (MsgType.HELLO, MsgType.BYE):
        if len(data) != HEADER.size:
            raise ProtocolError(f"{kind.name} must be {HEADER.size} bytes, got {len(data)}")
        return Control(kind, seq, t_ns)
    if dof == 0:
        raise ProtocolError(f"{kind.name} with dof 0")
    if kind is MsgType.COMMAND:
        if len(data) != _command_size(dof):
            raise ProtocolError(
                f"COMMAND with dof {dof} must be {_command_size(dof)} bytes, got {len(data)}"
            )
        state_seq, flags, accel = _COMMAND_FIXED.unpack_from(data, HEADER.size)
        qd = np.frombuffer(data, "<f8", dof, HEADER.size + _COMMAND_FIXED.size).astype(np.float64)
        return Command(seq, t_ns, state_seq, CommandFlag(flags), accel, qd)
    if len(data) != _state_size(dof):
        raise ProtocolError(
            f"STATE with dof {dof} must be {_state_size(dof)} bytes, got {len(data)}"
        )
    echo, cmd_seq, mode, _, lost_c, lost_t, overruns, errors = _STATE_FIXED.unpack_from(
        data, HEADER.size
    )
    try:
        robot_mode = RobotMode(mode)
    except ValueError:
        raise ProtocolError(f"unknown robot mode {mode}") from None
    vals = np.frombuffer(data, "<f8", 5 * dof + 9, HEADER.size + _STATE_FIXED.size).astype(
        np.float64
    )
    return RobotState(
        seq=seq,
        t_ns=t_ns,
        t_echo_ns=echo,
        cmd_seq=cmd_seq,
        mode=robot_mode,
        lost_consecutive=lost_c,
        lost_total=lost_t,
        overruns=overruns,
        errors=errors,
        q=vals[0:dof],
        dq=vals[dof : 2 * dof],
        dq_d=vals[2 * dof : 3 * dof],
        ddq_d=vals[3 * dof : 4 * dof],
        tau_ext=vals[4 * dof : 5 * dof],
        wrench=vals[5 * dof : 5 * dof + 6],
        ee_pos=vals[5 * dof + 6 :],
    )


def is_finite(x: FloatArray) -> bool:
    """All entries finite (no NaN / inf); cheap enough for every cycle."""
    return bool(np.isfinite(x).all())
