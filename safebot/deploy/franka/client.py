"""The Franka deploy loop through pylibfranka (libfranka's own client, protocol version 10).

:func:`run_loop` has the contract of :func:`safebot.deploy.ur.client.run_loop`: a
``policy(state) -> qd`` on :class:`~safebot.deploy.state.RobotState`, a
:class:`~safebot.deploy.report.DeployReport` back. Each 1 kHz cycle:
``ActiveControl.readOnce()`` -> the state as a ``RobotState`` -> ``policy`` ->
optional ``safety_filter`` -> rate limiting -> ``writeOnce(JointVelocities)``.

Rate limiting: pylibfranka 0.21.3 offers only the external loop
(``start_joint_velocity_control`` + ``readOnce`` / ``writeOnce``), and libfranka applies
its ``limitRate`` only inside ``Robot::control`` callbacks: measured against the stub,
``writeOnce`` sends a 0 -> 0.5 rad/s step unchanged. So the loop applies
:class:`~safebot.deploy.ratelimit.RateLimiter`, a port of libfranka's ``limitRate``
(same order, same ``kLimitEps``), to the controller's ``dq_d`` / ``ddq_d``.

Faults: libfranka's ``ControlException`` (a reflex; its text names it and the
``control_command_success_rate``) and a non-empty ``current_errors`` end the run with
the robot already stopped by its reflex; the report's ``faults`` are the
``last_motion_errors``. ``NetworkException`` (the controller gone) ends it as
``stub_lost``. A policy that fails or returns NaN is ramped to a stop within the limits
and ``motion_finished`` ends the motion, sent only once ``qd = 0`` is valid whether or not
the controller missed a cycle (:func:`finish_is_safe`). Every path returns a report,
never raises.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

from safebot.deploy.franka.protocol import COMMAND_PORT, ERRORS
from safebot.deploy.loop import (
    FaultInjection,
    MaxTracker,
    Policy,
    SafetyFilter,
    SuccessFn,
    policy_command,
)
from safebot.deploy.profiles import ControllerProfile, coerce_profile
from safebot.deploy.ratelimit import NonFiniteCommand, RateLimiter
from safebot.deploy.report import DeployReport, ExitReason, percentiles
from safebot.deploy.rt import enter_realtime
from safebot.deploy.state import FLAG_BITS, FloatArray, RobotMode, RobotState

__all__ = ["finish_is_safe", "run_loop", "state_from_franka"]

#: extra jerk margin (rad/s³). Protocol v10 echoes ``dq_d`` / ``ddq_d`` as float32 while
#: the controller differentiates the next command against the float64 it received; a
#: jerk computed from the echo can be off by up to ~0.3 rad/s³ (|dq| <= 5.26 rad/s,
#: 2^-24 relative, twice divided by 1 ms), more than libfranka's 1e-3 ``kLimitEps``.
F32_JERK_MARGIN = 1.0
_MODES = {int(m): m for m in RobotMode}
_ERROR_MASKS = {name: 1 << FLAG_BITS[name] for name in ERRORS if name in FLAG_BITS}


def _error_list(errors: Any) -> list[str]:
    """Names of the flags set in a ``pylibfranka.Errors`` (wire order)."""
    if not bool(errors):
        return []
    return [name for name in ERRORS if getattr(errors, name, False)]


def state_from_franka(s: Any, *, lost: int = 0, lost_total: int = 0) -> RobotState:
    """A ``pylibfranka.RobotState`` as the deploy side's :class:`RobotState`.

    ``seq`` and ``t_ns`` are the robot's clock (``time``, 1 ms per cycle); ``ee_pos`` is
    the translation of ``O_T_EE``, ``tau_ext`` ``tau_ext_hat_filtered``, ``wrench``
    ``O_F_ext_hat_K``.
    """
    ms = round(s.time.to_sec() * 1000)
    errors = 0
    if bool(s.current_errors):
        for name in _error_list(s.current_errors):
            errors |= _ERROR_MASKS.get(name, 0)
    # pylibfranka hands out Python lists: one conversion for all of them, then views
    t = s.O_T_EE
    v = np.array(
        s.q + s.dq + s.dq_d + s.ddq_d + s.tau_ext_hat_filtered + t[12:15] + s.O_F_ext_hat_K,
        dtype=np.float64,
    )
    return RobotState(
        seq=ms,
        t_ns=ms * 1_000_000,
        t_echo_ns=0,
        cmd_seq=0,
        mode=_MODES[s.robot_mode.value],
        lost_consecutive=lost,
        lost_total=lost_total,
        overruns=0,
        errors=errors,
        q=v[0:7],
        dq=v[7:14],
        dq_d=v[14:21],
        ddq_d=v[21:28],
        tau_ext=v[28:35],
        ee_pos=v[35:38],
        wrench=v[38:44],
    )


def _one_line(err: BaseException) -> str:
    """libfranka's message on one line, prefixed ``libfranka:`` once."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    text = "; ".join(lines) if lines else type(err).__name__
    return text if text.startswith("libfranka") else f"libfranka: {text}"


def probe_host(host: str, timeout_s: float) -> str | None:
    """``None`` when something accepts TCP on ``host:1337``, else why not (one line).

    pylibfranka's own connect blocks (holding the GIL) far longer on a silent host, so
    the deploy asks first.
    """
    try:
        with socket.create_connection((host, COMMAND_PORT), timeout=timeout_s):
            return None
    except TimeoutError:
        return f"no answer from {host}:{COMMAND_PORT} within {timeout_s:g} s"
    except OSError as err:
        return f"cannot reach {host}:{COMMAND_PORT}: {err.strerror or err}"


def finish_is_safe(limiter: RateLimiter, dq_d: FloatArray, ddq_d: FloatArray) -> bool:
    """Whether ``qd = 0`` with ``motion_finished`` is within ``limiter``'s limits now.

    libfranka's ``finishMotion`` resends the finishing command unchanged, under newer
    message ids, until the motion has ended. If the first send misses its cycle, the
    controller has extrapolated meanwhile (the stub holds ``dq_d`` with zero
    acceleration), so the command that ends the motion must be valid against both
    ``(dq_d, ddq_d)`` and ``(dq_d, 0)``. The last step of a plain rate-limited ramp can
    decelerate at up to ``a_max``; resent after a zero-acceleration hold, that is a jerk
    of ``a_max / dt`` (10 000 rad/s³ on an FR3, twice its limit).
    """
    accel = -dq_d / limiter.dt
    if limiter.a_max is not None and np.any(np.abs(accel) > limiter.a_max):
        return False
    if limiter.j_max is None:
        return True
    step = limiter.j_max * limiter.dt
    return bool(np.all(np.abs(accel) <= step) and np.all(np.abs(accel - ddq_d) <= step))


class _Sent:
    """What :class:`MaxTracker` reads of a state: the controller's last command."""

    __slots__ = ("ddq_d", "dq_d")

    def __init__(self, dq_d: FloatArray, ddq_d: FloatArray) -> None:
        self.dq_d = dq_d
        self.ddq_d = ddq_d


class _FrankaRun:
    def __init__(
        self,
        profile: ControllerProfile,
        seconds: float,
        host: str,
        rate_limit: bool,
        inject: FaultInjection | None,
    ) -> None:
        import pylibfranka

        self.pf = pylibfranka
        self.profile = profile
        self.host = host
        self.rate_limit = rate_limit
        # the cycle's rate limiter (policy_command's `limit`); None: commands go out as computed
        self._limit = self.limit if rate_limit else None
        self.inject = inject or FaultInjection()
        self.limiter = RateLimiter(profile)
        if self.limiter.j_max is not None:
            self.limiter.j_max = self.limiter.j_max - F32_JERK_MARGIN
        self.tracker = MaxTracker(profile)
        # (qd, dq_d, ddq_d) of every command sent; the maxima are taken after the run:
        # MaxTracker's numpy per cycle cost ~30 us inside the 1 ms loop
        n = profile.dof
        self._sent = np.empty((max(round(seconds * profile.rate_hz) + 4096, 1024), 3 * n))
        self._n_sent = 0
        self.report = DeployReport(profile.name, profile.rate_hz, seconds, "completed", "")
        self.report.client = f"pylibfranka {pylibfranka.__version__}"
        self.compute_us: list[float] = []
        self.lost_total = 0
        self.success_min = 1.0
        self.last: RobotState | None = None
        self.robot: Any = None
        self.ctl: Any = None

    def end(self, reason: ExitReason, message: str) -> None:
        self.report.exit_reason = reason
        self.report.message = message

    # -- connect ---------------------------------------------------------------------------
    def connect(self, timeout_s: float, recover: bool) -> bool:
        pf = self.pf
        why = probe_host(self.host, timeout_s)
        if why is not None:
            self.end("connect_failed", why)
            return False
        try:
            self.robot = pf.Robot(self.host, pf.RealtimeConfig.kIgnore)
            s = self.robot.read_once()
            if bool(s.current_errors):
                if not recover:
                    self.report.faults = _error_list(s.current_errors)
                    self.end(
                        "fault",
                        f"the robot reports {', '.join(self.report.faults)} before the run "
                        f"(mode {s.robot_mode.name}): recover first (--recover runs libfranka's "
                        "automatic error recovery)",
                    )
                    return False
                self.robot.automatic_error_recovery()
            c = self.profile.collision
            tau = list(c.joint_torque)
            wrench = [*c.force, *c.moment]
            self.robot.set_collision_behavior(tau, tau, wrench, wrench)
            self.ctl = self.robot.start_joint_velocity_control(pf.ControllerMode.JointImpedance)
        except pf.NetworkException as err:
            self.end("connect_failed", f"{_one_line(err)} ({self.host})")
            return False
        except (pf.ControlException, pf.CommandException) as err:
            self.end("fault", f"libfranka refused the motion: {_one_line(err)}")
            return False
        except (pf.FrankaException, RuntimeError) as err:
            # IncompatibleVersionException and friends arrive as FrankaException
            self.end("connect_failed", f"{_one_line(err)} ({self.host})")
            return False
        return True

    # -- one cycle -------------------------------------------------------------------------
    def read(self) -> RobotState:
        s, dur = self.ctl.readOnce()
        gap = round(dur.to_sec() * 1000)
        lost = max(gap - 1, 0) if self.last is not None else 0
        self.lost_total += lost
        self.report.lost_run_max = max(self.report.lost_run_max, lost)
        rate = float(s.control_command_success_rate)
        if self.last is not None:
            self.success_min = min(self.success_min, rate)
        state = state_from_franka(s, lost=lost, lost_total=self.lost_total)
        self.last = state
        return state

    def limit(self, state: RobotState, qd: FloatArray) -> FloatArray:
        return self.limiter(qd, state.dq_d, state.ddq_d)

    def write(self, state: RobotState, qd: FloatArray, finished: bool = False) -> None:
        if self._n_sent == len(self._sent):
            self._sent = np.concatenate((self._sent, np.empty_like(self._sent)))
        row = self._sent[self._n_sent]
        n = self.profile.dof
        row[:n], row[n : 2 * n], row[2 * n :] = qd, state.dq_d, state.ddq_d
        self._n_sent += 1
        cmd = self.pf.JointVelocities(qd.tolist())
        if finished:
            cmd.motion_finished = True
        self.ctl.writeOnce(cmd)

    def main_phase(
        self, policy: Policy, safety_filter: SafetyFilter | None, seconds: float
    ) -> bool:
        """Run the policy; whether a stop ramp should follow (False: the robot stopped itself)."""
        drop_from, drop_n = self.inject.drop_sends or (-1, 0)
        delay_at, delay_s = self.inject.delay_send or (-1, 0.0)
        t_end_ns: int | None = None
        cycle = 0
        while True:
            state = self.read()
            if state.errors:
                return self._robot_fault(f"at cycle {cycle}")
            if t_end_ns is None:
                t_end_ns = state.t_ns + round(seconds * 1e9)
            if state.t_ns >= t_end_ns:
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
            else:
                self.write(state, qd)
            self.compute_us.append((time.perf_counter_ns() - t0) / 1e3)
            cycle += 1
            self.report.cycles = cycle

    def _robot_fault(self, when: str) -> bool:
        assert self.last is not None
        self.report.faults = [n for n, b in FLAG_BITS.items() if self.last.errors >> b & 1]
        self.end(
            "fault",
            f"the robot raised {', '.join(self.report.faults)} {when}; "
            f"mode {self.last.mode.name}, stopped by its reflex",
        )
        return False

    def stop_phase(self, timeout_s: float) -> None:
        """Ramp to zero within the limits, then ``motion_finished`` (libfranka ends the motion)."""
        deadline = time.perf_counter() + timeout_s
        zero = np.zeros(self.profile.dof)
        while time.perf_counter() < deadline:
            state = self.read()
            if state.errors:
                if self.report.exit_reason == "completed":
                    self._robot_fault("during the stop ramp")
                return
            done = finish_is_safe(self.limiter, state.dq_d, state.ddq_d)
            if done:
                if self.inject.delay_finish:
                    time.sleep(self.inject.delay_finish)
                self.write(state, zero, finished=True)
            else:
                self.write(state, self.limit(state, zero))
            self.report.stop_cycles += 1
            if done:
                self.report.final_mode = self.robot.read_once().robot_mode.name
                return
        if self.report.exit_reason == "completed":
            self.end("fault", f"could not ramp to a stop within {timeout_s} s")

    # -- libfranka's exceptions ------------------------------------------------------------
    def on_control_exception(self, err: BaseException) -> None:
        text = _one_line(err)
        faults: list[str] = []
        try:
            s = self.robot.read_once()
            faults = _error_list(s.last_motion_errors) or _error_list(s.current_errors)
            self.report.final_mode = s.robot_mode.name
        except Exception:  # the controller may be gone as well
            pass
        self.report.faults = faults
        if self.report.exit_reason == "completed":
            self.end("fault", f"{text}; the robot stopped itself")

    def close(self) -> None:
        # ActiveControl's destructor cancels an unfinished motion (StopMove); drop it before
        # the Robot so that happens while the connection still exists
        self.ctl = None
        self.robot = None

    def finish(self, success_fn: SuccessFn | None, t_start: float) -> DeployReport:
        r = self.report
        r.duration_s = round(time.perf_counter() - t_start, 4)
        r.compute_us = percentiles(self.compute_us)
        n = self.profile.dof
        for row in self._sent[: self._n_sent]:
            self.tracker.update(row[:n], _Sent(row[n : 2 * n], row[2 * n :]))  # type: ignore[arg-type]
        r.max_commanded = self.tracker.best
        r.missed_deadlines = self.lost_total
        if self.last is not None:
            r.command_success_rate = round(self.success_min, 4)
            if not r.final_mode:
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
    host: str,
    safety_filter: SafetyFilter | None = None,
    success_fn: SuccessFn | None = None,
    recover: bool = False,
    connect_timeout_s: float = 3.0,
    stop_timeout_s: float = 3.0,
    rate_limit: bool = True,
    realtime: bool = False,
    inject: FaultInjection | None = None,
) -> DeployReport:
    """Run ``policy`` on the Franka (or stub) at ``host`` for ``seconds`` through pylibfranka.

    Args:
        profile: controller profile (``franka_fr3`` / ``franka_panda``, a path or a model).
        policy: ``policy(state) -> qd``, joint velocities (rad/s), shape ``(7,)``.
        seconds: how long the policy runs (robot clock) before the stop ramp.
        host: the robot's (or stub's) address; libfranka uses TCP port 1337 on it.
        safety_filter: ``filter(state, qd) -> qd`` before rate limiting (the shield hook).
        success_fn: ``success_fn(state) -> bool`` on the last state of a completed run.
        recover: run libfranka's automatic error recovery when the robot starts faulted.
        connect_timeout_s: how long the host may take to accept TCP before the run gives up.
        stop_timeout_s: longest stop ramp.
        rate_limit: ``False`` sends the policy's output unlimited (to show the reflexes).
        realtime: SCHED_FIFO for this process where permitted. libfranka's own real-time
            setting is always ``kIgnore`` (``kEnforce`` throws where it cannot get
            real-time scheduling, e.g. on this project's machines).
        inject: deliberate faults for tests (a held-back or dropped command).

    Returns:
        The :class:`DeployReport`; ``report.ok`` only for a clean run.
    """
    prof = coerce_profile(profile)
    try:
        import pylibfranka  # noqa: F401  (the one dependency only this client needs)
    except ImportError as err:
        return DeployReport(
            prof.name,
            prof.rate_hz,
            seconds,
            "connect_failed",
            f"pylibfranka is not importable ({err}): pip install pylibfranka==0.21.3",
        )
    run = _FrankaRun(prof, seconds, host, rate_limit, inject)
    restore = enter_realtime() if realtime else None
    run.report.realtime = restore is not None
    t_start = time.perf_counter()
    pf = run.pf
    try:
        if run.connect(connect_timeout_s, recover):
            try:
                if run.main_phase(policy, safety_filter, seconds):
                    run.stop_phase(stop_timeout_s)
            except (pf.ControlException, pf.CommandException) as err:
                run.on_control_exception(err)
            except pf.NetworkException as err:
                run.end("stub_lost", f"lost the robot: {_one_line(err)}")
            except pf.FrankaException as err:
                run.end("stub_lost", _one_line(err))
        return run.finish(success_fn, t_start)
    finally:
        run.close()
        if restore is not None:
            restore()
