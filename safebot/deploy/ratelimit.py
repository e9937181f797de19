"""Joint-velocity rate limiting with libfranka's ``limitRate`` semantics.

Pure array functions (no state): the caller passes the controller's last
commanded velocity and acceleration (``RobotState.dq_d`` / ``ddq_d``), exactly
as libfranka's ``limitRate(max_velocity, max_acceleration, max_jerk,
commanded, last_commanded_velocities, last_commanded_accelerations)`` does.

Order (libfranka ``src/rate_limiting.cpp``): differentiate to a jerk, clamp it
to ``jerk_max``; integrate to an acceleration, clamp it to
``[max(-a_max, (j_max/a_max)(-v_max - v_last)), min(a_max, (j_max/a_max)(v_max - v_last))]``
(the bound shrinks so that the velocity limit is approached without a jerk
spike); integrate to a velocity and clip it to ``v_max``. The limits used are
the published ones minus :data:`LIMIT_EPS` (libfranka's ``kLimitEps``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from safebot.deploy.profiles import ControllerProfile

FloatArray = NDArray[np.float64]

#: libfranka ``kLimitEps``: commands stay this far inside every published limit.
LIMIT_EPS = 1e-3


class NonFiniteCommand(ValueError):
    """A command holds NaN or inf (libfranka: "Commanding value is infinite or NaN")."""


def limit_rate(
    qd: FloatArray,
    last_qd: FloatArray,
    last_qdd: FloatArray,
    *,
    dt: float,
    v_max: FloatArray,
    a_max: FloatArray | None,
    j_max: FloatArray | None,
) -> FloatArray:
    """Limit a joint velocity command to velocity, acceleration and jerk bounds.

    ``a_max`` / ``j_max`` of ``None`` skip that stage. The bounds are used as
    given: :class:`RateLimiter` subtracts :data:`LIMIT_EPS` from the published
    values.

    Raises:
        NonFiniteCommand: ``qd`` holds NaN or inf.
    """
    if not np.isfinite(qd).all():
        raise NonFiniteCommand(f"commanding value is infinite or NaN: {qd}")
    if a_max is None:
        return np.clip(qd, -v_max, v_max)
    accel = (qd - last_qd) / dt
    if j_max is not None:
        jerk = np.clip((accel - last_qdd) / dt, -j_max, j_max)
        accel = last_qdd + jerk * dt
        hi = np.minimum(a_max, (j_max / a_max) * (v_max - last_qd))
        lo = np.maximum(-a_max, (j_max / a_max) * (-v_max - last_qd))
    else:
        hi = np.minimum(a_max, (v_max - last_qd) / dt)
        lo = np.maximum(-a_max, (-v_max - last_qd) / dt)
    accel = np.minimum(np.maximum(accel, lo), hi)
    return np.clip(last_qd + accel * dt, -v_max, v_max)


class RateLimiter:
    """:func:`limit_rate` bound to one profile's limits (published minus :data:`LIMIT_EPS`).

    Example:
        >>> lim = RateLimiter(load_profile("franka_fr3"))
        >>> safe = lim(qd, state.dq_d, state.ddq_d)
    """

    def __init__(self, profile: ControllerProfile, *, eps: float = LIMIT_EPS) -> None:
        self.dt = profile.dt
        self.v_max = np.asarray(profile.limits.joint.velocity, dtype=np.float64) - eps
        acc = profile.acceleration_limits()
        jerk = profile.jerk_limits()
        self.a_max = None if acc is None else np.asarray(acc, dtype=np.float64) - eps
        self.j_max = None if jerk is None else np.asarray(jerk, dtype=np.float64) - eps

    def __call__(self, qd: FloatArray, last_qd: FloatArray, last_qdd: FloatArray) -> FloatArray:
        return limit_rate(
            qd, last_qd, last_qdd, dt=self.dt, v_max=self.v_max, a_max=self.a_max, j_max=self.j_max
        )
