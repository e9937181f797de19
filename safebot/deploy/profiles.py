"""Controller profiles: ``controllers/*.toml`` -> frozen, validated pydantic models.

A profile states what a real arm controller enforces: its rate, its command
interface, the published joint and Cartesian limits, which check raises which
error flag, the collision thresholds, how many lost cycles it tolerates, and the
PyBullet plant the stub steps. The stubs enforce a profile; the client
rate-limits to it.

Example:
    >>> from safebot.deploy.profiles import load_profile
    >>> fr3 = load_profile("franka_fr3")
    >>> fr3.rate_hz, fr3.limits.joint.velocity[0]
    (1000.0, 2.62)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from safebot import resources
from safebot.deploy.state import FLAG_BITS
from safebot.spec import Frozen, SpecError, load_model

Interface = Literal["joint_velocity", "speedj"]
Reaction = Literal["reflex", "protective_stop"]
PosList = list[PositiveFloat]


class JointLimits(Frozen):
    """Per-joint limits (rad, rad/s, rad/s², rad/s³, Nm, Nm/s); ``None`` = not published."""

    position_min: list[float]
    position_max: list[float]
    velocity: PosList
    acceleration: PosList | None = None
    jerk: PosList | None = None
    torque: PosList
    torque_rate: PosList | None = None

    @model_validator(mode="after")
    def _min_below_max(self) -> JointLimits:
        if len(self.position_min) != len(self.position_max):
            raise ValueError(
                f"limits.joint.position_min has {len(self.position_min)} entries but "
                f"position_max has {len(self.position_max)}"
            )
        for i, (lo, hi) in enumerate(zip(self.position_min, self.position_max, strict=True)):
            if not lo < hi:
                raise ValueError(
                    f"limits.joint.position_min[{i}] = {lo} must be below position_max[{i}] = {hi}"
                )
        return self

    def per_joint(self) -> dict[str, list[float] | None]:
        return {
            "position_min": self.position_min,
            "position_max": self.position_max,
            "velocity": self.velocity,
            "acceleration": self.acceleration,
            "jerk": self.jerk,
            "torque": self.torque,
            "torque_rate": self.torque_rate,
        }


class CartesianLimits(Frozen):
    """End-effector limits (m/s, m/s², m/s³; rad/s, rad/s², rad/s³); ``None`` = not published."""

    translation_velocity: PositiveFloat | None = None
    translation_acceleration: PositiveFloat | None = None
    translation_jerk: PositiveFloat | None = None
    rotation_velocity: PositiveFloat | None = None
    rotation_acceleration: PositiveFloat | None = None
    rotation_jerk: PositiveFloat | None = None
    elbow_velocity: PositiveFloat | None = None
    elbow_acceleration: PositiveFloat | None = None
    elbow_jerk: PositiveFloat | None = None


class Limits(Frozen):
    joint: JointLimits
    cartesian: CartesianLimits = CartesianLimits()


class Collision(Frozen):
    """Upper ("collision") thresholds; above them the controller stops (reflex / protective stop).

    ``force`` is N per Cartesian axis (x, y, z), ``moment`` Nm about each axis,
    ``joint_torque`` Nm per joint, all compared with the measured external
    wrench / joint torques (absolute values).
    """

    force: Annotated[PosList, Field(min_length=3, max_length=3)]
    moment: Annotated[PosList, Field(min_length=3, max_length=3)]
    joint_torque: PosList


class Communication(Frozen):
    """Franka: consecutive lost cycles tolerated; UR: the RTDE watchdog period (s)."""

    lost_cycle_tolerance: PositiveInt | None = None
    watchdog_s: PositiveFloat | None = None


class FaultRules(Frozen):
    """Which check raises which error flag; ``None`` switches a check off.

    ``reaction`` is what every flag does: ``reflex`` (Franka: stop, mode Reflex,
    cleared by automatic error recovery) or ``protective_stop`` (UR: stop, must
    be acknowledged). A watchdog timeout always stops the program (mode Stopped).
    """

    reaction: Reaction
    command_velocity: str | None = None
    command_acceleration: str | None = None
    command_jerk: str | None = None
    command_position: str | None = None
    measured_velocity: str | None = None
    measured_position: str | None = None
    joint_torque: str | None = None
    cartesian_force: str | None = None
    communication: str | None = None
    watchdog: str | None = None
    non_finite_command: str = "invalid_command"

    @field_validator(
        "command_velocity",
        "command_acceleration",
        "command_jerk",
        "command_position",
        "measured_velocity",
        "measured_position",
        "joint_torque",
        "cartesian_force",
        "communication",
        "watchdog",
        "non_finite_command",
    )
    @classmethod
    def _known_flag(cls, v: str | None) -> str | None:
        if v is not None and v not in FLAG_BITS:
            raise ValueError(f"unknown error flag {v!r}; known: {', '.join(FLAG_BITS)}")
        return v


class SpeedJ(Frozen):
    """speedJ parameters (rad/s²): the default ``a`` and the largest accepted (ur_rtde's bound)."""

    acceleration: PositiveFloat
    max_acceleration: PositiveFloat


class Plant(Frozen):
    """The PyBullet model the stub steps.

    ``urdf`` is relative to ``search``: ``pybullet_data`` (the package's data
    folder) or ``assets`` (safebot's shipped assets).
    """

    urdf: str
    search: Literal["pybullet_data", "assets"]
    joints: list[str]
    ee_link: str
    home: list[float]
    floor: bool = True
    #: Use the URDF's inertia tensors; ``false`` lets PyBullet derive them from
    #: the collision shapes (pybullet's panda.urdf lists 0.1 kg m² for every link).
    inertia_from_file: bool = True

    def urdf_path(self) -> Path:
        if self.search == "pybullet_data":
            import pybullet_data

            return Path(pybullet_data.getDataPath()) / self.urdf
        return resources.resolve("assets", self.urdf)


class Arm(Frozen):
    """The MuJoCo model of the profile's arm: what ``safebot deploy`` retargets a bundle to.

    A bundle trained on another arm with a Cartesian observation runs on this
    controller through this model (docs/deploy.md, *Retargeting*): the policy worker
    computes the end effector's pose, velocity and Jacobian from it, and the shield's
    rows. Its world frame must be the plant's (the URDF's base at the origin, z up)
    and its joints ``plant.joints``.

    Attributes:
        scene: MJCF scene under ``assets/`` (e.g. ``"ur5e/scene_reach.xml"``).
        ee_site: the site at the plant's ``ee_link`` (what the stub reports as ``ee_pos``).
        body_prefix: the arm's bodies are those whose names start with it.
        keepout_sites: the sites kept out of a bundle's keep-out boxes on this arm
            (they replace the bundle's own list); each site's size is its radius.
    """

    scene: str
    ee_site: str = "ee_site"
    body_prefix: Annotated[str, Field(min_length=1)]
    keepout_sites: Annotated[list[str], Field(min_length=1)]

    @field_validator("keepout_sites")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dup = sorted({s for s in v if v.count(s) > 1})
        if dup:
            raise ValueError(f"keepout_sites lists {', '.join(dup)} more than once")
        return v

    @field_validator("scene")
    @classmethod
    def _scene_exists(cls, v: str) -> str:
        try:
            resources.resolve("assets", v)
        except FileNotFoundError:
            raise ValueError(f"no MJCF scene {v!r} under assets/") from None
        return v

    def scene_path(self) -> Path:
        return resources.resolve("assets", self.scene)


class ControllerProfile(Frozen):
    """One real arm controller; see ``controllers/*.toml`` and ``docs/deploy.md``."""

    name: str
    robot: str
    description: str = ""
    rate_hz: PositiveFloat
    interface: Interface
    dof: Annotated[int, Field(ge=1, le=16)]
    limits: Limits
    collision: Collision
    communication: Communication
    faults: FaultRules
    plant: Plant
    speedj: SpeedJ | None = None
    #: the arm's MuJoCo model for retargeted bundles; ``None``: only bundles of this arm run
    arm: Arm | None = None

    @property
    def dt(self) -> float:
        return 1.0 / self.rate_hz

    @model_validator(mode="after")
    def _consistent(self) -> ControllerProfile:
        per_joint: dict[str, list[float] | list[str] | None] = {
            f"limits.joint.{k}": v for k, v in self.limits.joint.per_joint().items()
        }
        per_joint |= {
            "collision.joint_torque": self.collision.joint_torque,
            "plant.joints": self.plant.joints,
            "plant.home": self.plant.home,
        }
        for key, values in per_joint.items():
            if values is not None and len(values) != self.dof:
                raise ValueError(f"{key} has {len(values)} entries, expected dof = {self.dof}")
        j = self.limits.joint
        for i, (q, lo, hi) in enumerate(
            zip(self.plant.home, j.position_min, j.position_max, strict=True)
        ):
            if not lo <= q <= hi:
                raise ValueError(f"plant.home[{i}] = {q} is outside [{lo}, {hi}]")
        f = self.faults
        if self.interface == "joint_velocity":
            if f.command_acceleration and j.acceleration is None:
                raise ValueError("faults.command_acceleration needs limits.joint.acceleration")
            if f.command_jerk and j.jerk is None:
                raise ValueError("faults.command_jerk needs limits.joint.jerk")
        if self.interface == "speedj" and self.speedj is None:
            raise ValueError("interface 'speedj' needs a [speedj] table")
        if f.communication and self.communication.lost_cycle_tolerance is None:
            raise ValueError("faults.communication needs communication.lost_cycle_tolerance")
        if f.watchdog and self.communication.watchdog_s is None:
            raise ValueError("faults.watchdog needs communication.watchdog_s")
        return self

    # Limits the client rate-limits to. UR publishes no acceleration limit: the
    # speedJ acceleration is what its controller ramps at, so it stands in.
    def acceleration_limits(self) -> list[float] | None:
        if self.limits.joint.acceleration is not None:
            return list(self.limits.joint.acceleration)
        if self.speedj is not None:
            return [self.speedj.acceleration] * self.dof
        return None

    def jerk_limits(self) -> list[float] | None:
        return None if self.limits.joint.jerk is None else list(self.limits.joint.jerk)

    def tolerance_s(self) -> float:
        """How long the controller tolerates silence before it stops (s)."""
        c = self.communication
        if c.lost_cycle_tolerance is not None:
            return c.lost_cycle_tolerance * self.dt
        if c.watchdog_s is not None:
            return c.watchdog_s
        return 0.1


def load_profile(name: str | Path) -> ControllerProfile:
    """Load a controller profile by path or shipped name (``"franka_fr3"``, ``"ur5e"``).

    Raises:
        SpecError: the file is missing, not TOML, or invalid; the message names
            the file and the key.
    """
    try:
        path = resources.resolve("controllers", name)
    except FileNotFoundError as err:
        raise SpecError(str(err)) from None
    return load_model(path, ControllerProfile)


def coerce_profile(profile: ControllerProfile | str | Path) -> ControllerProfile:
    return profile if isinstance(profile, ControllerProfile) else load_profile(profile)
