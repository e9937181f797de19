"""The UDP byte protocol: round trips, documented sizes, rejection of bad datagrams."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from safebot.deploy import protocol as P


def _state(dof: int, seed: int = 0) -> P.RobotState:
    rng = np.random.default_rng(seed)
    return P.RobotState(
        seq=123456,
        t_ns=987654321012,
        t_echo_ns=-5,
        cmd_seq=2**32 - 1,
        mode=P.RobotMode.REFLEX,
        lost_consecutive=3,
        lost_total=17,
        overruns=2,
        errors=P.flags_to_mask(["joint_reflex", "protective_stop"]),
        q=rng.normal(size=dof),
        dq=rng.normal(size=dof),
        dq_d=rng.normal(size=dof),
        ddq_d=rng.normal(size=dof),
        tau_ext=rng.normal(size=dof),
        wrench=rng.normal(size=6),
        ee_pos=rng.normal(size=3),
    )


@pytest.mark.parametrize("dof", [6, 7])
def test_state_round_trip(dof: int) -> None:
    s = _state(dof)
    data = P.pack_state(s)
    assert len(data) == 20 + 32 + 8 * (5 * dof + 9)  # the documented size
    back = P.unpack(data)
    assert isinstance(back, P.RobotState)
    for name in (
        "seq",
        "t_ns",
        "t_echo_ns",
        "cmd_seq",
        "mode",
        "lost_consecutive",
        "lost_total",
        "overruns",
        "errors",
    ):
        assert getattr(back, name) == getattr(s, name), name
    for name in ("q", "dq", "dq_d", "ddq_d", "tau_ext", "wrench", "ee_pos"):
        np.testing.assert_array_equal(getattr(back, name), getattr(s, name))
    assert back.faults == ["joint_reflex", "protective_stop"]


def test_command_round_trip_keeps_nan_and_flags() -> None:
    qd = np.array([0.1, -0.2, np.nan, 0.0, 1e-9, 2.5, -3.0])
    c = P.Command(
        seq=7,
        t_ns=11,
        state_seq=6,
        flags=P.CommandFlag.RECOVER | P.CommandFlag.FINISH,
        acceleration=1.4,
        qd=qd,
    )
    data = P.pack_command(c)
    assert len(data) == 20 + 16 + 8 * 7
    back = P.unpack(data)
    assert isinstance(back, P.Command)
    assert (back.seq, back.t_ns, back.state_seq, back.acceleration) == (7, 11, 6, 1.4)
    assert back.flags == P.CommandFlag.RECOVER | P.CommandFlag.FINISH
    np.testing.assert_array_equal(
        back.qd, qd
    )  # NaN survives the wire: rejecting it is the stub's job


def test_header_layout_is_little_endian() -> None:
    data = P.pack_control(P.MsgType.HELLO, 258, 3)
    assert data[:4] == b"SBDP"
    assert data[4] == P.VERSION and data[5] == P.MsgType.HELLO
    assert struct.unpack_from("<I", data, 8)[0] == 258 and data[8] == 2
    assert P.unpack(data) == P.Control(P.MsgType.HELLO, 258, 3)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: b"XXXX" + d[4:], "bad magic"),
        (lambda d: d[:4] + bytes([99]) + d[5:], "version"),
        (lambda d: d[:5] + bytes([42]) + d[6:], "unknown message type"),
        (lambda d: d[:-1], "must be"),
        (lambda d: d + b"\0", "must be"),
        (lambda d: d[:10], "shorter than the header"),
        (lambda d: d[:6] + bytes([0]) + d[7:], "dof 0"),
    ],
)
def test_bad_datagrams_rejected(mutate, match: str) -> None:  # type: ignore[no-untyped-def]
    data = P.pack_state(_state(7))
    with pytest.raises(P.ProtocolError, match=match):
        P.unpack(mutate(data))


def test_unknown_mode_rejected() -> None:
    data = bytearray(P.pack_state(_state(7)))
    data[20 + 12] = 200  # mode byte of the STATE body
    with pytest.raises(P.ProtocolError, match="robot mode"):
        P.unpack(bytes(data))


def test_sequence_numbers_wrap() -> None:
    assert P.seq_next(2**32 - 1) == 0
    assert P.seq_newer(0, 2**32 - 1)
    assert P.seq_newer(5, 3) and not P.seq_newer(3, 5) and not P.seq_newer(4, 4)
    assert not P.seq_newer(2**32 - 1, 0)


def test_flag_bits_follow_libfranka_and_round_trip() -> None:
    assert P.FLAG_BITS["joint_position_limits_violation"] == 0
    assert P.FLAG_BITS["joint_motion_generator_velocity_discontinuity"] == 14
    assert P.FLAG_BITS["joint_motion_generator_acceleration_discontinuity"] == 15
    assert P.FLAG_BITS["communication_constraints_violation"] == 25
    assert len(P.FRANKA_FLAGS) == 37 == len(set(P.FRANKA_FLAGS))
    names = ["cartesian_reflex", "communication_constraints_violation", "watchdog_timeout"]
    assert P.mask_to_flags(P.flags_to_mask(names)) == names
    assert P.mask_to_flags(1 << 60) == ["bit60"]
