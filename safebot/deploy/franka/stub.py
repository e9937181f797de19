"""A Franka controller stub that speaks libfranka's own network protocol (version 10).

``safebot stub fr3`` (or ``python -m safebot.deploy.franka.stub --robot fr3``) listens on
TCP ``HOST:1337`` (libfranka's command port; ``--host`` picks a loopback address such as
``127.0.0.2`` so several stubs can run at once), prints one line
``SAFEBOT-FRANKA-STUB READY host=<H> robot=<fr3|panda> ...`` and then runs the 1 kHz
controller cycle until SIGTERM / SIGINT. pylibfranka connects to it exactly as to a
robot: ``pylibfranka.Robot(host, RealtimeConfig.kIgnore)``.

What it implements (the commands a joint-velocity client uses, byte layouts in
:mod:`safebot.deploy.franka.protocol`):

* ``Connect``: version check (``--protocol-version`` makes it pretend to be another
  server version, to test the client's refusal); the UDP state stream starts.
* ``GetRobotModel``: a URDF with the profile's joint limits and position-based velocity
  limits (pylibfranka 0.21.3 asks for it while connecting).
* ``Move`` (joint velocity, joint or Cartesian impedance): the motion starts (response
  ``MotionStarted``); each cycle's ``RobotCommand`` goes through
  :class:`~safebot.deploy.stubs.controller.ControllerCore` (velocity, acceleration and
  jerk limits, joint limits, collision thresholds, lost packets) and the PyBullet plant.
  A violated check is a reflex: robot mode Reflex, the flag in ``current_errors`` and
  ``last_motion_errors``, and the Move response ``ReflexAborted``, so libfranka raises
  its own ``ControlException`` naming the reflex. ``motion_generation_finished`` at rest
  ends the motion (response ``Success``).
* ``StopMove``, ``AutomaticErrorRecovery``, ``SetCollisionBehavior`` (its upper
  thresholds become the reflex thresholds); the other setters are acknowledged and
  change nothing in the plant.

Lost packets: a cycle whose ``RobotCommand`` does not answer the state sent last
(missing or late) is lost; ``lost_cycle_tolerance`` (20) in a row raise
``communication_constraints_violation``. The count starts with the motion's first
command. ``control_command_success_rate`` is the fraction of answered cycles over the
last 100 cycles of the motion.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from safebot.deploy.franka import protocol as fp
from safebot.deploy.profiles import ControllerProfile, coerce_profile
from safebot.deploy.rt import enter_realtime
from safebot.deploy.state import Command as CoreCommand
from safebot.deploy.state import CommandFlag, RobotMode, mask_to_flags
from safebot.deploy.stubs.controller import ControllerCore, PlantState
from safebot.deploy.stubs.plant import Box, PybulletPlant
from safebot.deploy.stubs.process import StubChild

READY_PREFIX = "SAFEBOT-FRANKA-STUB READY"
STATS_PREFIX = "SAFEBOT-FRANKA-STUB STATS"
#: ``--robot`` name -> shipped controller profile
ROBOT_PROFILES: dict[str, str] = {"fr3": "franka_fr3", "panda": "franka_panda"}
#: window of ``control_command_success_rate`` (cycles)
SUCCESS_WINDOW = 100
#: a motion whose first command never comes starts counting lost cycles after this many
FIRST_COMMAND_GRACE = 1000
#: FR3 position-based velocity limits (velocity_offset, deceleration_limit) per joint: the
#: parameters libfranka's deprecated ``computeUpperLimitsJointVelocity`` hard-codes
#: (include/franka/rate_limiting.h; ``12.0 (2.7501 - q)`` is ``2 * 6.0 * (...)``)
FR3_POSITION_BASED = (
    (0.30, 6.0),
    (0.20, 2.585),
    (0.20, 3.5),
    (0.30, 4.0),
    (0.35, 17.0),
    (0.35, 5.5),
    (0.35, 17.0),
)


class StubAddressInUse(OSError):
    """TCP ``host:1337`` is taken (another stub or server listens there)."""


def robot_urdf(profile: ControllerProfile, robot: str) -> str:
    """The URDF ``GetRobotModel`` returns: the profile's joint limits, as libfranka parses them.

    libfranka reads ``<limit lower upper velocity>`` and ``<position_based_velocity_limits
    velocity_offset deceleration_limit>`` of joints whose names contain ``joint1`` ..
    ``joint7``. The FR3 gets libfranka's published parameters; the Panda, which has no
    position-based limit, a zero offset and its published acceleration as deceleration
    (the bound is then exactly "can still stop before the joint limit").
    """
    j = profile.limits.joint
    acc = profile.acceleration_limits() or [10.0] * profile.dof
    prefix = "fr3" if robot == "fr3" else "panda"
    joints = []
    for i in range(profile.dof):
        offset, decel = FR3_POSITION_BASED[i] if robot == "fr3" else (0.0, acc[i])
        joints.append(
            f'  <joint name="{prefix}_joint{i + 1}" type="revolute">\n'
            f'    <limit effort="{j.torque[i]}" lower="{j.position_min[i]}" '
            f'upper="{j.position_max[i]}" velocity="{j.velocity[i]}"/>\n'
            f'    <position_based_velocity_limits velocity_offset="{offset}" '
            f'deceleration_limit="{decel}"/>\n'
            "  </joint>\n"
        )
    return f'<?xml version="1.0"?>\n<robot name="{prefix}">\n{"".join(joints)}</robot>\n'


class FrankaStub:
    """libfranka's TCP command channel and 1 kHz UDP state stream over the controller core.

    Args:
        robot: ``"fr3"`` or ``"panda"`` (the profile is ``ROBOT_PROFILES[robot]``).
        host: address to listen on (TCP 1337; UDP on a free port of the same address).
        obstacles: static boxes in the plant.
        spin_us: busy-wait before each cycle (sleep does the rest).
        protocol_version: the version this stub claims to speak (default: 10).

    Raises:
        StubAddressInUse: ``host:1337`` is taken.
    """

    def __init__(
        self,
        robot: str,
        *,
        host: str = "127.0.0.1",
        obstacles: Sequence[Box] = (),
        spin_us: float = 200.0,
        protocol_version: int = fp.VERSION,
        profile: ControllerProfile | str | Path | None = None,
    ) -> None:
        self.robot = robot
        self.profile = coerce_profile(profile or ROBOT_PROFILES[robot])
        self.host = host
        self.version = protocol_version
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind((host, fp.COMMAND_PORT))
        except OSError as err:
            self.listener.close()
            if err.errno == errno.EADDRINUSE:
                raise StubAddressInUse(
                    f"{host}:{fp.COMMAND_PORT} is already in use (another stub or robot server "
                    "listens there): pick another --host, e.g. 127.0.0.2"
                ) from None
            raise
        self.listener.listen(1)
        self.listener.setblocking(False)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((host, 0))
        self.udp.setblocking(False)
        self.core = ControllerCore(self.profile)
        self.plant = PybulletPlant(self.profile, obstacles=obstacles)
        self.urdf = robot_urdf(self.profile, robot)
        self.spin_s = spin_us * 1e-6
        self.conn: socket.socket | None = None
        self.client_udp: tuple[str, int] | None = None
        self._rx = b""
        self._stop = False
        # motion bookkeeping
        self.move_id: int | None = None
        self.mg_mode = fp.MotionGeneratorMode.IDLE
        self.ctrl_mode = fp.ControllerMode.JOINT_IMPEDANCE
        self._first_cmd = False
        self._grace = 0
        self._window: deque[bool] = deque(maxlen=SUCCESS_WINDOW)
        self.success_rate = 0.0
        self.reflex_reason = np.zeros(fp.N_ERRORS, dtype=np.uint8)
        self._err_mask = -1
        self._err_wire = np.zeros(fp.N_ERRORS, dtype=np.uint8)
        # state message, constant parts set once
        self.message_id = 0
        self.sent_id: int | None = None
        self._buf = np.zeros(1, fp.STATE_DTYPE)
        # writable views into the one state message: assigning through them costs a
        # fraction of a structured-array field assignment (~70 us per cycle otherwise)
        self._v = {name: self._buf[name][0] for name in fp.STATE_DTYPE.names or ()}
        eye = np.eye(4).flatten(order="F")
        for name in ("F_T_EE", "EE_T_K", "F_T_NE", "NE_T_EE", "O_T_EE", "O_T_EE_d", "O_T_EE_c"):
            self._v[name][:] = eye
        self._v["O_ddP_O"][:] = (0.0, 0.0, -9.81)
        # statistics
        self.cycles = 0
        self.overruns = 0
        self.skipped_cycles = 0
        self.states_sent = 0
        self.lost_in_motion = 0
        self.lost_run = 0
        self.lost_run_max = 0
        self.motions = 0
        self.reflexes: list[list[str]] = []
        self.bad_messages = 0
        self._work_us: list[float] = []

    def stop(self) -> None:
        self._stop = True

    # -- TCP -----------------------------------------------------------------------------
    def _send_tcp(self, command: int, command_id: int, payload: bytes) -> None:
        if self.conn is None:
            return
        try:
            self.conn.sendall(fp.pack_message(command, command_id, payload))
        except OSError:
            self._drop_client()

    def _drop_client(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self.client_udp = None
        self._rx = b""
        # a motion keeps running: the client's commands stop, and the lost-cycle rule
        # stops the robot 20 cycles later, as on FCI

    def _poll_tcp(self) -> None:
        ready, _, _ = select.select([self.conn or self.listener], [], [], 0)
        if not ready:
            return
        if self.conn is None:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conn = conn
        try:
            data = self.conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop_client()
            return
        if not data:
            self._drop_client()
            return
        self._rx += data
        while len(self._rx) >= fp.HEADER.size:
            command, command_id, size = fp.HEADER.unpack_from(self._rx)
            if size < fp.HEADER.size or size > 1 << 20:
                self.bad_messages += 1
                self._drop_client()
                return
            if len(self._rx) < size:
                return
            payload = self._rx[fp.HEADER.size : size]
            self._rx = self._rx[size:]
            self._handle(command, command_id, payload)
            if self.conn is None:
                return

    def _handle(self, command: int, command_id: int, payload: bytes) -> None:
        C = fp.Command
        ok = bytes([0])
        moving = self.move_id is not None
        if command == C.CONNECT:
            if len(payload) < fp.CONNECT_REQUEST.size:
                self.bad_messages += 1
                self._drop_client()
                return
            version, udp_port = fp.CONNECT_REQUEST.unpack_from(payload)
            status = fp.ConnectStatus.SUCCESS
            if version != self.version:
                status = fp.ConnectStatus.INCOMPATIBLE_LIBRARY_VERSION
            self._send_tcp(C.CONNECT, command_id, fp.CONNECT_RESPONSE.pack(status, self.version))
            if status == fp.ConnectStatus.SUCCESS and self.conn is not None:
                self.client_udp = (self.conn.getpeername()[0], udp_port)
        elif command == C.GET_ROBOT_MODEL:
            self._send_tcp(C.GET_ROBOT_MODEL, command_id, ok + self.urdf.encode())
        elif command == C.MOVE:
            self._start_motion(command_id, payload)
        elif command == C.STOP_MOVE:
            self._send_tcp(C.STOP_MOVE, command_id, ok)
            if moving:
                # FCI brings the arm to rest; the stub's velocity servo stops at once
                self.core.dq_d = np.zeros_like(self.core.dq_d)
                self.core.ddq_d = np.zeros_like(self.core.ddq_d)
                self.core.mode = RobotMode.IDLE
                self._end_motion(fp.MoveStatus.PREEMPTED)
        elif command == C.AUTOMATIC_ERROR_RECOVERY:
            if moving:
                self._send_tcp(command, command_id, bytes([1]))  # CommandNotPossibleRejected
                return
            self.core.recover()
            self.reflex_reason[:] = 0
            self._send_tcp(command, command_id, ok)
        elif command == C.SET_COLLISION_BEHAVIOR:
            self._send_tcp(command, command_id, bytes([self._set_collision(payload, moving)]))
        elif C.SET_JOINT_IMPEDANCE <= command <= C.SET_LOAD:
            # acknowledged, no effect on the plant; FCI refuses setters during a motion
            self._send_tcp(command, command_id, bytes([1 if moving else 0]))
        else:
            self.bad_messages += 1
            self._send_tcp(command, command_id, bytes([1]))

    def _set_collision(self, payload: bytes, moving: bool) -> int:
        """Status: 0 success, 1 not possible (moving), 2 invalid argument."""
        if moving:
            return 1
        if len(payload) < fp.COLLISION_REQUEST.size:
            return 2
        v = np.asarray(fp.COLLISION_REQUEST.unpack_from(payload), dtype=np.float64)
        tau = v[:28].reshape(4, 7)  # lower acc, upper acc, lower nominal, upper nominal
        force = v[28:].reshape(4, 6)
        if not np.isfinite(v).all() or (v < 0).any():
            return 2
        if (tau[0] > tau[1]).any() or (force[0] > force[1]).any():
            return 2
        # the stub has no acceleration phase: the upper thresholds "during acceleration"
        # are the reflex thresholds (the profile's [collision] plays the same role)
        self.core.tau_max = tau[1].copy()
        self.core.wrench_max = force[1].copy()
        return 0

    def _start_motion(self, command_id: int, payload: bytes) -> None:
        if len(payload) < fp.MOVE_REQUEST.size:
            self._send_tcp(
                fp.Command.MOVE, command_id, bytes([fp.MoveStatus.INVALID_ARGUMENT_REJECTED])
            )
            return
        ctrl, mg = fp.MOVE_REQUEST.unpack_from(payload)[:2]
        reject = None
        if self.move_id is not None or self.core.mode is not RobotMode.IDLE:
            reject = fp.MoveStatus.COMMAND_NOT_POSSIBLE_REJECTED
        elif mg != fp.MoveMotionGeneratorMode.JOINT_VELOCITY or ctrl not in (
            fp.MoveControllerMode.JOINT_IMPEDANCE,
            fp.MoveControllerMode.CARTESIAN_IMPEDANCE,
        ):
            # this stub's plant is velocity-servoed: only the joint velocity interface
            reject = fp.MoveStatus.INVALID_ARGUMENT_REJECTED
        if reject is not None:
            self._send_tcp(fp.Command.MOVE, command_id, bytes([reject]))
            return
        self.move_id = command_id
        self.motions += 1
        self.mg_mode = fp.MotionGeneratorMode.JOINT_VELOCITY
        self.ctrl_mode = fp.ControllerMode(ctrl)
        self.core.mode = RobotMode.MOVE
        self.core.lost_consecutive = 0
        self._first_cmd = False
        self._grace = 0
        # a full window of successes: the rate starts at 1 and a loss early in the motion
        # weighs as much as a later one
        self._window.extend([True] * SUCCESS_WINDOW)
        self.success_rate = 1.0
        self._send_tcp(fp.Command.MOVE, command_id, bytes([fp.MoveStatus.MOTION_STARTED]))

    def _end_motion(self, status: fp.MoveStatus) -> None:
        move_id = self.move_id
        self.move_id = None
        self.mg_mode = fp.MotionGeneratorMode.IDLE
        if status == fp.MoveStatus.REFLEX_ABORTED:
            self.reflex_reason = self._wire_errors().copy()
            self.reflexes.append(fp.error_names(self.reflex_reason))
        if move_id is not None:
            self._send_tcp(fp.Command.MOVE, move_id, bytes([status]))

    def _wire_errors(self) -> np.ndarray:
        mask = self.core.errors
        if mask != self._err_mask:
            self._err_mask = mask
            names = [n for n in mask_to_flags(mask) if n in fp.ERROR_INDEX]
            self._err_wire = fp.errors_array(names)
        return self._err_wire

    # -- UDP -----------------------------------------------------------------------------
    def _drain_udp(self) -> np.void | None:
        newest: np.void | None = None
        while True:
            try:
                data = self.udp.recv(4096)
            except (BlockingIOError, InterruptedError):
                return newest
            except OSError:
                return newest
            if len(data) != fp.COMMAND_DTYPE.itemsize:
                self.bad_messages += 1
                continue
            cmd = np.frombuffer(data, fp.COMMAND_DTYPE)[0]
            if newest is None or int(cmd["message_id"]) >= int(newest["message_id"]):
                newest = cmd

    def _command_cycle(self, raw: np.void | None, now: float) -> None:
        """Feed this cycle's command (or its absence) to the controller core during a motion."""
        if self.move_id is None:
            return
        answered = (
            raw is not None and self.sent_id is not None and int(raw["message_id"]) == self.sent_id
        )
        if raw is not None:
            self._first_cmd = True
        if not self._first_cmd:
            self._grace += 1
            if self._grace < FIRST_COMMAND_GRACE:
                return
        cmd = None
        if raw is not None:
            flags = CommandFlag.FINISH if raw["motion_generation_finished"] else CommandFlag.NONE
            mid = int(raw["message_id"])
            cmd = CoreCommand(mid, 0, mid, flags, 0.0, np.array(raw["dq_c"], dtype=np.float64))
        self._window.append(answered)
        self.success_rate = sum(self._window) / len(self._window)
        if answered:
            self.lost_run = 0
        else:
            self.lost_in_motion += 1
            self.lost_run += 1
            self.lost_run_max = max(self.lost_run_max, self.lost_run)
        self.core.command(cmd, now, last_state_seq=self.sent_id)
        self._after_core()

    def _after_core(self) -> None:
        if self.move_id is None:
            return
        if self.core.stopped:
            self._end_motion(fp.MoveStatus.REFLEX_ABORTED)
        elif self.core.mode is RobotMode.IDLE:
            self._end_motion(fp.MoveStatus.SUCCESS)

    def _send_state(self, ps: PlantState, ee_rot: np.ndarray) -> None:
        if self.client_udp is None:
            return
        v, c, buf = self._v, self.core, self._buf
        buf["message_id"] = self.message_id
        t = v["O_T_EE"]
        t[:3], t[4:7], t[8:11] = ee_rot[:, 0], ee_rot[:, 1], ee_rot[:, 2]  # column-major
        t[12:15] = ps.ee_pos
        v["O_T_EE_d"][:] = t
        v["O_T_EE_c"][:] = t
        for name in ("q", "q_d", "theta"):
            v[name][:] = ps.q
        v["dq"][:] = ps.dq
        v["dtheta"][:] = ps.dq
        v["dq_d"][:] = c.dq_d
        v["ddq_d"][:] = c.ddq_d
        v["tau_ext_hat_filtered"][:] = ps.tau_ext
        v["O_F_ext_hat_K"][:] = ps.wrench
        v["joint_contact"][:] = np.abs(ps.tau_ext) > 0.5 * c.tau_max
        v["joint_collision"][:] = np.abs(ps.tau_ext) > c.tau_max
        v["elbow"][:] = (ps.q[2], -1.0)
        buf["motion_generator_mode"] = self.mg_mode
        buf["controller_mode"] = self.ctrl_mode
        v["errors"][:] = self._wire_errors()
        v["reflex_reason"][:] = self.reflex_reason
        mode = c.mode if c.mode <= RobotMode.AUTOMATIC_ERROR_RECOVERY else RobotMode.OTHER
        buf["robot_mode"] = mode
        buf["control_command_success_rate"] = self.success_rate
        try:
            self.udp.sendto(buf.tobytes(), self.client_udp)
            self.states_sent += 1
            self.sent_id = self.message_id
        except OSError:
            pass  # the client's port is gone; its silence is what the lost-cycle rule sees

    def _ee_rotation(self) -> np.ndarray:
        import pybullet as pb

        orn = pb.getLinkState(self.plant.robot, self.plant.ee, physicsClientId=self.plant.cid)[5]
        return np.asarray(pb.getMatrixFromQuaternion(orn)).reshape(3, 3)

    # -- loop ----------------------------------------------------------------------------
    def run(self, seconds: float | None = None) -> None:
        """The controller cycle at the profile's rate until :meth:`stop` or ``seconds``."""
        dt = self.profile.dt
        ps = self.plant.read()
        rot = self._ee_rotation()
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
                # the stub itself woke up late: step the plant by the elapsed cycles and
                # count them as one communication cycle (its hiccup is not the client's loss)
                n = 1 + int(late / dt)
                self.overruns += 1
                self.skipped_cycles += n - 1
            t_next += n * dt
            # FCI's order: the state leaves at the start of the cycle (the command that
            # answered the last one already applied), the physics of the coming
            # millisecond runs after it, so the client gets the whole cycle to answer
            self._poll_tcp()
            self._command_cycle(self._drain_udp(), now)
            self.core.observe(ps)
            self._after_core()
            self.message_id += n
            self._send_state(ps, rot)
            self.plant.step(self.core.target, n)
            ps = self.plant.read()
            rot = self._ee_rotation()
            self.cycles += 1
            self._work_us.append((time.perf_counter() - now) * 1e6)

    def stats(self) -> dict[str, object]:
        a = np.asarray(self._work_us) if self._work_us else np.zeros(1)
        return {
            "robot": self.robot,
            "profile": self.profile.name,
            "protocol_version": self.version,
            "cycles": self.cycles,
            "overruns": self.overruns,
            "skipped_cycles": self.skipped_cycles,
            "work_us": {
                "p50": round(float(np.percentile(a, 50)), 1),
                "p99": round(float(np.percentile(a, 99)), 1),
                "max": round(float(a.max()), 1),
            },
            "states_sent": self.states_sent,
            "motions": self.motions,
            "commands_applied": self.core.commands_applied,
            "commands_rejected": self.core.commands_rejected,
            "lost_in_motion": self.lost_in_motion,
            "lost_run_max": self.lost_run_max,
            "control_command_success_rate": round(self.success_rate, 4),
            "reflexes": self.reflexes,
            "bad_messages": self.bad_messages,
            "mode": self.core.mode.name,
        }

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()
        self.udp.close()
        self.plant.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``safebot stub``: run a Franka stub in this process until SIGTERM / Ctrl-C."""
    ap = argparse.ArgumentParser(
        prog="python -m safebot.deploy.franka.stub", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--robot", choices=sorted(ROBOT_PROFILES), default="fr3")
    ap.add_argument("--host", default="127.0.0.1", help="address for TCP 1337 (e.g. 127.0.0.2)")
    ap.add_argument(
        "--obstacle", action="append", default=[], type=Box.parse, metavar="X,Y,Z,HX,HY,HZ"
    )
    ap.add_argument("--seconds", type=float, default=None, help="exit after this long")
    ap.add_argument("--spin-us", type=float, default=200.0, help="busy-wait before each cycle")
    ap.add_argument("--realtime", action="store_true", help="SCHED_FIFO where permitted")
    ap.add_argument(
        "--protocol-version",
        type=int,
        default=fp.VERSION,
        help=f"claim this libfranka protocol version (default {fp.VERSION}; others test refusal)",
    )
    args = ap.parse_args(argv)
    return serve(
        args.robot,
        host=args.host,
        obstacles=args.obstacle,
        seconds=args.seconds,
        spin_us=args.spin_us,
        realtime=args.realtime,
        protocol_version=args.protocol_version,
    )


def serve(
    robot: str,
    *,
    host: str = "127.0.0.1",
    obstacles: Sequence[Box] = (),
    seconds: float | None = None,
    spin_us: float = 200.0,
    realtime: bool = False,
    protocol_version: int = fp.VERSION,
) -> int:
    """Run a stub until a signal (or ``seconds``); a taken address is one line and exit code 2."""
    try:
        stub = FrankaStub(
            robot,
            host=host,
            obstacles=obstacles,
            spin_us=spin_us,
            protocol_version=protocol_version,
        )
    except (StubAddressInUse, OSError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2

    def _on_signal(signum: int, frame: object) -> None:
        stub.stop()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    rt = realtime and enter_realtime() is not None
    print(
        f"{READY_PREFIX} host={host} port={fp.COMMAND_PORT} robot={robot} "
        f"profile={stub.profile.name} version={protocol_version} realtime={int(rt)}",
        flush=True,
    )
    try:
        stub.run(seconds)
    finally:
        print(f"{STATS_PREFIX} {json.dumps(stub.stats())}", flush=True)
        stub.close()
    return 0


class FrankaStubError(RuntimeError):
    """A stub process did not start (its one-line reason is the message)."""


class FrankaStubProcess(StubChild):
    """A Franka stub in its own process; a context manager that always ends it.

    pylibfranka's connect holds the GIL inside C++, so the server must never be a thread
    of the client's process.

    Example:
        >>> with FrankaStubProcess("fr3", host="127.0.0.2") as stub:
        ...     report = run_loop("franka_fr3", policy, 2.0, host=stub.host)
    """

    stats_prefix = STATS_PREFIX

    def __init__(
        self,
        robot: str,
        *,
        host: str = "127.0.0.1",
        obstacles: Sequence[Box] = (),
        realtime: bool = False,
        protocol_version: int = fp.VERSION,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.robot = robot
        self.host = host
        cmd = [sys.executable, "-m", "safebot.deploy.franka.stub", "--robot", robot, "--host", host]
        for b in obstacles:
            cmd += ["--obstacle", ",".join(f"{v:g}" for v in (*b.center, *b.half_extents))]
        if realtime:
            cmd.append("--realtime")
        if protocol_version != fp.VERSION:
            cmd += ["--protocol-version", str(protocol_version)]
        self._stderr = tempfile.TemporaryFile()
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, "1")  # no BLAS threads competing with the client
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env
        )
        self.stats: dict[str, object] | None = None
        self.realtime = False
        self._await_ready(start_timeout_s)

    def _await_ready(self, timeout_s: float) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith(READY_PREFIX):
                    fields = dict(kv.split("=", 1) for kv in line.split()[3:])
                    self.realtime = fields.get("realtime") == "1"
                    return
                if not line and self.proc.poll() is not None:
                    break
            elif self.proc.poll() is not None:
                break
        self.kill()
        lines = [ln for ln in self.stderr_text().splitlines() if ln.strip()]
        self.terminate()
        why = lines[-1].removeprefix("error: ") if lines else "no READY line"
        raise FrankaStubError(f"the {self.robot} stub on {self.host} did not start: {why}")


def spawn_on_free_loopback(
    robot: str, *, obstacles: Sequence[Box] = (), realtime: bool = False, tries: int = 8
) -> FrankaStubProcess:
    """A stub process on a random ``127.x.y.z`` whose port 1337 is free.

    libfranka always connects to port 1337, so stubs side by side need their own
    addresses; a random one keeps clear of other users' stubs on the same machine.

    Raises:
        FrankaStubError: no stub started (the last reason).
    """
    import random

    rng = random.Random()
    last: FrankaStubError | None = None
    for _ in range(tries):
        host = f"127.{rng.randint(1, 254)}.{rng.randint(1, 254)}.{rng.randint(2, 254)}"
        try:
            return FrankaStubProcess(robot, host=host, obstacles=obstacles, realtime=realtime)
        except FrankaStubError as err:
            last = err
            if "in use" not in str(err):
                break
    raise last or FrankaStubError("no stub started")


if __name__ == "__main__":
    raise SystemExit(main())
