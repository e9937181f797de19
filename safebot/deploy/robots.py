"""Which robots ``safebot deploy`` drives, through which vendor client, on which profile.

Light (no torch / MuJoCo): the deploy entry points check ``--robot`` and
``--controller`` here before anything heavy is imported.
"""

from __future__ import annotations

from pathlib import Path

from safebot.deploy.profiles import ControllerProfile, load_profile
from safebot.resources import resolve

__all__ = ["CLIENT_INTERFACES", "ROBOT_CLIENTS", "ROBOT_PROFILES", "DeployError", "robot_profile"]


class DeployError(ValueError):
    """The bundle cannot run on this controller, or a deploy option is invalid; one line."""


#: ``--robot`` -> shipped controller profile
ROBOT_PROFILES: dict[str, str] = {"fr3": "franka_fr3", "panda": "franka_panda", "ur5e": "ur5e"}
#: which vendor client drives each robot: "franka" = pylibfranka (safebot.deploy.franka),
#: "ur" = ur_rtde (safebot.deploy.ur)
ROBOT_CLIENTS: dict[str, str] = {"fr3": "franka", "panda": "franka", "ur5e": "ur"}
#: the command interface each client drives
CLIENT_INTERFACES: dict[str, str] = {"franka": "joint_velocity", "ur": "speedj"}


def robot_profile(
    robot: str, controller: str | Path | None = None
) -> tuple[ControllerProfile, Path]:
    """The profile for ``robot``: the shipped one, or ``controller`` overriding it for that robot.

    Raises:
        DeployError: an unknown robot, or a ``controller`` profile for another arm or interface.
        SpecError: the profile file is missing or invalid.
    """
    if robot not in ROBOT_PROFILES:
        raise DeployError(f"--robot must be one of {', '.join(ROBOT_PROFILES)}, got {robot!r}")
    shipped = load_profile(ROBOT_PROFILES[robot])
    name = controller if controller is not None else ROBOT_PROFILES[robot]
    profile = shipped if controller is None else load_profile(name)
    if tuple(profile.plant.joints) != tuple(shipped.plant.joints):
        raise DeployError(
            f"--controller {profile.name} drives a {profile.robot} ({profile.dof} joints), "
            f"not --robot {robot} ({shipped.robot}); give a profile for that robot"
        )
    want = CLIENT_INTERFACES[ROBOT_CLIENTS[robot]]
    if profile.interface != want:
        raise DeployError(
            f"--robot {robot} needs a {want} profile, {profile.name} is {profile.interface!r}"
        )
    return profile, resolve("controllers", name)
