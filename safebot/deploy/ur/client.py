"""The UR deploy client: a policy through ur_rtde 1.6.5 ``speedJ`` at the controller's rate.

Same contract as :func:`safebot.deploy.franka.client.run_loop`: ``policy(state) -> qd``
with :class:`~safebot.deploy.state.RobotState` built from the RTDE receive
data, the optional shield hook, the profile's rate limiting, and a
:class:`~safebot.deploy.report.DeployReport` with the same fields and exit codes.

Each cycle (``initPeriod`` ... ``waitPeriod`` at 500 Hz): read the newest RTDE
state -> fault checks -> ``policy`` -> ``safety_filter`` -> rate limiting to the
joint speed limit and the speedJ acceleration, relative to the controller's
``target_qd`` / ``target_qdd`` -> ``speedJ(qd, a, dt)``. The RTDE watchdog is
armed (``setWatchdog``, the profile's ``communication.watchdog_s``) before the
first command, so a stalled or vanished client stops the arm on the controller.

Faults, from the fields a real UR fills:

* ``safety_status_bits`` bit 2 (protective stop) or bits 5-7 (emergency stop):
  the controller has already stopped the arm; the client sends ``speedStop``,
  names the stop (and the likely cause it can see: a command above the joint
  speed limit, a joint at its limit, a contact force) and ends;
* ``runtime_state`` not PLAYING / ``robot_status_bits`` bit 1 clear: the control
  script stopped (the RTDE watchdog after a client stall, or the pendant);
* RTDE connection lost, or ``timestamp`` frozen for ``stub_timeout_s``: stop
  commanding (nothing more can reach the arm; its watchdog stops it).

Reconnect policy: none inside a run. A lost connection ends the run
(``stub_lost``); a new ``run_loop`` connects afresh. ``recover=True`` unlocks a
protective stop over the dashboard (UR allows it 5 s after the stop) before the
run; an emergency stop is never cleared remotely.

ur_rtde prints its own diagnostics on the process's stdout / stderr; the
client captures them during the run (``capture_output``) and quotes the last
one in the report message, so the user sees one line.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from safebot.deploy.loop import (
    STOP_TOLERANCE,
    FaultInjection,
    MaxTracker,
    Policy,
    SafetyFilter,
    SuccessFn,
    policy_command,
)
from safebot.deploy.profiles import ControllerProfile, coerce_profile
from safebot.deploy.ratelimit import FloatArray, NonFiniteCommand, RateLimiter
from safebot.deploy.report import DeployReport, ExitReason, percentiles
from safebot.deploy.rt import enter_realtime
from safebot.deploy.state import RobotMode, RobotState, flags_to_mask
from safebot.deploy.ur import rtde

__all__ = ["DeployReport", "run_loop"]

#: speedStop deceleration (rad/s²) once the ramp has reached ~0
STOP_DECELERATION = 2.0
#: UR refuses "unlock protective stop" until 5 s after the stop; recover waits this long
UNLOCK_WAIT_S = 5.5
#: the RTDE variables the receive interface asks for (the fewer, the cheaper per cycle)
RECEIVE_VARIABLES = [
    "timestamp",
    "actual_q",
    "actual_qd",
    "target_qd",
    "target_qdd",
    "actual_TCP_pose",
    "actual_TCP_force",
    "robot_mode",
    "safety_mode",
    "runtime_state",
    "robot_status_bits",
    "safety_status_bits",
]
_EMERGENCY_BITS = (
    (1 << rtde.SAFETY_BITS["system_emergency_stopped"])
    | (1 << rtde.SAFETY_BITS["robot_emergency_stopped"])
    | (1 << rtde.SAFETY_BITS["emergency_stopped"])
)
_PROTECTIVE_BIT = 1 << rtde.SAFETY_BITS["protective_stopped"]
_OTHER_SAFETY = {
    "safeguard_stopped": "safeguard_stop",
    "violation": "safety_violation",
    "fault": "safety_fault",
}


class _FdCapture:
    """Route fds 1 and 2 (where ur_rtde's C++ code prints) into a temp file."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._tmp: Any = None
        self._saved: list[int] = []
        self._text = ""

    def __enter__(self) -> _FdCapture:
        if self.enabled:
            self._tmp = tempfile.TemporaryFile()
            self._saved = [os.dup(1), os.dup(2)]
            for fd in (1, 2):
                os.dup2(self._tmp.fileno(), fd)
        return self

    def _read(self) -> str:
        if self._tmp is None:
            return self._text
        fd = self._tmp.fileno()
        # pread: the shared file offset (where ur_rtde writes) must not move
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def lines(self) -> list[str]:
        """What ur_rtde printed so far, one stripped line each (pybullet's banner left out)."""
        text = self._read()
        return [
            ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("pybullet")
        ]

    def __exit__(self, *exc: object) -> None:
        if self._tmp is None:
            return
        self._text = self._read()
        for fd, old in zip((1, 2), self._saved, strict=True):
            os.dup2(old, fd)
            os.close(old)
        self._tmp.close()
        self._tmp = None


class _Session:
    """ur_rtde's receive and control interfaces for one run."""

    def __init__(self, host: str, rate_hz: float) -> None:
        import rtde_control
        import rtde_receive

        self.host = host
        self.r: Any = rtde_receive.RTDEReceiveInterface(host, rate_hz, RECEIVE_VARIABLES)
        self.c: Any = None
        self._control = rtde_control
        self.rate_hz = rate_hz

    def start_control(self) -> None:
        self.c = self._control.RTDEControlInterface(
            self.host, self.rate_hz, self._control.RTDEControlInterface.FLAG_UPLOAD_SCRIPT
        )

    def connected(self) -> bool:
        try:
            ok = bool(self.r.isConnected())
            return ok and (self.c is None or bool(self.c.isConnected()))
        except RuntimeError:
            return False

    def close(self) -> None:
        for iface in (self.c, self.r):
            if iface is None:
                continue
            with contextlib.suppress(Exception):
                iface.disconnect()


class _Run:
    def __init__(
        self,
        profile: ControllerProfile,
        host: str,
        seconds: float,
        stub_timeout_s: float,
        inject: FaultInjection | None,
        rate_limit: bool,
    ) -> None:
        self.profile = profile
        self.host = host
        self.dt = profile.dt
        self.limiter = RateLimiter(profile)
        self.tracker = MaxTracker(profile)
        assert profile.speedj is not None
        self.accel = profile.speedj.acceleration
        self.v_max = np.asarray(profile.limits.joint.velocity, dtype=np.float64)
        self.q_min = np.asarray(profile.limits.joint.position_min, dtype=np.float64)
        self.q_max = np.asarray(profile.limits.joint.position_max, dtype=np.float64)
        self.f_max = np.asarray([*profile.collision.force, *profile.collision.moment])
        self.watchdog_s = profile.communication.watchdog_s
        self.stub_timeout_s = stub_timeout_s
        self.inject = inject
        self.rate_limit = rate_limit
        # the cycle's rate limiter (policy_command's `limit`); None: commands go out as computed
        self._limit = self._limit_rate if rate_limit else None
        self.report = DeployReport(profile.name, profile.rate_hz, seconds, "completed", "")
        self.report.client = f"ur_rtde {importlib.metadata.version('ur_rtde')}"
        self.s: _Session | None = None
        self.compute_us: list[float] = []
        self.sent_ns: list[int] = []
        self.sent_stamp: list[float] = []
        self.last: RobotState | None = None
        self.last_cmd: FloatArray = np.zeros(profile.dof)
        self.last_send = 0.0
        self.prev_k: int | None = None
        self.lost = 0
        self.longest_lost = 0
        self.duplicates = 0
        self.seq = 0
        self.ur_log = _FdCapture(False)
        self.longest_gap = 0.0
        self.speedj_us: list[float] = []

    # -- helpers ---------------------------------------------------------------------------
    def _limit_rate(self, state: RobotState, qd: FloatArray) -> FloatArray:
        """libfranka-style ``limitRate`` against the controller's last command."""
        return self.limiter(qd, state.dq_d, state.ddq_d)

    def end(self, reason: ExitReason, message: str) -> None:
        self.report.exit_reason = reason
        self.report.message = message

    def _read(self) -> tuple[RobotState, dict[str, int]] | None:
        """The newest RTDE state as a RobotState, plus the raw status words."""
        assert self.s is not None
        r = self.s.r
        try:
            # each getter reads the newest packet of ur_rtde's receive thread: a packet that
            # lands between two getters tears q from the TCP pose (1.2e-4 m seen under load).
            # Re-read until the timestamp is the same before and after (a 2 ms window).
            for _ in range(3):
                stamp = float(r.getTimestamp())
                q = np.asarray(r.getActualQ(), dtype=np.float64)
                dq = np.asarray(r.getActualQd(), dtype=np.float64)
                dq_d = np.asarray(r.getTargetQd(), dtype=np.float64)
                ddq_d = np.asarray(r.getTargetQdd(), dtype=np.float64)
                pose = r.getActualTCPPose()
                wrench = np.asarray(r.getActualTCPForce(), dtype=np.float64)
                raw = {
                    "safety_bits": int(r.getSafetyStatusBits()),
                    "safety_mode": int(r.getSafetyMode()),
                    "runtime_state": int(r.getRuntimeState()),
                    "robot_status": int(r.getRobotStatus()),
                    "robot_mode": int(r.getRobotMode()),
                }
                if float(r.getTimestamp()) == stamp:
                    break
        except RuntimeError:
            return None
        if q.shape != (self.profile.dof,):
            return None
        names = self._fault_names(raw)
        known = [n for n in names if n in ("protective_stop", "watchdog_timeout")]
        k = round(stamp / self.dt)
        state = RobotState(
            seq=k,
            t_ns=time.perf_counter_ns(),
            t_echo_ns=0,
            cmd_seq=self.seq,
            mode=self._mode(raw, dq_d),
            lost_consecutive=0,
            lost_total=self.lost,
            overruns=0,
            errors=flags_to_mask(known),
            q=q,
            dq=dq,
            dq_d=dq_d,
            ddq_d=ddq_d,
            tau_ext=np.zeros(self.profile.dof),  # UR publishes no external joint torques
            wrench=wrench,
            ee_pos=np.asarray(pose[:3], dtype=np.float64),
        )
        return state, raw

    @staticmethod
    def program_running(raw: dict[str, int]) -> bool:
        return bool(raw["robot_status"] >> rtde.ROBOT_STATUS_PROGRAM_RUNNING & 1) and (
            raw["runtime_state"] == rtde.RUNTIME_PLAYING
        )

    def _fault_names(self, raw: dict[str, int]) -> list[str]:
        bits = raw["safety_bits"]
        names: list[str] = []
        if bits & _EMERGENCY_BITS:
            names.append("emergency_stop")
        if bits & _PROTECTIVE_BIT:
            names.append("protective_stop")
        for bit, name in _OTHER_SAFETY.items():
            if bits >> rtde.SAFETY_BITS[bit] & 1:
                names.append(name)
        if not names and not self.program_running(raw):
            names.append("program_stopped")
        return names

    @staticmethod
    def _mode(raw: dict[str, int], dq_d: FloatArray) -> RobotMode:
        bits = raw["safety_bits"]
        if bits & _EMERGENCY_BITS:
            return RobotMode.USER_STOPPED
        if bits & _PROTECTIVE_BIT:
            return RobotMode.PROTECTIVE_STOP
        if not _Run.program_running(raw):
            return RobotMode.STOPPED
        return RobotMode.MOVE if np.any(dq_d) else RobotMode.IDLE

    def _with_log(self, message: str) -> str:
        lines = self.ur_log.lines()
        return f"{message} (ur_rtde: {lines[-1]})" if lines else message

    def _fault(self, state: RobotState, raw: dict[str, int], cycle: int, when: str) -> None:
        names = self._fault_names(raw)
        mode = rtde.SAFETY_MODES.get(raw["safety_mode"], str(raw["safety_mode"]))
        if "emergency_stop" in names:
            msg = (
                f"UR emergency stop {when} (safety_status_bits {raw['safety_bits']:#x}, "
                f"safety_mode {mode}); the arm is braked: release the emergency stop and power "
                "on at the pendant"
            )
        elif "protective_stop" in names:
            causes = self._likely_causes(state)
            names += causes
            cause = f"; likely cause: {', '.join(causes)}" if causes else ""
            msg = (
                f"UR protective stop {when} (safety_status_bits bit 2, safety_mode {mode}); "
                f"the controller stopped the arm{cause}. Inspect, then unlock on the pendant "
                "(or rerun with recover=True)"
            )
        elif names == ["program_stopped"]:
            now_gap = time.perf_counter() - self.last_send if self.last_send else 0.0
            gap = max(self.longest_gap, now_gap)
            if self.watchdog_s is not None and self.last_send and gap > self.watchdog_s:
                names = ["watchdog_timeout"]
                msg = (
                    f"UR control script stopped {when} after {gap * 1e3:.0f} ms without a "
                    f"command (RTDE watchdog, {1 / self.watchdog_s:g} Hz); the arm was stopped "
                    "by the controller"
                )
            else:
                state_name = rtde.RUNTIME_STATES.get(raw["runtime_state"], "?")
                msg = (
                    f"UR control script stopped {when} (runtime_state {state_name}, "
                    "not by this client): stopped on the pendant or the dashboard?"
                )
        else:
            msg = (
                f"UR safety stop {when}: {', '.join(names)} (safety_status_bits "
                f"{raw['safety_bits']:#x}, safety_mode {mode})"
            )
        self.report.faults = names
        self.end("fault", msg)

    def _likely_causes(self, state: RobotState) -> list[str]:
        causes = []
        if np.any(np.abs(self.last_cmd) > self.v_max * (1 + 1e-9)):
            causes.append("joint_velocity_violation")
        near = (state.q - self.q_min < 0.02) | (self.q_max - state.q < 0.02)
        if np.any(near):
            causes.append("joint_position_limits_violation")
        if np.any(np.abs(state.wrench) > 0.5 * self.f_max):
            causes.append("cartesian_reflex")
        return causes

    def _lost_message(self, why: str) -> str:
        return self._with_log(
            f"lost the UR at {self.host}: {why}; stopped commanding (its RTDE watchdog "
            "stops the arm)"
        )

    def _fresh(self, timeout_s: float) -> tuple[RobotState, dict[str, int]] | str:
        """The newest state, or why there is none (the controller is gone)."""
        assert self.s is not None
        deadline = time.perf_counter() + timeout_s
        while True:
            if not self.s.connected():
                return self._lost_message("RTDE connection closed")
            got = self._read()
            if got is not None and (self.last is None or got[0].seq != self.last.seq):
                return got
            if time.perf_counter() > deadline:
                return self._lost_message(f"no new RTDE data for {timeout_s * 1e3:.0f} ms")
            time.sleep(0.0002)

    def _speedj(self, state: RobotState, qd: FloatArray) -> bool:
        assert self.s is not None and self.s.c is not None
        self.tracker.update(qd, state)
        t0 = time.perf_counter_ns()
        try:
            self.s.c.speedJ(qd.tolist(), self.accel, self.dt)
        except RuntimeError as err:
            self.end("stub_lost", self._lost_message(f"speedJ failed: {err}"))
            return False
        self.speedj_us.append((time.perf_counter_ns() - t0) / 1e3)
        self.last_cmd = qd
        now = time.perf_counter()
        if self.last_send:
            self.longest_gap = max(self.longest_gap, now - self.last_send)
        self.last_send = now
        self.seq += 1
        if self.prev_k is not None:
            gap = state.seq - self.prev_k
            if gap == 0:
                self.duplicates += 1
            elif gap > 1:
                self.lost += gap - 1
                self.longest_lost = max(self.longest_lost, gap - 1)
        self.prev_k = state.seq
        return True

    # -- phases ----------------------------------------------------------------------------
    def connect(self, timeout_s: float, recover: bool) -> bool:
        try:
            rtde.probe(self.host, timeout_s=timeout_s)
        except rtde.ProbeError as err:
            self.end("connect_failed", str(err))
            return False
        try:
            self.s = _Session(self.host, self.profile.rate_hz)
        except RuntimeError as err:
            self.end("connect_failed", self._with_log(f"ur_rtde could not connect: {err}"))
            return False
        got = self._fresh(timeout_s)
        if isinstance(got, str):
            self.end("connect_failed", got)
            return False
        state, raw = got
        if raw["safety_bits"] & _PROTECTIVE_BIT and recover:
            if not self._unlock(timeout_s):
                return False
            self.last = None
            got = self._fresh(timeout_s)
            if isinstance(got, str):
                self.end("stub_lost", got)
                return False
            state, raw = got
        bad = [n for n in self._fault_names(raw) if n != "program_stopped"]
        if bad:
            self.last = state
            self.report.faults = bad
            self._fault(state, raw, 0, "before the run")
            return False
        try:
            self.s.start_control()
            assert self.s.c is not None
            if self.watchdog_s is not None:
                self.s.c.setWatchdog(1.0 / self.watchdog_s)
        except RuntimeError as err:
            self.end("connect_failed", self._with_log(f"ur_rtde control interface: {err}"))
            return False
        self.last = state
        return True

    def _unlock(self, timeout_s: float) -> bool:
        import dashboard_client

        db: Any = dashboard_client.DashboardClient(self.host)
        deadline = time.perf_counter() + timeout_s + UNLOCK_WAIT_S
        try:
            db.connect()
            while True:
                db.closeSafetyPopup()
                db.unlockProtectiveStop()
                time.sleep(0.05)
                got = self._read()
                if got is not None and not got[1]["safety_bits"] & _PROTECTIVE_BIT:
                    return True
                if time.perf_counter() > deadline:
                    self.end("fault", "could not unlock the protective stop over the dashboard")
                    self.report.faults = ["protective_stop"]
                    return False
                time.sleep(0.25)
        except RuntimeError as err:
            self.end("connect_failed", f"dashboard server at {self.host}:29999: {err}")
            return False
        finally:
            with contextlib.suppress(Exception):
                db.disconnect()

    def main_phase(
        self, policy: Policy, safety_filter: SafetyFilter | None, seconds: float
    ) -> bool:
        """Runs the policy; returns whether a stop ramp should follow."""
        assert self.s is not None and self.s.c is not None
        c = self.s.c
        inj = self.inject or FaultInjection()
        drop_from, drop_n = inj.drop_sends or (-1, 0)
        delay_at, delay_s = inj.delay_send or (-1, 0.0)
        t_end = time.perf_counter() + seconds
        cycle = 0
        self.last = None
        while True:
            t_period = c.initPeriod()
            got = self._fresh(self.stub_timeout_s)
            if isinstance(got, str):
                self.end("stub_lost", got)
                return False
            state, raw = got
            self.last = state
            if self._fault_names(raw):
                self._fault(state, raw, cycle, f"at cycle {cycle}")
                return False
            if time.perf_counter() >= t_end:
                return True
            t0 = time.perf_counter_ns()
            try:
                qd = policy_command(state, policy, safety_filter, self._limit)
            except NonFiniteCommand:
                self.end(
                    "nonfinite_command",
                    f"policy/filter output was NaN or inf at cycle {cycle}; nothing of it was sent",
                )
                return True
            except Exception as err:  # stop the robot first, explain after
                self.end(
                    "policy_error",
                    f"policy/filter failed at cycle {cycle}: {type(err).__name__}: {err}",
                )
                return True
            if cycle == delay_at:
                time.sleep(delay_s)
            if drop_from <= cycle < drop_from + drop_n:
                self.report.sends_dropped += 1
                self.tracker.update(qd, state)
            elif not self._speedj(state, qd):
                return False
            t1 = time.perf_counter_ns()
            self.compute_us.append((t1 - t0) / 1e3)
            self.sent_ns.append(t1)
            self.sent_stamp.append(state.seq * self.dt)
            cycle += 1
            self.report.cycles = cycle
            c.waitPeriod(t_period)

    def stop_phase(self, timeout_s: float) -> None:
        """Ramp the speed target to zero within the limits, then ``speedStop``."""
        assert self.s is not None and self.s.c is not None
        c = self.s.c
        deadline = time.perf_counter() + timeout_s
        zero = np.zeros(self.profile.dof)
        while time.perf_counter() < deadline:
            t_period = c.initPeriod()
            got = self._fresh(self.stub_timeout_s)
            if isinstance(got, str):
                if self.report.exit_reason == "completed":
                    self.end("stub_lost", got + " (during the stop ramp)")
                return
            state, raw = got
            self.last = state
            if self._fault_names(raw):
                if self.report.exit_reason == "completed":
                    self._fault(state, raw, self.report.cycles, "during the stop ramp")
                return
            qd = self.limiter(zero, state.dq_d, state.ddq_d)
            if float(np.max(np.abs(qd))) < STOP_TOLERANCE:
                self._speed_stop()
                return
            if not self._speedj(state, qd):
                return
            self.report.stop_cycles += 1
            c.waitPeriod(t_period)
        if self.report.exit_reason == "completed":
            self.end("fault", f"could not ramp to a stop within {timeout_s} s")

    def _speed_stop(self) -> None:
        """``speedStop`` while the RTDE link is alive. ur_rtde returns at once when the
        script has stopped (a protective stop stops it); it would wait for a "done"
        reply that a dead controller never sends, so a lost link skips it."""
        assert self.s is not None and self.s.c is not None
        if not self.s.connected() or self._read() is None:
            return
        try:
            self.s.c.speedStop(STOP_DECELERATION)
            self.report.stop_cycles += 1
        except RuntimeError as err:
            if self.report.exit_reason == "completed":
                self.end("stub_lost", self._lost_message(f"speedStop failed: {err}"))

    def safe_stop_after_fault(self) -> None:
        """After a controller fault: ``speedStop`` where the controller still listens."""
        if self.s is not None and self.s.c is not None:
            self._speed_stop()

    def finish(self, success_fn: SuccessFn | None, t_start: float) -> DeployReport:
        r = self.report
        r.duration_s = round(time.perf_counter() - t_start, 4)
        r.compute_us = percentiles(self.compute_us)
        if self.sent_ns:
            r.response_us = percentiles(_response_us(self.sent_ns, self.sent_stamp))
        r.max_commanded = self.tracker.best
        r.missed_deadlines = self.lost
        r.lost_run_max = self.longest_lost
        r.states_skipped = self.duplicates
        if self.last is not None:
            r.final_mode = self.last.mode.name
            if success_fn is not None and r.exit_reason == "completed":
                r.success = bool(success_fn(self.last))
        if r.exit_reason == "completed" and not r.message:
            r.message = f"ran {r.cycles} cycles at {self.profile.rate_hz:g} Hz, stopped cleanly"
        return r


def _response_us(sent_ns: list[int], stamp_s: list[float], window: int = 250) -> list[float]:
    """State-to-command latency: each speedJ send minus its state's controller timestamp.

    The controller's clock is mapped onto ours by the smallest offset among the next
    ``window`` cycles (the closest to a zero-latency delivery). Looking forward, not
    back: the controller's timestamp only falls behind our clock (the stub's
    skipped cycles), so later offsets are never smaller at the same drift. The
    figures are lower bounds.
    """
    sent = np.asarray(sent_ns, dtype=np.float64) * 1e-9
    diff = sent - np.asarray(stamp_s, dtype=np.float64)
    padded = np.concatenate((diff, np.full(window - 1, np.inf)))
    ahead = np.lib.stride_tricks.sliding_window_view(padded, window).min(axis=1)
    return list((diff - ahead) * 1e6)


def run_loop(
    profile: ControllerProfile | str | Path,
    policy: Policy,
    seconds: float,
    *,
    host: str,
    port: int | None = None,
    safety_filter: SafetyFilter | None = None,
    success_fn: SuccessFn | None = None,
    recover: bool = False,
    stub_timeout_s: float | None = None,
    connect_timeout_s: float = 5.0,
    stop_timeout_s: float = 3.0,
    rate_limit: bool = True,
    realtime: bool = False,
    inject: FaultInjection | None = None,
    capture_output: bool = True,
    stats: dict[str, Any] | None = None,
) -> DeployReport:
    """Run ``policy`` on the UR (or UR stub) at ``host`` through ur_rtde for ``seconds``.

    Args:
        profile: controller profile (model, path or shipped name); ``interface = "speedj"``.
        policy: ``policy(state) -> qd``, joint velocities (rad/s), shape ``(6,)``.
        seconds: how long to run the policy before the stop ramp.
        host: the controller's address (RTDE 30004, dashboard 29999, script 30003).
        port: accepted for symmetry with the Franka client; ur_rtde 1.6.5 always uses
            30004, so anything else is refused (``connect_failed``).
        safety_filter: ``filter(state, qd) -> qd`` applied before rate limiting (the shield).
        success_fn: ``success_fn(state) -> bool`` on the last state of a completed run.
        recover: unlock a protective stop over the dashboard before the run.
        stub_timeout_s: RTDE silence after which the controller counts as lost;
            default: the profile's watchdog period, at least 0.1 s.
        connect_timeout_s: limit of each connection step (probe, first data).
        stop_timeout_s: longest stop ramp.
        rate_limit: ``False`` sends the policy's (filtered) output unlimited, to show
            what the controller does with a naive policy. NaN / inf is never sent.
        realtime: run the loop under SCHED_FIFO (restored afterwards) where permitted.
        inject: deliberate faults for tests (dropped or delayed commands).
        capture_output: keep ur_rtde's own prints off the terminal (quoted in the report).
        stats: if given, filled with UR-specific figures: ``longest_lost_run`` (most
            consecutive controller cycles without a new command), ``speedj_us``
            (percentiles of the ``speedJ`` call alone).

    Returns:
        The :class:`~safebot.deploy.report.DeployReport`. For UR, ``missed_deadlines``
        counts controller states (RTDE ``timestamp``) the loop never answered;
        ``states_skipped`` stays 0 (the loop waits for a new state each cycle, so none
        is answered twice); ``stub_overruns`` is 0 (RTDE does not report them; the
        stub's STATS line does); ``response_us`` runs from the state's controller
        timestamp to the speedJ send (a lower bound, see :func:`_response_us`).
    """
    prof = coerce_profile(profile)
    seconds = float(seconds)
    timeout = stub_timeout_s if stub_timeout_s is not None else max(prof.tolerance_s(), 0.1)
    t_start = time.perf_counter()
    run = _Run(prof, host, seconds, timeout, inject, rate_limit)
    if prof.interface != "speedj" or prof.speedj is None:
        run.end("connect_failed", f"profile {prof.name} is not a speedJ (UR) profile")
        return run.finish(None, t_start)
    if port not in (None, rtde.RTDE_PORT):
        run.end(
            "connect_failed", f"ur_rtde 1.6.5 always uses RTDE port {rtde.RTDE_PORT}, not {port}"
        )
        return run.finish(None, t_start)
    restore = enter_realtime() if realtime else None
    run.report.realtime = restore is not None
    try:
        with _FdCapture(capture_output) as log:
            run.ur_log = log
            try:
                if run.connect(connect_timeout_s, recover):
                    ramp = run.main_phase(policy, safety_filter, seconds)
                    if ramp:
                        run.stop_phase(stop_timeout_s)
                    elif run.report.exit_reason == "fault":
                        run.safe_stop_after_fault()
            finally:
                if run.s is not None:
                    if run.report.exit_reason == "completed" and run.s.c is not None:
                        with contextlib.suppress(RuntimeError):
                            run.s.c.stopScript()
                    run.s.close()
        if stats is not None:
            stats["longest_lost_run"] = run.longest_lost
            stats["speedj_us"] = percentiles(run.speedj_us)
        return run.finish(success_fn, t_start)
    finally:
        if restore is not None:
            restore()
