"""Deploy side: controller profiles, the control-loop client, controller stubs.

* :mod:`safebot.deploy.profiles`: ``controllers/*.toml`` -> :class:`ControllerProfile`.
* :mod:`safebot.deploy.protocol`: the loopback UDP protocol (byte layout in its docstring).
* :mod:`safebot.deploy.ratelimit`: libfranka ``limitRate`` semantics.
* :mod:`safebot.deploy.client`: :func:`run_loop` -> :class:`DeployReport`.
* :mod:`safebot.deploy.stubs`: controller stubs with a PyBullet plant (import
  pybullet only when used).

See ``docs/deploy.md``.
"""

from safebot.deploy.client import DeployReport, FaultInjection, probe_state, run_loop
from safebot.deploy.profiles import ControllerProfile, load_profile
from safebot.deploy.protocol import CommandFlag, RobotMode, RobotState
from safebot.deploy.ratelimit import RateLimiter, limit_rate

__all__ = [
    "CommandFlag",
    "ControllerProfile",
    "DeployReport",
    "FaultInjection",
    "RateLimiter",
    "RobotMode",
    "RobotState",
    "limit_rate",
    "load_profile",
    "probe_state",
    "run_loop",
]
