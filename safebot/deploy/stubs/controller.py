"""What a real arm controller does with each command: checks, faults, modes.

:class:`ControllerCore` holds no socket and no physics. Each cycle the server
calls :meth:`ControllerCore.command` with the newest command (or ``None`` when
none arrived), steps the plant towards :attr:`ControllerCore.target`, then calls
:meth:`ControllerCore.observe` with the measured plant state. Tests drive it in
simulated time.

Franka (``joint_velocity``) mirrors libfranka/FCI:

* every command is differentiated against the last accepted one at the
  controller's rate (``a = (qd - dq_d) / dt``, ``j = (a - ddq_d) / dt``) and
  checked against the profile's velocity, acceleration and jerk limits, plus
  the joint position it would reach next cycle;
* a violated check raises its flag (``faults.*`` in the profile), the command
  is not executed, the commanded velocity drops to 0 and the mode is Reflex;
* a cycle without a command holds the last command (the controller
  extrapolates); ``lost_cycle_tolerance`` consecutive ones raise
  ``communication_constraints_violation``;
* ``CommandFlag.RECOVER`` (``automaticErrorRecovery``) clears the flags and
  returns to Idle; ``CommandFlag.FINISH`` ends the motion (back to Idle).

UR (``speedj``) mirrors RTDE speedJ: the command is a target joint speed, the
controller ramps towards it with the leading axis at the speedJ acceleration;
a violation is a protective stop (``protective_stop`` flag plus the cause) that
only a command with ``RECOVER`` (unlock protective stop) clears; when no command
arrives for ``watchdog_s`` the program stops (mode Stopped, ``watchdog_timeout``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from safebot.deploy.profiles import ControllerProfile
from safebot.deploy.state import FLAG_BITS, Command, CommandFlag, RobotMode

FloatArray = NDArray[np.float64]

#: Measured velocities may overshoot a commanded (legal) velocity slightly in
#: the physics engine; only an overshoot beyond this fraction of the limit is a
#: violation.
MEASURED_VELOCITY_TOLERANCE = 0.02
#: Measured positions may sit this far (rad) past a limit before it counts.
MEASURED_POSITION_TOLERANCE = 1e-3
#: Tiny slack on the command checks so float rounding of a command computed at
#: exactly the limit does not trip them (the client stays 1e-3 inside anyway).
COMMAND_RTOL = 1e-9


@dataclass(frozen=True, slots=True)
class PlantState:
    """What the plant measured after a step."""

    q: FloatArray
    dq: FloatArray
    tau_ext: FloatArray
    wrench: FloatArray
    ee_pos: FloatArray


class ControllerCore:
    """The controller's state machine for one profile (see module docstring)."""

    def __init__(self, profile: ControllerProfile) -> None:
        self.profile = profile
        self.dt = profile.dt
        n = profile.dof
        lim = profile.limits.joint
        self.q_min = np.asarray(lim.position_min, dtype=np.float64)
        self.q_max = np.asarray(lim.position_max, dtype=np.float64)
        self.v_max = np.asarray(lim.velocity, dtype=np.float64)
        self.a_max = None if lim.acceleration is None else np.asarray(lim.acceleration, np.float64)
        self.j_max = None if lim.jerk is None else np.asarray(lim.jerk, np.float64)
        self.tau_max = np.asarray(profile.collision.joint_torque, dtype=np.float64)
        self.wrench_max = np.asarray(
            [*profile.collision.force, *profile.collision.moment], dtype=np.float64
        )
        self.speedj = profile.interface == "speedj"
        self.mode = RobotMode.IDLE
        self.errors = 0
        self.dq_d = np.zeros(n)
        self.ddq_d = np.zeros(n)
        self.speed_target = np.zeros(n)
        self.speed_accel = profile.speedj.acceleration if profile.speedj else 0.0
        self.q = np.asarray(profile.plant.home, dtype=np.float64).copy()
        self.lost_consecutive = 0
        self.lost_total = 0
        self.cmd_seq = 0
        self.cmd_t_ns = 0
        self.last_command_time: float | None = None
        self.commands_applied = 0
        self.commands_rejected = 0
        self.commands_stale = 0

    # -- what the plant is driven to -------------------------------------------------
    @property
    def target(self) -> FloatArray:
        """Joint velocity the plant's motors track this cycle (0 when stopped)."""
        return self.dq_d

    @property
    def stopped(self) -> bool:
        return self.mode in (RobotMode.REFLEX, RobotMode.PROTECTIVE_STOP, RobotMode.STOPPED)

    # -- faults ----------------------------------------------------------------------
    def fault(self, *flags: str | None, mode: RobotMode | None = None) -> None:
        """Latch ``flags`` and stop: commanded velocity 0, mode Reflex / protective stop."""
        names = [f for f in flags if f]
        if not names:
            return
        for name in names:
            self.errors |= 1 << FLAG_BITS[name]
        if mode is None:
            if self.profile.faults.reaction == "protective_stop":
                self.errors |= 1 << FLAG_BITS["protective_stop"]
                mode = RobotMode.PROTECTIVE_STOP
            else:
                mode = RobotMode.REFLEX
        self.mode = mode
        self._halt()

    def _halt(self) -> None:
        self.dq_d = np.zeros_like(self.dq_d)
        self.ddq_d = np.zeros_like(self.ddq_d)
        self.speed_target = np.zeros_like(self.speed_target)
        self.lost_consecutive = 0

    def recover(self) -> None:
        """``automaticErrorRecovery()`` / unlock protective stop: clear flags, back to Idle."""
        self.errors = 0
        self.mode = RobotMode.IDLE
        self._halt()

    # -- one cycle: command side ---------------------------------------------------------
    def command(
        self, cmd: Command | None, now: float, *, last_state_seq: int | None = None
    ) -> None:
        """Apply this cycle's newest command (``None``: nothing arrived). ``now`` in seconds.

        With ``last_state_seq`` (the sequence number of the state sent last
        cycle), a joint-velocity command that answers an older state arrived too
        late: it would be differentiated against the wrong ``dq_d``, so it counts
        as lost, as a late packet does on FCI. speedJ targets are asynchronous
        and always apply.
        """
        if (
            cmd is not None
            and last_state_seq is not None
            and not self.speedj
            and not cmd.flags & CommandFlag.RECOVER
            and cmd.state_seq != last_state_seq
        ):
            self.commands_stale += 1
            cmd = None
        if cmd is not None:
            self.last_command_time = now
            self.cmd_seq = cmd.seq
            self.cmd_t_ns = cmd.t_ns
            if cmd.flags & CommandFlag.RECOVER:
                self.recover()
                return
        if self.stopped:
            if cmd is not None:
                self.commands_rejected += 1
            return
        if cmd is None:
            self._lost(now)
        else:
            self.lost_consecutive = 0
            self._apply(cmd)
        if self.speedj and self.mode is RobotMode.MOVE:
            self._ramp()

    def _lost(self, now: float) -> None:
        if self.mode is not RobotMode.MOVE:
            return
        self.lost_consecutive += 1
        self.lost_total += 1
        comm = self.profile.communication
        rules = self.profile.faults
        if (
            comm.lost_cycle_tolerance is not None
            and self.lost_consecutive >= comm.lost_cycle_tolerance
        ):
            self.fault(rules.communication)
            return
        if (
            comm.watchdog_s is not None
            and self.last_command_time is not None
            and now - self.last_command_time > comm.watchdog_s
        ):
            self.fault(rules.watchdog, mode=RobotMode.STOPPED)
            return
        if not self.speedj:
            # libfranka extrapolates a lost command: hold the velocity.
            self.ddq_d = np.zeros_like(self.ddq_d)

    def _apply(self, cmd: Command) -> None:
        rules = self.profile.faults
        qd = cmd.qd
        if (
            qd.shape != self.dq_d.shape
            or not np.isfinite(qd).all()
            or not np.isfinite(cmd.acceleration)
        ):
            self.commands_rejected += 1
            self.fault(rules.non_finite_command)
            return
        flags: list[str | None] = []
        if np.any(np.abs(qd) > self.v_max * (1 + COMMAND_RTOL)):
            flags.append(rules.command_velocity)
        q_next = self.q + qd * self.dt
        if np.any((q_next < self.q_min) & (qd < 0)) or np.any((q_next > self.q_max) & (qd > 0)):
            flags.append(rules.command_position)
        if self.speedj:
            if any(flags):
                self.commands_rejected += 1
                self.fault(*flags)
                return
            self.speed_target = qd.copy()
            a = cmd.acceleration if cmd.acceleration > 0 else self.speed_accel
            assert self.profile.speedj is not None
            self.speed_accel = min(a, self.profile.speedj.max_acceleration)
            self.mode = RobotMode.MOVE
            self.commands_applied += 1
            if cmd.flags & CommandFlag.FINISH:
                self.speed_target = np.zeros_like(qd)
            return
        accel = (qd - self.dq_d) / self.dt
        if self.a_max is not None and np.any(np.abs(accel) > self.a_max * (1 + COMMAND_RTOL)):
            flags.append(rules.command_acceleration)
        if self.j_max is not None:
            jerk = (accel - self.ddq_d) / self.dt
            if np.any(np.abs(jerk) > self.j_max * (1 + COMMAND_RTOL)):
                flags.append(rules.command_jerk)
        if any(flags):
            self.commands_rejected += 1
            self.fault(*flags)
            return
        self.dq_d = qd.copy()
        self.ddq_d = accel
        self.commands_applied += 1
        if cmd.flags & CommandFlag.FINISH:
            # MotionFinished: the motion must end at rest, else the jump to 0 is a
            # velocity discontinuity.
            a_lim = self.a_max if self.a_max is not None else self.v_max / self.dt
            if np.any(np.abs(self.dq_d) > a_lim * self.dt):
                self.fault(rules.command_acceleration)
                return
            self.mode = RobotMode.IDLE
            self._halt()
        else:
            self.mode = RobotMode.MOVE

    def _ramp(self) -> None:
        # speedJ: the leading axis accelerates at `a`, the others scaled so all
        # reach their target speeds together.
        delta = self.speed_target - self.dq_d
        lead = float(np.max(np.abs(delta)))
        step_max = self.speed_accel * self.dt
        step = delta if lead <= step_max else delta * (step_max / lead)
        self.dq_d = self.dq_d + step
        self.ddq_d = step / self.dt
        if lead == 0.0 and not self.speed_target.any():
            self.mode = RobotMode.IDLE

    # -- one cycle: plant side -------------------------------------------------------------
    def observe(self, ps: PlantState) -> None:
        """Check the measured state against limits and collision thresholds."""
        self.q = ps.q
        if self.mode is not RobotMode.MOVE:
            return
        rules = self.profile.faults
        flags: list[str | None] = []
        if np.any(np.abs(ps.dq) > self.v_max * (1 + MEASURED_VELOCITY_TOLERANCE)):
            flags.append(rules.measured_velocity)
        tol = MEASURED_POSITION_TOLERANCE
        if np.any(ps.q < self.q_min - tol) or np.any(ps.q > self.q_max + tol):
            flags.append(rules.measured_position)
        if np.any(np.abs(ps.tau_ext) > self.tau_max):
            flags.append(rules.joint_torque)
        if np.any(np.abs(ps.wrench) > self.wrench_max):
            flags.append(rules.cartesian_force)
        self.fault(*flags)
