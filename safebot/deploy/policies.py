"""Small built-in joint-space policies for exercising a controller (no learning involved).

They take a :class:`~safebot.deploy.state.RobotState` and return joint
velocities (rad/s); the client rate-limits whatever they return.
"""

from __future__ import annotations

import numpy as np

from safebot.deploy.profiles import ControllerProfile
from safebot.deploy.state import FloatArray, RobotState


class SinusoidReach:
    """Track ``q_ref(t) = home + amplitude * sin(2 pi t / period + phase_j)`` in joint space.

    ``qd = dq_ref + gain (q_ref - q)``, clipped to ``speed_fraction`` of the
    velocity limits. ``t`` runs on the controller's clock from the first state.
    """

    def __init__(
        self,
        profile: ControllerProfile,
        *,
        amplitude: float = 0.3,
        period_s: float = 2.0,
        gain: float = 5.0,
        speed_fraction: float = 0.5,
    ) -> None:
        n = profile.dof
        self.home = np.asarray(profile.plant.home, dtype=np.float64)
        self.amplitude = amplitude
        self.omega = 2 * np.pi / period_s
        self.phase = np.linspace(0.0, np.pi, n)
        self.gain = gain
        self.v_cap = speed_fraction * np.asarray(profile.limits.joint.velocity, dtype=np.float64)
        self._t0: int | None = None
        # start from rest at home: sin ramps from its phase; subtract the offset at t=0
        self._offset = amplitude * np.sin(self.phase)

    def reference(self, t: float) -> tuple[FloatArray, FloatArray]:
        q_ref = self.home + self.amplitude * np.sin(self.omega * t + self.phase) - self._offset
        dq_ref = self.amplitude * self.omega * np.cos(self.omega * t + self.phase)
        return q_ref, dq_ref

    def __call__(self, state: RobotState) -> FloatArray:
        if self._t0 is None:
            self._t0 = state.t_ns
        q_ref, dq_ref = self.reference((state.t_ns - self._t0) * 1e-9)
        qd = dq_ref + self.gain * (q_ref - state.q)
        return np.clip(qd, -self.v_cap, self.v_cap)


class JointReach:
    """Go to ``target`` (rad): ``qd = clip(gain (target - q), ±speed_fraction v_max)``."""

    def __init__(
        self,
        profile: ControllerProfile,
        target: FloatArray,
        *,
        gain: float = 3.0,
        speed_fraction: float = 0.5,
    ) -> None:
        self.target = np.asarray(target, dtype=np.float64)
        self.gain = gain
        self.v_cap = speed_fraction * np.asarray(profile.limits.joint.velocity, dtype=np.float64)

    def __call__(self, state: RobotState) -> FloatArray:
        return np.clip(self.gain * (self.target - state.q), -self.v_cap, self.v_cap)

    def success(self, state: RobotState, tol: float = 0.02) -> bool:
        """Every joint within ``tol`` rad of the target."""
        return bool(np.max(np.abs(state.q - self.target)) < tol)
