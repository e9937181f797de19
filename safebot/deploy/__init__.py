"""Deploy side: controller profiles, the vendor clients, controller stubs that speak their protocols.

* :mod:`safebot.deploy.profiles`: ``controllers/*.toml`` -> :class:`ControllerProfile`.
* :mod:`safebot.deploy.state`: :class:`RobotState`, what every client's policy sees.
* :mod:`safebot.deploy.ratelimit`: libfranka ``limitRate`` semantics.
* :mod:`safebot.deploy.franka`: pylibfranka client and a libfranka-protocol stub.
* :mod:`safebot.deploy.ur`: ur_rtde client and an RTDE / dashboard / script-port stub.
* :mod:`safebot.deploy.stubs`: the controller core and PyBullet plant both stubs use
  (import pybullet only when used).

See ``docs/deploy.md``.
"""

from safebot.deploy.loop import FaultInjection
from safebot.deploy.profiles import ControllerProfile, load_profile
from safebot.deploy.ratelimit import RateLimiter, limit_rate
from safebot.deploy.report import DeployReport
from safebot.deploy.state import CommandFlag, RobotMode, RobotState

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
]
