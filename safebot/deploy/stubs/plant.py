"""The PyBullet plant behind a controller stub.

One private DIRECT-mode physics client per plant, so several can live in one
process. The arm's motors run pybullet ``VELOCITY_CONTROL`` with the profile's
torque limits as maximum forces: the plant follows the commanded joint velocity
as far as its torques allow. External joint torques and the external wrench are
computed from the contact forces on the arm (``tau_ext = J(p)^T f`` summed over
contact points), which is what the controller's collision thresholds are
compared with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pybullet as pb
import pybullet_data

from safebot.deploy.profiles import ControllerProfile
from safebot.deploy.stubs.controller import FloatArray, PlantState

#: rad the plant's joint range extends past the profile's limits
JOINT_RANGE_MARGIN = 0.05


@dataclass(frozen=True, slots=True)
class Box:
    """A static box obstacle: centre and half extents (m), world frame."""

    center: tuple[float, float, float]
    half_extents: tuple[float, float, float]

    @classmethod
    def parse(cls, text: str) -> Box:
        """``"x,y,z,hx,hy,hz"`` -> Box."""
        vals = [float(v) for v in text.split(",")]
        if len(vals) != 6:
            raise ValueError(f"a box is 'x,y,z,hx,hy,hz', got {text!r}")
        return cls((vals[0], vals[1], vals[2]), (vals[3], vals[4], vals[5]))


class PybulletPlant:
    """The robot of ``profile.plant`` in a private PyBullet world."""

    def __init__(self, profile: ControllerProfile, *, obstacles: Sequence[Box] = ()) -> None:
        self.profile = profile
        self.cid = pb.connect(pb.DIRECT)
        cid = self.cid
        pb.setGravity(0, 0, -9.81, physicsClientId=cid)
        pb.setTimeStep(profile.dt, physicsClientId=cid)
        pb.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=cid)
        if profile.plant.floor:
            pb.loadURDF("plane.urdf", physicsClientId=cid)
        self.robot = pb.loadURDF(
            str(profile.plant.urdf_path()),
            useFixedBase=True,
            flags=pb.URDF_USE_INERTIA_FROM_FILE if profile.plant.inertia_from_file else 0,
            physicsClientId=cid,
        )
        names: dict[str, int] = {}
        links: dict[str, int] = {}
        self.movable: list[int] = []
        for j in range(pb.getNumJoints(self.robot, physicsClientId=cid)):
            info = pb.getJointInfo(self.robot, j, physicsClientId=cid)
            names[info[1].decode()] = j
            links[info[12].decode()] = j
            if info[2] != pb.JOINT_FIXED:
                self.movable.append(j)
        missing = [n for n in profile.plant.joints if n not in names]
        if missing:
            raise ValueError(f"{profile.name}: joints {missing} not in {profile.plant.urdf}")
        if profile.plant.ee_link not in links:
            raise ValueError(
                f"{profile.name}: link {profile.plant.ee_link!r} not in {profile.plant.urdf}"
            )
        self.joints = [names[n] for n in profile.plant.joints]
        self.ee = links[profile.plant.ee_link]
        # columns of calculateJacobian are the movable joints in order
        self._cols = [self.movable.index(j) for j in self.joints]
        self.forces = list(profile.limits.joint.torque)
        # The physics gets the profile's joint range (plus a margin so the
        # controller's own position checks fire first), not the URDF's: pybullet's
        # panda.urdf has rounded Panda ranges, which differ from the FR3's.
        lim = profile.limits.joint
        for j, lo, hi in zip(self.joints, lim.position_min, lim.position_max, strict=True):
            pb.changeDynamics(
                self.robot,
                j,
                jointLowerLimit=lo - JOINT_RANGE_MARGIN,
                jointUpperLimit=hi + JOINT_RANGE_MARGIN,
                physicsClientId=cid,
            )
        for box in obstacles:
            shape = pb.createCollisionShape(
                pb.GEOM_BOX, halfExtents=box.half_extents, physicsClientId=cid
            )
            pb.createMultiBody(
                baseMass=0,
                baseCollisionShapeIndex=shape,
                basePosition=box.center,
                physicsClientId=cid,
            )
        self.reset(np.asarray(profile.plant.home, dtype=np.float64))

    def reset(self, q: FloatArray) -> None:
        for j, qj in zip(self.joints, q, strict=True):
            pb.resetJointState(self.robot, j, float(qj), 0.0, physicsClientId=self.cid)
        self.step(np.zeros(len(self.joints)), 0)

    def step(self, target: FloatArray, n: int = 1) -> None:
        """Track joint velocities ``target`` for ``n`` physics steps of ``dt``."""
        pb.setJointMotorControlArray(
            self.robot,
            self.joints,
            pb.VELOCITY_CONTROL,
            targetVelocities=[float(v) for v in target],
            forces=self.forces,
            physicsClientId=self.cid,
        )
        for _ in range(n):
            pb.stepSimulation(physicsClientId=self.cid)

    def read(self) -> PlantState:
        cid = self.cid
        js = pb.getJointStates(self.robot, self.joints, physicsClientId=cid)
        q = np.array([s[0] for s in js])
        dq = np.array([s[1] for s in js])
        ee_pos = np.array(
            pb.getLinkState(
                self.robot, self.ee, computeForwardKinematics=True, physicsClientId=cid
            )[4]
        )
        tau_ext, wrench = self._external(ee_pos)
        return PlantState(q=q, dq=dq, tau_ext=tau_ext, wrench=wrench, ee_pos=ee_pos)

    def _external(self, ee_pos: FloatArray) -> tuple[FloatArray, FloatArray]:
        cid = self.cid
        tau = np.zeros(len(self.joints))
        wrench = np.zeros(6)
        contacts = pb.getContactPoints(bodyA=self.robot, physicsClientId=cid)
        if not contacts:
            return tau, wrench
        all_q: list[float] = []
        for s in pb.getJointStates(self.robot, self.movable, physicsClientId=cid):
            all_q.append(s[0])
        zeros = [0.0] * len(self.movable)
        for c in contacts:
            link, other = c[3], c[2]
            if link < 0 or other == self.robot:
                continue  # the fixed base carries no sensor; self-contacts are internal
            p_world = np.asarray(c[5])  # contact point on the robot
            # force on the robot: normal from B to A, plus both friction directions
            f = c[9] * np.asarray(c[7]) + c[10] * np.asarray(c[11]) + c[12] * np.asarray(c[13])
            wrench[:3] += f
            wrench[3:] += np.cross(p_world - ee_pos, f)
            com, orn = pb.getLinkState(self.robot, link, physicsClientId=cid)[:2]
            rot = np.asarray(pb.getMatrixFromQuaternion(orn)).reshape(3, 3)
            local = rot.T @ (p_world - np.asarray(com))
            jac_t, _ = pb.calculateJacobian(
                self.robot, link, local.tolist(), all_q, zeros, zeros, physicsClientId=cid
            )
            jac = np.asarray(jac_t)[:, self._cols]
            tau += jac.T @ f
        return tau, wrench

    def close(self) -> None:
        if pb.isConnected(physicsClientId=self.cid):
            pb.disconnect(physicsClientId=self.cid)
