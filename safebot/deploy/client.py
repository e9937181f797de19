"""The deploy client: runs a policy against a controller (stub) at the controller's rate.

Each cycle: wait for the newest STATE -> ``policy(state)`` -> optional
``safety_filter(state, qd)`` (the shield hook) -> rate limiting to the
profile's velocity / acceleration / jerk limits (libfranka ``limitRate``
semantics, relative to the controller's reported ``dq_d`` / ``ddq_d``) -> send
the COMMAND. On a controller fault, a lost controller, a non-finite or failing
policy, the loop stops safely (ramps the command to zero within the limits
where the controller is still listening), and the returned
:class:`DeployReport` says why (``ok`` is False, ``exit_code`` non-zero).

Example:
    >>> with StubProcess("franka_fr3") as stub:
    ...     report = run_loop("franka_fr3", lambda s: np.zeros(7), 1.0, port=stub.port)
    >>> report.ok, report.compute_us["p99"]
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from safebot.deploy.profiles import ControllerProfile, coerce_profile
from safebot.deploy.protocol import (
    Command,
    CommandFlag,
    MsgType,
    ProtocolError,
    RobotMode,
    RobotState,
    pack_command,
    pack_control,
    seq_next,
    unpack,
)
from safebot.deploy.ratelimit import FloatArray, NonFiniteCommand, RateLimiter
from safebot.deploy.report import EXIT_CODES, DeployReport, ExitReason, percentiles
from safebot.deploy.rt import enter_realtime

__all__ = [
    "EXIT_CODES",
    "DeployReport",
    "ExitReason",
    "FaultInjection",
    "RobotState",
    "probe_state",
    "run_loop",
]

Policy = Callable[[RobotState], FloatArray]
SafetyFilter = Callable[[RobotState, FloatArray], FloatArray]
SuccessFn = Callable[[RobotState], bool]

#: velocity (rad/s) below which a ramped-down command counts as stopped
STOP_TOLERANCE = 1e-3


@dataclass(frozen=True)
class FaultInjection:
    """Deliberate misbehaviour for tests (all cycle indices count commands computed).

    Attributes:
        drop_sends: ``(first_cycle, count)``: compute but do not send these commands,
            as if the network lost them.
        delay_send: ``(cycle, seconds)``: hold that command back before sending it,
            as a network latency spike would (it then answers an old state).
    """

    drop_sends: tuple[int, int] | None = None
    delay_send: tuple[int, float] | None = None


class MaxTracker:
    """Largest commanded value per kind, by ratio to its limit."""

    def __init__(self, profile: ControllerProfile) -> None:
        acc = profile.acceleration_limits()
        jerk = profile.jerk_limits()
        self.limits: dict[str, FloatArray | None] = {
            "velocity": np.asarray(profile.limits.joint.velocity, dtype=np.float64),
            "acceleration": None if acc is None else np.asarray(acc, dtype=np.float64),
            "jerk": None if jerk is None else np.asarray(jerk, dtype=np.float64),
        }
        self.best: dict[str, list[float | None]] = {k: [0.0, None] for k in self.limits}
        self._ratio = dict.fromkeys(self.limits, -1.0)
        self.dt = profile.dt

    def update(self, qd: FloatArray, state: RobotState) -> None:
        acc = (qd - state.dq_d) / self.dt
        vals = {"velocity": qd, "acceleration": acc, "jerk": (acc - state.ddq_d) / self.dt}
        for kind, v in vals.items():
            lim = self.limits[kind]
            mag = np.abs(v)
            ratio = mag if lim is None else mag / lim
            i = int(np.argmax(ratio))
            if ratio[i] > self._ratio[kind]:
                self._ratio[kind] = float(ratio[i])
                self.best[kind] = [float(mag[i]), None if lim is None else float(lim[i])]


class _Link:
    """The UDP socket to one controller, with sequence numbers and newest-state reads."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect((host, port))
        self.sock.setblocking(False)
        self.seq = 0
        self.skipped = 0
        self.refused = False

    def send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError:
            self.refused = True  # ICMP port unreachable: nobody listens any more

    def control(self, kind: MsgType) -> None:
        self.seq = seq_next(self.seq)
        self.send(pack_control(kind, self.seq, time.perf_counter_ns()))

    def command(
        self, state_seq: int, qd: FloatArray, flags: CommandFlag, accel: float = 0.0
    ) -> None:
        self.seq = seq_next(self.seq)
        cmd = Command(self.seq, time.perf_counter_ns(), state_seq, flags, accel, qd)
        self.send(pack_command(cmd))

    def _drain(self) -> RobotState | None:
        newest: RobotState | None = None
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return newest
            except OSError:
                self.refused = True
                return newest
            try:
                msg = unpack(data)
            except ProtocolError:
                continue
            if isinstance(msg, RobotState):
                if newest is not None:
                    self.skipped += 1
                newest = msg

    def newest_state(self, timeout_s: float) -> RobotState | None:
        """The newest state, waiting up to ``timeout_s`` for one; older ones are skipped."""
        deadline = time.perf_counter() + timeout_s
        while True:
            state = self._drain()
            if state is not None or self.refused:
                return state
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            select.select([self.sock], [], [], left)

    def pending(self) -> bool:
        ready, _, _ = select.select([self.sock], [], [], 0)
        return bool(ready)

    def close(self) -> None:
        self.sock.close()


def probe_state(port: int, *, host: str = "127.0.0.1", timeout_s: float = 2.0) -> RobotState | None:
    """One state from a controller (HELLO, read, BYE) without commanding it.

    The HELLO takes the state stream over: do not probe a controller while a
    client is running against it.
    """
    link = _Link(host, port)
    try:
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            link.control(MsgType.HELLO)
            state = link.newest_state(0.05)
            if state is not None:
                return state
        return None
    finally:
        link.control(MsgType.BYE)
        link.close()


class _Run:
    def __init__(
        self,
        profile: ControllerProfile,
        link: _Link,
        seconds: float,
        stub_timeout_s: float,
        inject: FaultInjection | None,
        rate_limit: bool,
    ) -> None:
        self.profile = profile
        self.link = link
        self.limiter = RateLimiter(profile)
        self.tracker = MaxTracker(profile)
        self.speedj = profile.interface == "speedj"
        self.accel = profile.speedj.acceleration if profile.speedj else 0.0
        self.stub_timeout_s = stub_timeout_s
        self.inject = inject
        self.rate_limit = rate_limit
        self.report = DeployReport(profile.name, profile.rate_hz, seconds, "completed", "")
        self.compute_us: list[float] = []
        self.response_us: list[float] = []
        self.last: RobotState | None = None
        self.lost0 = 0
        self.overruns0 = 0

    def _end(self, reason: ExitReason, message: str) -> None:
        self.report.exit_reason = reason
        self.report.message = message

    def _send(
        self, state: RobotState, qd: FloatArray, flags: CommandFlag = CommandFlag.NONE
    ) -> None:
        self.tracker.update(qd, state)
        self.link.command(state.seq, qd, flags, self.accel)

    def _fault_message(self, state: RobotState, when: str) -> str:
        return (
            f"controller raised {', '.join(state.faults)} {when}; "
            f"mode {state.mode.name}, motion stopped by the controller"
        )

    def connect(self, timeout_s: float, recover: bool) -> RobotState | None:
        deadline = time.perf_counter() + timeout_s
        state = None
        while state is None and time.perf_counter() < deadline:
            self.link.control(MsgType.HELLO)
            state = self.link.newest_state(0.05)
        if state is None:
            self._end(
                "connect_failed", f"no state from 127.0.0.1:{self.link.sock.getpeername()[1]}"
            )
            return None
        if state.errors and recover:
            while state is not None and state.errors and time.perf_counter() < deadline:
                self.link.command(state.seq, np.zeros(state.dof), CommandFlag.RECOVER)
                state = self.link.newest_state(0.05)
            if state is None:
                self._end("stub_lost", "controller stopped answering during error recovery")
                return None
        if state.errors:
            self.report.faults = state.faults
            self._end(
                "fault", self._fault_message(state, "before the run (pass recover=True to clear)")
            )
            return None
        if state.dof != self.profile.dof:
            self._end(
                "connect_failed",
                f"controller reports {state.dof} joints, profile {self.profile.name} has {self.profile.dof}",
            )
            return None
        self.link.skipped = 0
        self.lost0, self.overruns0 = state.lost_total, state.overruns
        return state

    def main_phase(
        self,
        policy: Policy,
        safety_filter: SafetyFilter | None,
        seconds: float,
    ) -> bool:
        """Runs the policy; returns whether a safe-stop ramp should follow."""
        t_end = time.perf_counter() + seconds
        inj = self.inject or FaultInjection()
        drop_from, drop_n = inj.drop_sends or (-1, 0)
        delay_at, delay_s = inj.delay_send or (-1, 0.0)
        cycle = 0
        while True:
            state = self.link.newest_state(self.stub_timeout_s)
            if state is None:
                self._end("stub_lost", self._lost_message())
                return False
            self.last = state
            if state.errors:
                self.report.faults = state.faults
                self._end("fault", self._fault_message(state, f"at cycle {cycle}"))
                return False
            if time.perf_counter() >= t_end:
                return True
            t0 = time.perf_counter_ns()
            try:
                qd = np.asarray(policy(state), dtype=np.float64)
                if qd.shape != (state.dof,):
                    raise ValueError(f"policy returned shape {qd.shape}, expected ({state.dof},)")
                if safety_filter is not None and np.isfinite(qd).all():
                    qd = np.asarray(safety_filter(state, qd), dtype=np.float64)
                    if qd.shape != (state.dof,):
                        raise ValueError(f"safety filter returned shape {qd.shape}")
                if self.rate_limit:
                    qd = self.limiter(qd, state.dq_d, state.ddq_d)
                elif not np.isfinite(qd).all():
                    raise NonFiniteCommand("policy output is not finite")
            except NonFiniteCommand:
                self._end(
                    "nonfinite_command",
                    f"policy/filter output was NaN or inf at cycle {cycle}; nothing of it was sent",
                )
                return True
            except Exception as err:  # stop the robot first, explain after
                self._end(
                    "policy_error",
                    f"policy/filter failed at cycle {cycle}: {type(err).__name__}: {err}",
                )
                return True
            if self.link.pending():
                # a newer state arrived while computing: this command is stale
                # and would be judged against the wrong dq_d; let the controller
                # extrapolate and answer the newest state instead.
                self.link.skipped += 1
                continue
            if cycle == delay_at:
                time.sleep(delay_s)
            if drop_from <= cycle < drop_from + drop_n:
                self.report.sends_dropped += 1
                self.tracker.update(qd, state)
            else:
                self._send(state, qd)
            t1 = time.perf_counter_ns()
            self.compute_us.append((t1 - t0) / 1e3)
            self.response_us.append((t1 - state.t_ns) / 1e3)
            cycle += 1
            self.report.cycles = cycle

    def _lost_message(self) -> str:
        return (
            f"no state from the controller for {self.stub_timeout_s * 1e3:.0f} ms "
            f"(connection {'refused' if self.link.refused else 'silent'}); stopped commanding"
        )

    def stop_phase(self, timeout_s: float) -> None:
        """Ramp the command to zero within the limits, then end the motion (FINISH)."""
        deadline = time.perf_counter() + timeout_s
        zero = np.zeros(self.profile.dof)
        while time.perf_counter() < deadline:
            state = self.link.newest_state(self.stub_timeout_s)
            if state is None:
                if self.report.exit_reason == "completed":
                    self._end("stub_lost", self._lost_message() + " (during the stop ramp)")
                return
            self.last = state
            if state.errors:
                self.report.faults = state.faults
                if self.report.exit_reason == "completed":
                    self._end("fault", self._fault_message(state, "during the stop ramp"))
                return
            if state.mode is RobotMode.IDLE and not np.any(state.dq_d):
                return
            qd = self.limiter(zero, state.dq_d, state.ddq_d)
            done = float(np.max(np.abs(qd))) < STOP_TOLERANCE and (
                not self.speedj or float(np.max(np.abs(state.dq_d))) < STOP_TOLERANCE
            )
            if done:
                qd = zero if self.speedj else qd
            self._send(state, qd, CommandFlag.FINISH if done else CommandFlag.NONE)
            self.report.stop_cycles += 1
            if done:
                # let the FINISH land: the controller reports Idle within a few cycles
                for _ in range(20):
                    after = self.link.newest_state(self.stub_timeout_s)
                    if after is None:
                        break
                    self.last = after
                    if after.mode is not RobotMode.MOVE:
                        break
                return
        if self.report.exit_reason == "completed":
            self._end("fault", f"could not ramp to a stop within {timeout_s} s")

    def finish(self, success_fn: SuccessFn | None, t_start: float) -> DeployReport:
        r = self.report
        r.duration_s = round(time.perf_counter() - t_start, 4)
        r.compute_us = percentiles(self.compute_us)
        r.response_us = percentiles(self.response_us)
        r.max_commanded = self.tracker.best
        r.states_skipped = self.link.skipped
        if self.last is not None:
            r.missed_deadlines = self.last.lost_total - self.lost0
            r.stub_overruns = self.last.overruns - self.overruns0
            r.final_mode = self.last.mode.name
            if success_fn is not None and r.exit_reason == "completed":
                r.success = bool(success_fn(self.last))
        if r.exit_reason == "completed" and not r.message:
            r.message = f"ran {r.cycles} cycles at {self.profile.rate_hz:g} Hz, stopped cleanly"
        return r


def run_loop(
    profile: ControllerProfile | str | Path,
    policy: Policy,
    seconds: float,
    *,
    port: int,
    host: str = "127.0.0.1",
    safety_filter: SafetyFilter | None = None,
    success_fn: SuccessFn | None = None,
    recover: bool = False,
    stub_timeout_s: float | None = None,
    connect_timeout_s: float = 5.0,
    stop_timeout_s: float = 3.0,
    rate_limit: bool = True,
    realtime: bool = False,
    inject: FaultInjection | None = None,
) -> DeployReport:
    """Run ``policy`` against the controller at ``host:port`` for ``seconds``.

    Args:
        profile: controller profile (model, path or shipped name); must match the controller.
        policy: ``policy(state) -> qd``, joint velocities (rad/s), shape ``(dof,)``.
        seconds: how long to run the policy before the stop ramp.
        port: the controller's UDP port on ``host``.
        safety_filter: ``filter(state, qd) -> qd`` applied before rate limiting (the shield).
        success_fn: ``success_fn(state) -> bool`` on the last state of a completed run.
        recover: clear latched controller errors before starting (automatic error
            recovery / unlock protective stop); without it a faulted controller
            ends the run at once.
        stub_timeout_s: silence after which the controller counts as lost;
            default: the profile's tolerance (20 cycles / watchdog), at least 0.1 s.
        stop_timeout_s: longest stop ramp.
        rate_limit: ``False`` sends the policy's (filtered) output unlimited, for
            comparisons that show what the controller does with a naive policy.
            NaN / inf is still never sent.
        realtime: run the loop under SCHED_FIFO (restored afterwards) where
            permitted; ``report.realtime`` says whether it was.
        inject: deliberate faults for tests.

    Returns:
        The :class:`DeployReport`; ``report.ok`` is False and ``report.exit_code``
        non-zero on any fault, lost controller, or bad policy output.
    """
    prof = coerce_profile(profile)
    timeout = stub_timeout_s if stub_timeout_s is not None else max(prof.tolerance_s(), 0.1)
    link = _Link(host, port)
    restore = enter_realtime() if realtime else None
    t_start = time.perf_counter()
    run = _Run(prof, link, seconds, timeout, inject, rate_limit)
    run.report.realtime = restore is not None
    try:
        if run.connect(connect_timeout_s, recover) is not None:
            ramp = run.main_phase(policy, safety_filter, seconds)
            if ramp:
                run.stop_phase(stop_timeout_s)
        return run.finish(success_fn, t_start)
    finally:
        link.control(MsgType.BYE)
        link.close()
        if restore is not None:
            restore()
