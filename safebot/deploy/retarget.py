"""Retargeting: a Cartesian bundle trained on one arm, shielded on another arm's model.

A bundle whose task has ``[robot] observation = "cartesian"`` and ``action_mode =
"ee_velocity"`` has a policy that sees only the end effector (position, velocity),
the task's state and the widths, and commands an end-effector velocity. Nothing in
it names the Panda's joints, so it can drive another arm whose controller profile
has an ``[arm]`` table (:class:`~safebot.deploy.profiles.Arm`): the policy worker
swaps the task env's arm for :class:`RetargetedArm`, a kinematic MuJoCo model of the
profile's arm in the same world frame, and the shield runs on it with
:func:`retarget_envelope`'s limits.

What carries over and what is the new arm's:

* **kept from the bundle** (Cartesian, in the shared world frame): the action scale
  (end-effector speed caps), ``ee_speed``, ``workspace``, the keep-out boxes and
  margins, the joint-position *margin* and the widths;
* **the new arm's**: joints, Jacobians, the joint ranges (the model's, intersected
  with the profile's), the keep-out sites (``arm.keepout_sites`` replace the
  bundle's Panda sites), and the ``joint_velocity`` caps: the profile's published
  velocities, with the bundle's start (its smallest entry) and width. A Panda
  joint's velocity bound means nothing on a UR joint; the width (how far the
  envelope has opened) does.
"""

from __future__ import annotations

import mujoco
import numpy as np

from safebot.deploy.profiles import ControllerProfile
from safebot.deploy.state import FloatArray
from safebot.envelope import Envelope, Limit
from safebot.envs.physics import ArmPhysics, ee_velocity_map
from safebot.shield import ArmKinematics


class RetargetError(ValueError):
    """The profile's ``[arm]`` model does not fit its plant; one line naming the key."""


class RetargetedArm:
    """The profile's arm as a kinematic MuJoCo model, for an ``ee_velocity`` policy.

    Stands in for the task env's arm in :class:`~safebot.deploy.run.ShieldedPolicy`:
    it has the task env's :class:`~safebot.shield.ArmKinematics` (``kinematics``: what the
    safety filter reads) and the physics the observation reads (``physics``, ``model``,
    ``data``, ``q_low``, ``q_high``). It is never stepped: the worker writes the
    stub's ``q``, ``dq`` into it and runs the kinematics. It has no contacts (the
    plant's are not known here), like the same-arm path.

    Args:
        profile: a profile with an ``[arm]`` table.
        action_scale: the bundle's action scale (end-effector speed caps, m/s per unit).
        dt: the policy's control period (s).
        boxes: the bundle's keep-out boxes ``(centre, half_size)``, world frame.

    Raises:
        RetargetError: no ``[arm]`` table, or its scene lacks the plant's joints or the
            listed sites.
    """

    def __init__(
        self,
        profile: ControllerProfile,
        *,
        action_scale: FloatArray,
        dt: float,
        boxes: list[tuple[FloatArray, FloatArray]],
    ) -> None:
        arm = profile.arm
        if arm is None:
            raise RetargetError(f"controller {profile.name} has no [arm] table")
        path = arm.scene_path()
        try:
            self.model = mujoco.MjModel.from_xml_path(str(path))
        except ValueError as err:
            raise RetargetError(f"controller {profile.name}: [arm] scene {path}: {err}") from None
        self.data = mujoco.MjData(self.model)
        try:
            self.physics = ArmPhysics(
                self.model,
                self.data,
                joints=tuple(profile.plant.joints),
                ee_site=arm.ee_site,
                arm_prefix=arm.body_prefix,
            )
            self._sites = [self.physics.site_id(s) for s in arm.keepout_sites]
        except KeyError as err:
            raise RetargetError(
                f"controller {profile.name}: [arm] scene {arm.scene}: {err.args[0]}"
            ) from None
        if not self.physics.arm_geom.any():
            raise RetargetError(
                f"controller {profile.name}: [arm] no body of {arm.scene} starts with "
                f"body_prefix {arm.body_prefix!r}"
            )
        self.scale = np.asarray(action_scale, dtype=np.float64).copy()
        if self.scale.shape != (3,):
            raise RetargetError(
                f"a retargeted policy commands an end-effector velocity (3 values), "
                f"got an action scale of {self.scale.size}"
            )
        self.dt = float(dt)
        self.q_low, self.q_high = self.physics.joint_limits()
        self.boxes = [(c.copy(), h.copy()) for c, h in boxes]
        self.site_names = list(arm.keepout_sites)
        self.scene = arm.scene
        self.kinematics = ArmKinematics(
            model=self.model,
            data=self.data,
            joints=self.physics.joint_ids,
            ee_site=self.physics.ee_site_id,
            keepout_sites=np.asarray(self._sites, dtype=np.int64),
            arm_geom=self.physics.arm_geom,
            q_low=self.q_low,
            q_high=self.q_high,
            action_mode="ee_velocity",
            scale=self.scale,
            dt=self.dt,
            boxes=ArmKinematics.boxes_array(self.boxes),
        )

    def action_map(self) -> tuple[FloatArray, FloatArray]:
        """``(M, c)`` with ``qd = M u + c``: the task env's ``ee_velocity`` map on this arm."""
        return ee_velocity_map(self.physics.ee_jacobian())


def retarget_envelope(envelope: Envelope, profile: ControllerProfile) -> Envelope:
    """The bundle's envelope on the profile's arm (see the module docstring).

    ``joint_velocity`` becomes the profile's: ``cap`` = its published velocities,
    ``start`` = the bundle's smallest start (no higher than the cap), same width. All
    other limits are Cartesian or margins and are kept. Intersect the result with
    the profile as for any bundle (:func:`safebot.deploy.run.intersect_envelope`).
    """
    limits = dict(envelope.limits)
    vel = np.asarray(profile.limits.joint.velocity, dtype=np.float64)
    jv = limits.get("joint_velocity")
    if jv is not None:
        start = np.minimum(float(np.min(jv.start)), vel)
        limits["joint_velocity"] = Limit.make("joint_velocity", start, vel, 1.0)
    return Envelope(
        limits,
        envelope.width,
        joint_gain=envelope.joint_gain,
        barrier_gain=envelope.barrier_gain,
    )


__all__ = ["RetargetError", "RetargetedArm", "retarget_envelope"]
