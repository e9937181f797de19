"""What the vendor clients' control loops share: the policy hooks, fault injection, the max tracker.

:mod:`safebot.deploy.franka.client` (pylibfranka) and :mod:`safebot.deploy.ur.client`
(ur_rtde) run the same cycle: ``policy(state)`` -> optional ``safety_filter(state, qd)``
-> rate limiting (:mod:`safebot.deploy.ratelimit`) -> the vendor's command call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from safebot.deploy.profiles import ControllerProfile
from safebot.deploy.state import FloatArray, RobotState

__all__ = ["STOP_TOLERANCE", "FaultInjection", "MaxTracker", "Policy", "SafetyFilter", "SuccessFn"]

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
        delay_finish: seconds to hold back the command that ends the motion (Franka's
            ``motion_finished``), so the controller misses that cycle first.
    """

    drop_sends: tuple[int, int] | None = None
    delay_send: tuple[int, float] | None = None
    delay_finish: float | None = None


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


def policy_command(
    state: RobotState,
    policy: Policy,
    safety_filter: SafetyFilter | None,
    limit: Callable[[RobotState, FloatArray], FloatArray] | None,
) -> FloatArray:
    """One cycle's command: ``policy(state)``, the safety filter (on finite commands), then the
    rate limiter ``limit(state, qd)`` (``None``: no limiting, but a non-finite command still raises).

    Raises:
        NonFiniteCommand: the command is NaN or inf (nothing of it may be sent).
        ValueError: the policy or the filter returned the wrong shape.
    """
    from safebot.deploy.ratelimit import NonFiniteCommand

    qd = np.asarray(policy(state), dtype=np.float64)
    if qd.shape != (state.dof,):
        raise ValueError(f"policy returned shape {qd.shape}, expected ({state.dof},)")
    if safety_filter is not None and np.isfinite(qd).all():
        qd = np.asarray(safety_filter(state, qd), dtype=np.float64)
        if qd.shape != (state.dof,):
            raise ValueError(f"safety filter returned shape {qd.shape}")
    if limit is not None:
        return limit(state, qd)
    if not np.isfinite(qd).all():
        raise NonFiniteCommand("policy output is not finite")
    return qd
