"""A UR5e controller stub that ur_rtde 1.6.5 drives as it drives a real UR.

One process serves, on one host address:

* RTDE (30004): protocol version, controller version, output / input recipes,
  start / pause, data packages (:mod:`safebot.deploy.ur.rtde`);
* the dashboard server (29999): ``PolyscopeVersion``, ``get serial number``,
  ``is in remote control``, ``unlock protective stop``, ``robotmode``, ...;
* the script port (30003): receives the control script ur_rtde uploads. There is
  no URScript interpreter: the stub recognises the ``def name(): ... end``
  program and from then on plays its register handshake itself (command id in
  ``input_int_register_0``: 9 speedJ, 11 servoJ, 15 speedStop, 16 servoStop,
  35 setWatchdog, 255 stop script; replies in ``output_int_register_0``:
  1 ready, 2 done).

Behind it run today's PyBullet plant and controller core
(:class:`~safebot.deploy.stubs.controller.ControllerCore`: speedJ ramps at the
commanded acceleration, joint speed and position limits, collision thresholds)
at the profile's rate (500 Hz). Faults appear only where ur_rtde reads them on
hardware: a protective stop sets ``safety_status_bits`` bit 2 and
``safety_mode`` 3 and stops the program (``runtime_state`` STOPPED, bit 1 of
``robot_status_bits`` cleared); the RTDE watchdog armed by ``setWatchdog``
stops the program; an emergency stop (SIGUSR2) sets bits 6 and 7 and
``safety_mode`` 7. SIGUSR1 raises a protective stop, as a safety input or the
pendant would.

ur_rtde cannot change its RTDE or script ports, so several stubs on one machine
use different loopback addresses (127.0.0.0/8 is all loopback on Linux)::

    python -m safebot.deploy.ur.stub --host 127.0.0.2 [--realtime]

It prints ``SAFEBOT-UR-STUB READY host=<h> ...`` when listening and
``SAFEBOT-UR-STUB STATS {json}`` on exit (SIGTERM / SIGINT / ``--seconds``).
A port already in use ends it with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pybullet as pb

from safebot.deploy.profiles import ControllerProfile, coerce_profile
from safebot.deploy.rt import enter_realtime
from safebot.deploy.state import FLAG_BITS, Command, CommandFlag, RobotMode
from safebot.deploy.stubs.controller import ControllerCore, PlantState
from safebot.deploy.stubs.plant import Box, PybulletPlant
from safebot.deploy.stubs.process import StubChild
from safebot.deploy.ur import rtde

READY_PREFIX = "SAFEBOT-UR-STUB READY"
STATS_PREFIX = "SAFEBOT-UR-STUB STATS"
EXIT_PORT_IN_USE = 2
#: what PolyscopeVersion / the controller version report (an e-Series on 5.x)
CONTROLLER_VERSION = (5, 15, 0, 0)
POLYSCOPE_LINE = "URSoftware 5.15.0.0 (Dec 01 2026)"
SERIAL_NUMBER = "20255300000"
#: UR refuses to unlock a protective stop earlier than this after it happened
UNLOCK_DELAY_S = 5.0
#: a client whose unsent output grows past this is dropped (it stopped reading)
MAX_BACKLOG = 1 << 20


_DEBUG = bool(os.environ.get("SAFEBOT_UR_STUB_DEBUG"))


class PortInUse(OSError):
    """One of the stub's ports is taken on its host address."""


@dataclass
class _OutRecipe:
    names: list[str]
    rec: struct.Struct
    every: int  # send every n-th cycle (the recipe frequency)


@dataclass
class _InRecipe:
    names: list[str]
    types: list[str]
    rec: struct.Struct


@dataclass
class _Conn:
    sock: socket.socket
    kind: str  # "rtde" | "dashboard" | "script"
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    protocol: int = 1
    started: bool = False
    outputs: dict[int, _OutRecipe] = field(default_factory=dict)
    inputs: dict[int, _InRecipe] = field(default_factory=dict)
    closed: bool = False


def _rotvec(quat: Sequence[float]) -> list[float]:
    """Axis-angle vector (URScript pose rotation) of a pybullet ``(x, y, z, w)`` quaternion."""
    x, y, z, w = quat
    s = math.sqrt(x * x + y * y + z * z)
    if s < 1e-12:
        return [0.0, 0.0, 0.0]
    angle = 2.0 * math.atan2(s, w)
    if angle > math.pi:  # the shorter way round, as UR reports it
        angle -= 2.0 * math.pi
    k = angle / s
    return [x * k, y * k, z * k]


class URStub:
    """The controller: sockets, register handshake, controller core and plant, one cycle at a time."""

    def __init__(
        self,
        profile: ControllerProfile | str | Path = "ur5e",
        *,
        host: str = "127.0.0.1",
        ports: tuple[int, int, int] = (rtde.RTDE_PORT, rtde.DASHBOARD_PORT, rtde.SCRIPT_PORT),
        obstacles: Sequence[Box] = (),
        home: Sequence[float] | None = None,
        spin_us: float = 200.0,
        remote_control: bool = True,
        protocol_versions: tuple[int, ...] = (1, 2),
        unlock_delay_s: float = UNLOCK_DELAY_S,
    ) -> None:
        prof = coerce_profile(profile)
        # The RTDE watchdog exists only once a client arms it (setWatchdog); the
        # stub runs it itself, so the core gets none.
        comm = prof.communication.model_copy(update={"watchdog_s": None})
        self.profile = prof
        self.core = ControllerCore(prof.model_copy(update={"communication": comm}))
        self.host = host
        self.remote_control = remote_control
        self.protocol_versions = protocol_versions
        self.unlock_delay_s = unlock_delay_s
        self.spin_s = spin_us * 1e-6
        self.listeners: dict[socket.socket, str] = {}
        try:
            for port, kind in zip(ports, ("rtde", "dashboard", "script"), strict=True):
                self.listeners[self._listen(host, port)] = kind
        except PortInUse:
            for s in self.listeners:
                s.close()
            raise
        self.ports = {kind: s.getsockname()[1] for s, kind in self.listeners.items()}
        self.plant = PybulletPlant(prof, obstacles=obstacles)
        if home is not None:
            q0 = np.asarray(home, dtype=np.float64)
            if q0.shape != (prof.dof,):
                raise ValueError(f"--home needs {prof.dof} joint values, got {q0.shape}")
            self.plant.reset(q0)
            self.core.q = q0.copy()
        self.conns: list[_Conn] = []
        self._stop = False
        # registers (the controller's, shared by all RTDE clients)
        self.in_int = [0] * 48
        self.in_double = [0.0] * 48
        self.out_int = [0] * 48
        self.out_double = [0.0] * 48
        self.input_owner: dict[str, _Conn] = {}
        self.last_input_time: float | None = None
        self.new_input = False
        self.input_packages = 0
        self.longest_run_without_command = 0
        # program / safety state
        self.program: str | None = None
        self.runtime_state = rtde.RUNTIME_STOPPED
        self.safety_mode = rtde.SAFETY_NORMAL
        self.safety_bits = 1 << rtde.SAFETY_BITS["normal_mode"]
        self.robot_mode = rtde.ROBOT_MODE_RUNNING
        self.protective_since: float | None = None
        self.estop = False
        self.watchdog_s: float | None = None
        self.pending_done: int | None = None  # a command whose "done" waits for the arm to stop
        self.handled_cmd = rtde.CMD_NONE
        self.cmd_seq = 0
        self.events: list[str] = []
        # cycle bookkeeping
        self.cycles = 0
        self.steps = 0
        self.overruns = 0
        self.skipped_cycles = 0
        self.t0 = time.perf_counter()
        self.q_target = self.core.q.copy()
        self.ps: PlantState = self.plant.read()
        self.ee_extra = self._ee_extra()
        self._requested = {"protective": False, "estop": False}
        self.commands = {"speedj": 0, "servoj": 0, "stop": 0, "other": 0}
        self._work_us: list[float] = []

    # -- sockets -----------------------------------------------------------------------------
    @staticmethod
    def _listen(host: str, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            s.close()
            raise PortInUse(
                err.errno, f"{host}:{port} is already in use ({err.strerror})"
            ) from None
        s.listen(8)
        s.setblocking(False)
        return s

    def stop(self) -> None:
        self._stop = True

    def request_protective_stop(self) -> None:
        """Raise a protective stop at the next cycle (signal-safe: sets a flag only)."""
        self._requested["protective"] = True

    def request_emergency_stop(self) -> None:
        """Emergency stop at the next cycle (signal-safe)."""
        self._requested["estop"] = True

    def _service(self) -> None:
        self.conns = [c for c in self.conns if not c.closed]
        socks: list[socket.socket] = list(self.listeners)
        socks += [c.sock for c in self.conns]
        ready, _, _ = select.select(socks, [], [], 0)
        by_sock = {c.sock: c for c in self.conns}
        for s in ready:
            kind = self.listeners.get(s)
            if kind is not None:
                try:
                    cs, _ = s.accept()
                except OSError:
                    continue
                cs.setblocking(False)
                cs.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn = _Conn(cs, kind)
                self.conns.append(conn)
                if kind == "dashboard":
                    self._queue(conn, b"Connected: Universal Robots Dashboard Server\n")
                continue
            conn = by_sock[s]
            try:
                data = s.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                self._close(conn)
                continue
            conn.inbuf += data
            if conn.kind == "rtde":
                self._rtde_input(conn)
            elif conn.kind == "dashboard":
                self._dashboard_input(conn)
            else:
                self._script_input(conn)
        for conn in self.conns:
            self._flush(conn)
        self.conns = [c for c in self.conns if not c.closed]

    def _queue(self, conn: _Conn, data: bytes) -> None:
        if conn.closed:
            return
        conn.outbuf += data
        if len(conn.outbuf) > MAX_BACKLOG:
            self.events.append(f"dropped a {conn.kind} client that stopped reading")
            self._close(conn)

    def _flush(self, conn: _Conn) -> None:
        if conn.closed or not conn.outbuf:
            return
        try:
            n = conn.sock.send(conn.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        del conn.outbuf[:n]

    def _close(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        for name in [n for n, c in self.input_owner.items() if c is conn]:
            del self.input_owner[name]
        try:
            conn.sock.close()
        except OSError:
            pass

    # -- RTDE --------------------------------------------------------------------------------
    def _rtde_input(self, conn: _Conn) -> None:
        try:
            pkgs = rtde.split_packages(conn.inbuf)
        except ValueError as err:
            self.events.append(f"RTDE client sent garbage ({err}); closed")
            self._close(conn)
            return
        for ptype, payload in pkgs:
            self._rtde_package(conn, ptype, payload)

    def _rtde_package(self, conn: _Conn, ptype: int, payload: bytes) -> None:
        if _DEBUG and ptype != rtde.DATA_PACKAGE:
            print(f"ur stub: RTDE {chr(ptype)} {payload[:400]!r}", file=sys.stderr, flush=True)
        if ptype == rtde.DATA_PACKAGE:
            self._rtde_data(conn, payload)
        elif ptype == rtde.REQUEST_PROTOCOL_VERSION:
            (ver,) = struct.unpack_from(">H", payload)
            ok = ver in self.protocol_versions
            if ok:
                conn.protocol = ver
            self._queue(conn, rtde.pack(ptype, struct.pack(">B", int(ok))))
        elif ptype == rtde.GET_URCONTROL_VERSION:
            self._queue(conn, rtde.pack(ptype, struct.pack(">IIII", *CONTROLLER_VERSION)))
        elif ptype == rtde.SETUP_OUTPUTS:
            self._setup_outputs(conn, payload)
        elif ptype == rtde.SETUP_INPUTS:
            self._setup_inputs(conn, payload)
        elif ptype == rtde.START:
            conn.started = True
            self._queue(conn, rtde.pack(ptype, b"\x01"))
        elif ptype == rtde.PAUSE:
            conn.started = False
            self._queue(conn, rtde.pack(ptype, b"\x01"))
        else:
            self.events.append(f"RTDE package type {ptype} not served")

    def _setup_outputs(self, conn: _Conn, payload: bytes) -> None:
        if conn.protocol >= 2:
            (freq,) = struct.unpack_from(">d", payload)
            text = payload[8:]
        else:
            freq, text = self.profile.rate_hz, payload
        # ur_rtde ends its list with a comma: empty names are not variables
        names = [n for n in text.decode(errors="replace").split(",") if n]
        types = [rtde.OUTPUT_TYPES.get(n, "NOT_FOUND") for n in names]
        if _DEBUG:
            print(f"ur stub: outputs {names} -> {types}", file=sys.stderr, flush=True)
        if "NOT_FOUND" in types or freq <= 0:
            rid = 0
        else:
            rid = len(conn.outputs) + 1
            every = max(1, round(self.profile.rate_hz / min(freq, self.profile.rate_hz)))
            conn.outputs[rid] = _OutRecipe(names, rtde.record_struct(types), every)
        self._queue(conn, rtde.pack(rtde.SETUP_OUTPUTS, bytes([rid]) + ",".join(types).encode()))

    def _setup_inputs(self, conn: _Conn, payload: bytes) -> None:
        names = [n for n in payload.decode(errors="replace").split(",") if n]
        types = []
        for n in names:
            t = rtde.INPUT_TYPES.get(n, "NOT_FOUND")
            owner = self.input_owner.get(n)
            if t != "NOT_FOUND" and owner is not None and owner is not conn:
                t = "IN_USE"
            types.append(t)
        if "NOT_FOUND" in types or "IN_USE" in types:
            rid = 0
        else:
            rid = len(conn.inputs) + 1
            conn.inputs[rid] = _InRecipe(names, types, rtde.record_struct(types))
            for n in names:
                self.input_owner[n] = conn
        self._queue(conn, rtde.pack(rtde.SETUP_INPUTS, bytes([rid]) + ",".join(types).encode()))

    def _rtde_data(self, conn: _Conn, payload: bytes) -> None:
        rid = payload[0]
        recipe = conn.inputs.get(rid)
        if recipe is None or len(payload) - 1 != recipe.rec.size:
            self.events.append(f"RTDE data package for unknown input recipe {rid}")
            return
        vals = recipe.rec.unpack_from(payload, 1)
        i = 0
        for name, t in zip(recipe.names, recipe.types, strict=True):
            w = rtde.TYPE_WIDTH[t]
            v = vals[i] if w == 1 else vals[i : i + w]
            i += w
            if name.startswith("input_int_register_"):
                self.in_int[int(name[19:])] = int(v)  # type: ignore[arg-type]
            elif name.startswith("input_double_register_"):
                self.in_double[int(name[22:])] = float(v)  # type: ignore[arg-type]
        self.last_input_time = time.perf_counter()
        self.new_input = True
        self.input_packages += 1

    def _send_outputs(self) -> None:
        snap: dict[str, Any] = {}
        for conn in self.conns:
            if not conn.started or conn.closed:
                continue
            for rid, recipe in conn.outputs.items():
                if self.cycles % recipe.every:
                    continue
                args: list[Any] = []
                for name in recipe.names:
                    v = snap.get(name)
                    if v is None:
                        v = snap[name] = self._value(name)
                    if isinstance(v, list):
                        args.extend(v)
                    else:
                        args.append(v)
                body = bytes([rid]) + recipe.rec.pack(*args)
                self._queue(conn, rtde.pack(rtde.DATA_PACKAGE, body))

    def _value(self, name: str) -> Any:
        """The current value of output variable ``name`` (lists for vectors)."""
        c, ps = self.core, self.ps
        t = rtde.OUTPUT_TYPES[name]
        getters: dict[str, Callable[[], Any]] = {
            # executed cycles, not wall time: the stub's own late wake-ups must
            # not look like states the client failed to answer
            "timestamp": lambda: self.steps * self.profile.dt,
            "target_q": lambda: self.q_target.tolist(),
            "target_qd": lambda: c.dq_d.tolist(),
            "target_qdd": lambda: c.ddq_d.tolist(),
            "actual_q": lambda: ps.q.tolist(),
            "actual_qd": lambda: ps.dq.tolist(),
            "actual_TCP_pose": lambda: [*ps.ee_pos.tolist(), *self.ee_extra[0]],
            "target_TCP_pose": lambda: [*ps.ee_pos.tolist(), *self.ee_extra[0]],
            "actual_TCP_speed": lambda: self.ee_extra[1],
            "target_TCP_speed": lambda: self.ee_extra[1],
            "actual_TCP_force": lambda: ps.wrench.tolist(),
            "ft_raw_wrench": lambda: ps.wrench.tolist(),
            "robot_mode": lambda: self.robot_mode,
            "joint_mode": lambda: [255] * 6,  # JOINT_RUNNING_MODE
            "safety_mode": lambda: self.safety_mode,
            "safety_status": lambda: self.safety_mode,
            "runtime_state": lambda: self.runtime_state,
            "robot_status_bits": self._robot_status_bits,
            "safety_status_bits": lambda: self.safety_bits,
            "speed_scaling": lambda: 1.0,
            "target_speed_fraction": lambda: 1.0,
            "actual_execution_time": lambda: self._work_us[-1] * 1e-3 if self._work_us else 0.0,
            "actual_main_voltage": lambda: 48.0,
            "actual_robot_voltage": lambda: 48.0,
            "joint_temperatures": lambda: [30.0] * 6,
        }
        g = getters.get(name)
        if g is not None:
            return g()
        if name.startswith("output_int_register_"):
            return self.out_int[int(name[20:])]
        if name.startswith("output_double_register_"):
            return self.out_double[int(name[23:])]
        if name.startswith("input_int_register_"):
            return self.in_int[int(name[19:])]
        if name.startswith("input_double_register_"):
            return self.in_double[int(name[22:])]
        # everything else the stub does not model: zeros of the right type
        w = rtde.TYPE_WIDTH[t]
        zero: Any = False if t == "BOOL" else (0.0 if "D" in t else 0)
        return [zero] * w if w > 1 else zero

    def _robot_status_bits(self) -> int:
        bits = 1 << rtde.ROBOT_STATUS_POWER_ON if not self.estop else 0
        if self.program is not None:
            bits |= 1 << rtde.ROBOT_STATUS_PROGRAM_RUNNING
        return bits

    def _ee_extra(self) -> tuple[list[float], list[float]]:
        st = pb.getLinkState(
            self.plant.robot,
            self.plant.ee,
            computeLinkVelocity=1,
            computeForwardKinematics=True,
            physicsClientId=self.plant.cid,
        )
        return _rotvec(st[5]), [*st[6], *st[7]]

    # -- dashboard ---------------------------------------------------------------------------
    def _dashboard_input(self, conn: _Conn) -> None:
        while b"\n" in conn.inbuf:
            line, _, rest = bytes(conn.inbuf).partition(b"\n")
            conn.inbuf[:] = rest
            cmd = line.decode(errors="replace").strip()
            reply = self._dashboard(cmd)
            self._queue(conn, (reply + "\n").encode())
            if cmd == "quit":
                self._flush(conn)
                self._close(conn)
                return

    def _dashboard(self, cmd: str) -> str:
        low = cmd.lower()
        if low == "polyscopeversion":
            return POLYSCOPE_LINE
        if low == "get serial number":
            return SERIAL_NUMBER
        if low == "get robot model":
            return "UR5"
        if low == "is in remote control":
            return "true" if self.remote_control else "false"
        if low == "robotmode":
            return f"Robotmode: {rtde.ROBOT_MODES[self.robot_mode]}"
        if low in ("safetymode", "safetystatus"):
            label = "Safetystatus" if low == "safetystatus" else "Safetymode"
            return f"{label}: {rtde.SAFETY_MODES[self.safety_mode]}"
        if low == "programstate":
            state = "PLAYING" if self.program else "STOPPED"
            return f"{state} {self.program or '<unnamed>'}"
        if low == "running":
            return f"Program running: {'true' if self.program else 'false'}"
        if low == "stop":
            if self.program is None:
                return "Failed to execute: stop"
            self._stop_program("stopped from the dashboard")
            return "Stopped"
        if low == "unlock protective stop":
            return self._unlock()
        if low == "close safety popup":
            return "closing safety popup"
        if low == "close popup":
            return "closing popup"
        if low in ("power on", "brake release"):
            return "Powering on" if low == "power on" else "Brake releasing"
        if low == "quit":
            return "Disconnected"
        return f"could not understand: '{cmd}'"

    def _unlock(self) -> str:
        if self.safety_mode != rtde.SAFETY_PROTECTIVE_STOP:
            return "Cannot unlock protective stop, safety mode is not PROTECTIVE_STOP"
        assert self.protective_since is not None
        if time.perf_counter() - self.protective_since < self.unlock_delay_s:
            return (
                "Cannot unlock protective stop until "
                f"{self.unlock_delay_s:g}s after occurrence. Always inspect cause of protective stop "
                "before unlocking"
            )
        self.core.recover()
        self.safety_mode = rtde.SAFETY_NORMAL
        self.safety_bits = 1 << rtde.SAFETY_BITS["normal_mode"]
        self.protective_since = None
        self.events.append("protective stop unlocked")
        return "Protective stop releasing"

    # -- script port -------------------------------------------------------------------------
    def _script_input(self, conn: _Conn) -> None:
        # A program is "def <name>():" ... a line "end" at column 0. Anything else
        # (secondary one-liners) is ignored: there is no URScript interpreter.
        while True:
            text = conn.inbuf.decode(errors="replace")
            lines = text.split("\n")
            start = next((i for i, ln in enumerate(lines) if ln.startswith("def ")), None)
            if start is None:
                if len(lines) > 1:
                    conn.inbuf[:] = lines[-1].encode()
                return
            end = next((i for i in range(start + 1, len(lines) - 1) if lines[i] == "end"), None)
            if end is None:
                return
            name = lines[start][4:].split("(")[0].strip()
            conn.inbuf[:] = "\n".join(lines[end + 1 :]).encode()
            self._start_program(name)

    def _start_program(self, name: str) -> None:
        if self.safety_mode != rtde.SAFETY_NORMAL or self.estop:
            self.events.append(f"program {name} refused: safety mode {self.safety_mode}")
            return
        self.program = name
        self.runtime_state = rtde.RUNTIME_PLAYING
        self.out_int[0] = rtde.SCRIPT_READY
        self.handled_cmd = rtde.CMD_NONE
        self.pending_done = None
        self.watchdog_s = None
        self.events.append(f"program {name} started")

    def _stop_program(self, why: str) -> None:
        if self.program is None:
            return
        self.events.append(f"program {self.program} stopped: {why}")
        self.program = None
        self.runtime_state = rtde.RUNTIME_STOPPED
        self.watchdog_s = None
        self.pending_done = None
        self.core.speed_target = np.zeros_like(self.core.speed_target)
        # a stopped program brakes its motion (the core ramps the target to 0)
        if self.core.mode is RobotMode.MOVE:
            self.core.speed_accel = (
                self.profile.speedj.max_acceleration if self.profile.speedj else 10.0
            )

    def _script_step(self, now: float) -> Command | None:
        """One pass of ur_rtde's control-script loop over the registers."""
        if self.program is None:
            return None
        if self.pending_done is not None:
            if self.core.mode is not RobotMode.MOVE or not self.core.dq_d.any():
                self.out_int[0] = rtde.SCRIPT_DONE
                self.pending_done = None
            return None
        cmd = self.in_int[0]
        if cmd == rtde.CMD_NONE:
            self.out_int[0] = rtde.SCRIPT_READY
            self.handled_cmd = cmd
            return None
        if cmd in rtde.STREAMING_COMMANDS:
            self.out_int[0] = rtde.SCRIPT_READY
            self.handled_cmd = cmd
            # the script re-issues the same target each loop: only a new input
            # package is a new command (the core holds the last one meanwhile)
            if not self.new_input:
                return None
            return self._streaming(cmd)
        if cmd == self.handled_cmd:  # already done, waiting for the client to clear it
            return None
        self.handled_cmd = cmd
        d = self.in_double
        if cmd in (rtde.CMD_SPEED_STOP, rtde.CMD_SERVO_STOP):
            self.commands["stop"] += 1
            decel = d[0] if d[0] > 0 else 10.0
            self.core.speed_target = np.zeros_like(self.core.speed_target)
            if self.profile.speedj is not None:
                self.core.speed_accel = min(decel, self.profile.speedj.max_acceleration)
            self.pending_done = cmd
            return None
        self.commands["other"] += 1
        if cmd == rtde.CMD_SET_WATCHDOG:
            self.watchdog_s = 1.0 / d[0] if d[0] > 0 else None
            self.last_input_time = now
        elif cmd == rtde.CMD_STOP_SCRIPT:
            self._stop_program("stop script command")
            return None
        else:
            self.events.append(f"script command {cmd} not emulated; answered done")
        self.out_int[0] = rtde.SCRIPT_DONE
        return None

    def _streaming(self, cmd: int) -> Command | None:
        d = self.in_double
        self.cmd_seq += 1
        if cmd == rtde.CMD_SPEEDJ:
            self.commands["speedj"] += 1
            qd = np.asarray(d[0:6], dtype=np.float64)
            accel = d[6]
        elif cmd == rtde.CMD_SERVOJ:
            # servoJ(q, v, a, t, lookahead, gain): the stub closes the position
            # error over the lookahead time (URScript's smoothing horizon, at
            # least t); v and a are unused, as servoj ignores them
            self.commands["servoj"] += 1
            horizon = max(d[8], d[9], self.profile.dt)
            qd = (np.asarray(d[0:6], dtype=np.float64) - self.ps.q) / horizon
            accel = self.profile.speedj.max_acceleration if self.profile.speedj else 0.0
        else:
            self.commands["other"] += 1
            return None
        return Command(self.cmd_seq, time.perf_counter_ns(), 0, CommandFlag.NONE, accel, qd)

    # -- safety ------------------------------------------------------------------------------
    def _safety(self, now: float) -> None:
        if self._requested["estop"] and not self.estop:
            self._requested["estop"] = False
            self.estop = True
            self.core.fault("protective_stop")  # the core's stop; the flag is ours below
            self.safety_mode = rtde.SAFETY_ROBOT_EMERGENCY_STOP
            self.safety_bits = (1 << rtde.SAFETY_BITS["robot_emergency_stopped"]) | (
                1 << rtde.SAFETY_BITS["emergency_stopped"]
            )
            self.robot_mode = 5  # IDLE: powered, brakes engaged
            self._stop_program("emergency stop")
            self.events.append("emergency stop")
        if self._requested["protective"]:
            self._requested["protective"] = False
            self.core.fault("protective_stop")
        if (
            self.watchdog_s is not None
            and self.program is not None
            and self.last_input_time is not None
            and now - self.last_input_time > self.watchdog_s
        ):
            self.core.fault("watchdog_timeout", mode=RobotMode.STOPPED)
            self._stop_program(
                f"RTDE watchdog: no input for {1e3 * (now - self.last_input_time):.0f} ms"
            )
        if self.core.errors >> FLAG_BITS["protective_stop"] & 1 and not self.estop:
            if self.safety_mode != rtde.SAFETY_PROTECTIVE_STOP:
                names = [n for n, b in FLAG_BITS.items() if self.core.errors >> b & 1]
                self.events.append(f"protective stop: {', '.join(names)}")
                self.safety_mode = rtde.SAFETY_PROTECTIVE_STOP
                self.safety_bits = 1 << rtde.SAFETY_BITS["protective_stopped"]
                self.protective_since = now
                self._stop_program("protective stop")

    # -- loop --------------------------------------------------------------------------------
    def step(self, now: float, n: int = 1) -> None:
        """One controller cycle (``n`` > 1: the process woke up late, the plant catches up)."""
        self._service()
        cmd = self._script_step(now)
        self.new_input = False
        self.core.command(cmd, now)
        self.longest_run_without_command = max(
            self.longest_run_without_command, self.core.lost_consecutive
        )
        self._safety(now)
        self.plant.step(self.core.target, n)
        self.ps = self.plant.read()
        self.ee_extra = self._ee_extra()
        self.core.observe(self.ps)
        self._safety(now)
        self.q_target = self.q_target + self.core.dq_d * self.profile.dt * n
        if self.core.mode is not RobotMode.MOVE:
            self.q_target = self.ps.q.copy()
        self._send_outputs()
        for conn in self.conns:
            self._flush(conn)
        self.cycles += n
        self.steps += 1

    def run(self, seconds: float | None = None) -> None:
        dt = self.profile.dt
        t_next = time.perf_counter()
        t_end = None if seconds is None else t_next + seconds
        while not self._stop:
            now = time.perf_counter()
            wait = t_next - now
            if wait > 0:
                if wait > self.spin_s:
                    time.sleep(wait - self.spin_s)
                while time.perf_counter() < t_next:
                    pass
                now = time.perf_counter()
            if t_end is not None and now >= t_end:
                break
            late = now - t_next
            n = 1
            if late >= dt:
                n = 1 + int(late / dt)
                self.overruns += 1
                self.skipped_cycles += n - 1
            t_next += n * dt
            self.step(now, n)
            self._work_us.append((time.perf_counter() - now) * 1e6)

    def stats(self) -> dict[str, object]:
        w = np.asarray(self._work_us) if self._work_us else np.zeros(1)
        return {
            "profile": self.profile.name,
            "host": self.host,
            "cycles": self.cycles,
            "overruns": self.overruns,
            "skipped_cycles": self.skipped_cycles,
            "work_us": {
                "p50": round(float(np.percentile(w, 50)), 1),
                "p99": round(float(np.percentile(w, 99)), 1),
                "max": round(float(w.max()), 1),
            },
            "commands": self.commands,
            "input_packages": self.input_packages,
            # while the arm moves: cycles in which no new speedJ package arrived
            "cycles_without_new_command": self.core.lost_total,
            "longest_run_without_new_command": self.longest_run_without_command,
            "safety_mode": rtde.SAFETY_MODES[self.safety_mode],
            "program": self.program,
            "events": self.events[-50:],
        }

    def close(self) -> None:
        for conn in self.conns:
            self._close(conn)
        for s in self.listeners:
            s.close()
        self.plant.close()


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m safebot.deploy.ur.stub", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("--profile", default="ur5e", help="controller profile: path or shipped name")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    ap.add_argument("--rtde-port", type=int, default=rtde.RTDE_PORT)
    ap.add_argument("--dashboard-port", type=int, default=rtde.DASHBOARD_PORT)
    ap.add_argument("--script-port", type=int, default=rtde.SCRIPT_PORT)
    ap.add_argument("--home", type=_floats, default=None, help="start joint positions, rad (csv)")
    ap.add_argument(
        "--obstacle",
        action="append",
        default=[],
        type=Box.parse,
        metavar="X,Y,Z,HX,HY,HZ",
        help="static box obstacle (centre, half extents; m); repeatable",
    )
    ap.add_argument("--local-mode", action="store_true", help="answer 'is in remote control' false")
    ap.add_argument(
        "--protocol-versions", type=str, default="1,2", help="RTDE versions accepted (csv)"
    )
    ap.add_argument("--unlock-delay", type=float, default=UNLOCK_DELAY_S, metavar="S")
    ap.add_argument("--seconds", type=float, default=None, help="exit after this long")
    ap.add_argument("--spin-us", type=float, default=200.0, help="busy-wait before each cycle")
    ap.add_argument("--realtime", action="store_true", help="run under SCHED_FIFO where permitted")
    args = ap.parse_args(argv)
    try:
        stub = URStub(
            args.profile,
            host=args.host,
            ports=(args.rtde_port, args.dashboard_port, args.script_port),
            obstacles=args.obstacle,
            home=args.home,
            spin_us=args.spin_us,
            remote_control=not args.local_mode,
            protocol_versions=tuple(int(v) for v in args.protocol_versions.split(",")),
            unlock_delay_s=args.unlock_delay,
        )
    except PortInUse as err:
        print(f"ur stub: {err.strerror}", file=sys.stderr)
        return EXIT_PORT_IN_USE
    except (OSError, ValueError) as err:
        print(f"ur stub: {err}", file=sys.stderr)
        return 1

    def _on_signal(signum: int, frame: object) -> None:
        if signum == signal.SIGUSR1:
            stub.request_protective_stop()
        elif signum == signal.SIGUSR2:
            stub.request_emergency_stop()
        else:
            stub.stop()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, _on_signal)
    rt = args.realtime and enter_realtime() is not None
    p = stub.ports
    print(
        f"{READY_PREFIX} host={args.host} rtde={p['rtde']} dashboard={p['dashboard']} "
        f"script={p['script']} profile={stub.profile.name} realtime={int(rt)}",
        flush=True,
    )
    try:
        stub.run(args.seconds)
    finally:
        print(f"{STATS_PREFIX} {json.dumps(stub.stats())}", flush=True)
        stub.close()
    return 0


class StubError(RuntimeError):
    """A UR stub process failed to start."""


def free_loopback_host(rng: random.Random | None = None) -> str:
    """A random 127.x.y.z address (not 127.0.0.1, so ur_rtde runs its remote-control check)."""
    r = rng or random.Random()
    return f"127.{r.randrange(64, 250)}.{r.randrange(1, 250)}.{r.randrange(2, 250)}"


class StubProcess(StubChild):
    """A UR stub in its own process on a free loopback address; a context manager that ends it.

    Example:
        >>> with StubProcess() as stub:
        ...     report = run_loop("ur5e", policy, 2.0, host=stub.host)

    ``host=None`` picks a random 127.x.y.z and retries on a taken one (exit code 2).
    """

    stats_prefix = STATS_PREFIX

    def __init__(
        self,
        profile: str | Path = "ur5e",
        *,
        host: str | None = None,
        obstacles: Sequence[Box] = (),
        home: Sequence[float] | None = None,
        seconds: float | None = None,
        extra_args: Sequence[str] = (),
        realtime: bool = False,
        start_timeout_s: float = 30.0,
        attempts: int = 5,
    ) -> None:
        self.profile = str(profile)
        self.stats: dict[str, object] | None = None
        self.realtime = False
        self._stderr = tempfile.TemporaryFile()
        for _ in range(attempts if host is None else 1):
            self.host = host or free_loopback_host()
            cmd = [sys.executable, "-m", "safebot.deploy.ur.stub", "--profile", self.profile]
            cmd += ["--host", self.host, *extra_args]
            for b in obstacles:
                cmd += ["--obstacle", ",".join(f"{v:g}" for v in (*b.center, *b.half_extents))]
            if home is not None:
                cmd += ["--home", ",".join(f"{v!r}" for v in home)]
            if seconds is not None:
                cmd += ["--seconds", str(seconds)]
            if realtime:
                cmd.append("--realtime")
            self._stderr.seek(0)
            self._stderr.truncate()
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=_child_env()
            )
            if self._await_ready(start_timeout_s):
                return
            if self.proc.returncode != EXIT_PORT_IN_USE:
                break
        err = self.stderr_text()[-2000:]
        self.terminate()
        raise StubError(f"UR stub did not start: {err.strip()}")

    def _await_ready(self, timeout_s: float) -> bool:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith(READY_PREFIX):
                    fields = dict(kv.split("=", 1) for kv in line.split()[2:])
                    self.realtime = fields.get("realtime") == "1"
                    return True
                if not line and self.proc.poll() is not None:
                    break
            elif self.proc.poll() is not None:
                break
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        return False

    def signal(self, sig: int) -> None:
        """Send ``sig`` (SIGUSR1: protective stop, SIGUSR2: emergency stop)."""
        if self.alive():
            self.proc.send_signal(sig)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    return env


if __name__ == "__main__":
    raise SystemExit(main())
