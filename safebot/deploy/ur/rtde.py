"""RTDE wire format (Universal Robots' Real-Time Data Exchange, TCP port 30004).

The facts here follow UR's public "Real-Time Data Exchange (RTDE) Guide"
(universal-robots.com, support article 22229): every package is a big-endian
header ``uint16 size`` (header included) + ``uint8 type``, then a payload:

======  ====  =================================  ==========================================
type    char  request payload                    reply payload
======  ====  =================================  ==========================================
86      V     uint16 protocol version            uint8 accepted
118     v     (none)                             uint32 major, minor, bugfix, build
79      O     double frequency, names (csv)      uint8 recipe id, types (csv)
73      I     names (csv)                        uint8 recipe id, types (csv)
83      S     (none)                             uint8 accepted
80      P     (none)                             uint8 accepted
85      U     uint8 recipe id, values (inputs)   uint8 recipe id, values (outputs)
77      M     (controller -> client) uint8 len, message, uint8 len, source, uint8 level
======  ====  =================================  ==========================================

A name the controller does not know is typed ``NOT_FOUND``; an input another
client already writes is ``IN_USE``, and the recipe id is 0 then.

This module holds only data and packing helpers: the stub
(:mod:`safebot.deploy.ur.stub`) and the client's pre-flight probe
(:mod:`safebot.deploy.ur.client`) share it.
"""

from __future__ import annotations

import socket
import struct
import time

PROTOCOL_VERSION = 2
RTDE_PORT = 30004
DASHBOARD_PORT = 29999
SCRIPT_PORT = 30003

REQUEST_PROTOCOL_VERSION = 86
GET_URCONTROL_VERSION = 118
TEXT_MESSAGE = 77
DATA_PACKAGE = 85
SETUP_OUTPUTS = 79
SETUP_INPUTS = 73
START = 83
PAUSE = 80

HEADER = struct.Struct(">HB")

#: struct codes of the RTDE types (big-endian; vectors are flat runs)
TYPE_CODES: dict[str, str] = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT32": "I",
    "UINT64": "Q",
    "INT32": "i",
    "DOUBLE": "d",
    "VECTOR3D": "3d",
    "VECTOR6D": "6d",
    "VECTOR6INT32": "6i",
    "VECTOR6UINT32": "6I",
}
TYPE_WIDTH: dict[str, int] = {
    "BOOL": 1,
    "UINT8": 1,
    "UINT32": 1,
    "UINT64": 1,
    "INT32": 1,
    "DOUBLE": 1,
    "VECTOR3D": 3,
    "VECTOR6D": 6,
    "VECTOR6INT32": 6,
    "VECTOR6UINT32": 6,
}


_V6 = "VECTOR6D"
# RTDE output fields with a fixed name (the RTDE guide's output table); registers are added below
_FIXED_OUTPUTS: dict[str, str] = {
    "timestamp": "DOUBLE",
    "target_q": _V6,
    "target_qd": _V6,
    "target_qdd": _V6,
    "target_current": _V6,
    "target_moment": _V6,
    "actual_q": _V6,
    "actual_qd": _V6,
    "actual_current": _V6,
    "actual_current_window": _V6,
    "joint_control_output": _V6,
    "actual_TCP_pose": _V6,
    "actual_TCP_speed": _V6,
    "actual_TCP_force": _V6,
    "target_TCP_pose": _V6,
    "target_TCP_speed": _V6,
    "actual_digital_input_bits": "UINT64",
    "joint_temperatures": _V6,
    "actual_execution_time": "DOUBLE",
    "robot_mode": "INT32",
    "joint_mode": "VECTOR6INT32",
    "safety_mode": "INT32",
    "safety_status": "INT32",
    "actual_tool_accelerometer": "VECTOR3D",
    "speed_scaling": "DOUBLE",
    "target_speed_fraction": "DOUBLE",
    "actual_momentum": "DOUBLE",
    "actual_main_voltage": "DOUBLE",
    "actual_robot_voltage": "DOUBLE",
    "actual_robot_current": "DOUBLE",
    "actual_joint_voltage": _V6,
    "actual_digital_output_bits": "UINT64",
    "runtime_state": "UINT32",
    "elbow_position": "VECTOR3D",
    "elbow_velocity": "VECTOR3D",
    "robot_status_bits": "UINT32",
    "safety_status_bits": "UINT32",
    "analog_io_types": "UINT32",
    "standard_analog_input0": "DOUBLE",
    "standard_analog_input1": "DOUBLE",
    "standard_analog_output0": "DOUBLE",
    "standard_analog_output1": "DOUBLE",
    "io_current": "DOUBLE",
    "euromap67_input_bits": "UINT32",
    "euromap67_output_bits": "UINT32",
    "euromap67_24V_voltage": "DOUBLE",
    "euromap67_24V_current": "DOUBLE",
    "tool_mode": "UINT32",
    "tool_analog_input_types": "UINT32",
    "tool_analog_input0": "DOUBLE",
    "tool_analog_input1": "DOUBLE",
    "tool_output_voltage": "INT32",
    "tool_output_current": "DOUBLE",
    "tool_temperature": "DOUBLE",
    "tcp_force_scalar": "DOUBLE",
    "output_bit_registers0_to_31": "UINT32",
    "output_bit_registers32_to_63": "UINT32",
    "input_bit_registers0_to_31": "UINT32",
    "input_bit_registers32_to_63": "UINT32",
    "tool_output_mode": "UINT8",
    "tool_digital_output0_mode": "UINT8",
    "tool_digital_output1_mode": "UINT8",
    "payload": "DOUBLE",
    "payload_cog": "VECTOR3D",
    "payload_inertia": _V6,
    "script_control_line": "UINT32",
    "ft_raw_wrench": _V6,
    "joint_position_deviation_ratio": "DOUBLE",
    "collision_detection_ratio": "DOUBLE",
    "time_scale_source": "UINT32",
}


def _outputs() -> dict[str, str]:
    out = dict(_FIXED_OUTPUTS)
    for i in range(48):
        for side in ("output", "input"):
            out[f"{side}_int_register_{i}"] = "INT32"
            out[f"{side}_double_register_{i}"] = "DOUBLE"
    for i in range(64, 128):
        out[f"output_bit_register_{i}"] = "BOOL"
        out[f"input_bit_register_{i}"] = "BOOL"
    return out


def _inputs() -> dict[str, str]:
    inp = {
        "speed_slider_mask": "UINT32",
        "speed_slider_fraction": "DOUBLE",
        "standard_digital_output_mask": "UINT8",
        "standard_digital_output": "UINT8",
        "configurable_digital_output_mask": "UINT8",
        "configurable_digital_output": "UINT8",
        "tool_digital_output_mask": "UINT8",
        "tool_digital_output": "UINT8",
        "standard_analog_output_mask": "UINT8",
        "standard_analog_output_type": "UINT8",
        "standard_analog_output_0": "DOUBLE",
        "standard_analog_output_1": "DOUBLE",
        "input_bit_registers0_to_31": "UINT32",
        "input_bit_registers32_to_63": "UINT32",
        "external_force_torque": "VECTOR6D",
    }
    for i in range(48):
        inp[f"input_int_register_{i}"] = "INT32"
        inp[f"input_double_register_{i}"] = "DOUBLE"
    for i in range(64, 128):
        inp[f"input_bit_register_{i}"] = "BOOL"
    return inp


#: controller -> client variables the stub serves, with their RTDE types
OUTPUT_TYPES: dict[str, str] = _outputs()
#: client -> controller variables the stub accepts
INPUT_TYPES: dict[str, str] = _inputs()

# Bit positions (RTDE guide, "robot_status_bits" / "safety_status_bits").
ROBOT_STATUS_POWER_ON = 0
ROBOT_STATUS_PROGRAM_RUNNING = 1
SAFETY_BITS: dict[str, int] = {
    "normal_mode": 0,
    "reduced_mode": 1,
    "protective_stopped": 2,
    "recovery_mode": 3,
    "safeguard_stopped": 4,
    "system_emergency_stopped": 5,
    "robot_emergency_stopped": 6,
    "emergency_stopped": 7,
    "violation": 8,
    "fault": 9,
    "stopped_due_to_safety": 10,
}
#: ``safety_mode`` values (RTDE guide / URScript ``get_safety_mode``)
SAFETY_MODES: dict[int, str] = {
    1: "NORMAL",
    2: "REDUCED",
    3: "PROTECTIVE_STOP",
    4: "RECOVERY",
    5: "SAFEGUARD_STOP",
    6: "SYSTEM_EMERGENCY_STOP",
    7: "ROBOT_EMERGENCY_STOP",
    8: "VIOLATION",
    9: "FAULT",
    10: "VALIDATE_JOINT_ID",
    11: "UNDEFINED_SAFETY_MODE",
    12: "AUTOMATIC_MODE_SAFEGUARD_STOP",
    13: "SYSTEM_THREE_POSITION_ENABLING_STOP",
}
#: ``robot_mode`` values
ROBOT_MODES: dict[int, str] = {
    -1: "NO_CONTROLLER",
    0: "DISCONNECTED",
    1: "CONFIRM_SAFETY",
    2: "BOOTING",
    3: "POWER_OFF",
    4: "POWER_ON",
    5: "IDLE",
    6: "BACKDRIVE",
    7: "RUNNING",
    8: "UPDATING_FIRMWARE",
}
#: ``runtime_state`` values
RUNTIME_STATES: dict[int, str] = {
    0: "STOPPING",
    1: "STOPPED",
    2: "PLAYING",
    3: "PAUSING",
    4: "PAUSED",
    5: "RESUMING",
}
SAFETY_NORMAL, SAFETY_PROTECTIVE_STOP, SAFETY_ROBOT_EMERGENCY_STOP = 1, 3, 7
ROBOT_MODE_RUNNING = 7
RUNTIME_STOPPED, RUNTIME_PLAYING = 1, 2

# ur_rtde's register handshake (its uploaded control script, rtde_control.script):
# the command id goes into input_int_register_0, the script answers in
# output_int_register_0.
CMD_NONE = 0
CMD_SPEEDJ = 9
CMD_SERVOJ = 11
CMD_SPEED_STOP = 15
CMD_SERVO_STOP = 16
CMD_SET_WATCHDOG = 35
CMD_STOP_SCRIPT = 255
#: commands the script executes without a "done" reply (it stays ready)
STREAMING_COMMANDS = frozenset({6, 9, 10, 11, 24, 25, 26, 27, 38, 58, 66, 67, 68, 69, 70, 71})
SCRIPT_READY = 1
SCRIPT_DONE = 2


def pack(ptype: int, payload: bytes = b"") -> bytes:
    """One RTDE package: header + payload."""
    return HEADER.pack(HEADER.size + len(payload), ptype) + payload


def record_struct(types: list[str]) -> struct.Struct:
    """The big-endian struct for a recipe's values (vectors flattened)."""
    return struct.Struct(">" + "".join(TYPE_CODES[t] for t in types))


def split_packages(buf: bytearray) -> list[tuple[int, bytes]]:
    """Remove and return every complete package in ``buf`` as ``(type, payload)``.

    Raises:
        ValueError: a header announces a size below the header's own.
    """
    out: list[tuple[int, bytes]] = []
    while len(buf) >= HEADER.size:
        size, ptype = HEADER.unpack_from(buf)
        if size < HEADER.size:
            raise ValueError(f"RTDE package size {size} is below the header size")
        if len(buf) < size:
            break
        out.append((ptype, bytes(buf[HEADER.size : size])))
        del buf[:size]
    return out


class ProbeError(RuntimeError):
    """The controller at a host does not answer as an RTDE controller does."""


def probe(host: str, *, timeout_s: float = 2.0) -> tuple[int, int, int, int]:
    """Check that ``host`` speaks RTDE protocol 2: connect, negotiate, ask the version.

    Pure Python with timeouts, so a host that does not answer fails in bounded
    time before ur_rtde (whose connect can block) is involved.

    Returns:
        The controller version ``(major, minor, bugfix, build)``.

    Raises:
        ProbeError: with a one-line reason.
    """
    deadline = time.monotonic() + timeout_s
    try:
        sock = socket.create_connection((host, RTDE_PORT), timeout=timeout_s)
    except OSError as err:
        raise ProbeError(f"no RTDE server at {host}:{RTDE_PORT}: {err.strerror or err}") from None
    try:
        sock.sendall(pack(REQUEST_PROTOCOL_VERSION, struct.pack(">H", PROTOCOL_VERSION)))
        ptype, payload = _read_one(sock, deadline, host)
        if ptype != REQUEST_PROTOCOL_VERSION or len(payload) < 1:
            raise ProbeError(f"{host}:{RTDE_PORT} answered package type {ptype}, not RTDE")
        if not payload[0]:
            raise ProbeError(
                f"{host}:{RTDE_PORT} refused RTDE protocol version {PROTOCOL_VERSION} "
                "(controller software too old for ur_rtde 1.6)"
            )
        sock.sendall(pack(GET_URCONTROL_VERSION))
        ptype, payload = _read_one(sock, deadline, host)
        if ptype != GET_URCONTROL_VERSION or len(payload) < 16:
            raise ProbeError(f"{host}:{RTDE_PORT} sent no controller version")
        major, minor, bugfix, build = struct.unpack_from(">IIII", payload)
        return major, minor, bugfix, build
    finally:
        sock.close()


def _read_one(sock: socket.socket, deadline: float, host: str) -> tuple[int, bytes]:
    buf = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ProbeError(f"{host}:{RTDE_PORT} accepted the connection but did not answer")
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError as err:
            raise ProbeError(f"{host}:{RTDE_PORT}: {err.strerror or err}") from None
        if not chunk:
            raise ProbeError(f"{host}:{RTDE_PORT} closed the connection during the handshake")
        buf += chunk
        try:
            pkgs = split_packages(buf)
        except ValueError as err:
            raise ProbeError(f"{host}:{RTDE_PORT}: {err}") from None
        for ptype, payload in pkgs:
            if ptype != TEXT_MESSAGE:
                return ptype, payload
