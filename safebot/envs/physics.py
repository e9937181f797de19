"""Physics accessors for a MuJoCo arm, apart from any task logic.

The shield and the cost terms read the arm's state only through this class:
end-effector pose and velocity, Jacobians, joint state and limits, and contacts
with their forces. Tasks add goals and rewards on top.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
from numpy.typing import NDArray

from safebot.shield.kinematics import PINV_DAMPING

F64 = NDArray[np.float64]


def ee_velocity_map(J: F64, damping: float = PINV_DAMPING) -> tuple[F64, F64]:
    """``(M, c)`` of ``ee_velocity`` actions for a 3×n end-effector Jacobian: ``qd = M u + c``.

    ``M`` is the damped pseudo-inverse ``J^T (J J^T + λ² I)^-1`` and ``c = 0``: no
    null-space term, so ``u = 0`` commands ``qd = 0`` and stopping is always feasible.
    Any arm's Jacobian works (the deploy side maps a policy onto other arms with it).
    """
    JJt = J @ J.T + damping**2 * np.eye(3)
    return J.T @ np.linalg.solve(JJt, np.eye(3)), np.zeros(J.shape[1])


@dataclass(frozen=True)
class Contact:
    """One active contact, as seen from the arm when the arm is involved.

    Attributes:
        geom1, geom2: geom names (``""`` when unnamed).
        force: normal force magnitude (N, >= 0).
        normal: unit normal pointing from ``geom1`` toward ``geom2`` (world frame).
        pos: contact point (world frame).
        arm_side: 1 if geom1 belongs to the arm, 2 if geom2 does, 0 if neither.
    """

    geom1: str
    geom2: str
    force: float
    normal: F64
    pos: F64
    arm_side: int


class ArmPhysics:
    """Named, typed accessors over an ``MjModel``/``MjData`` pair for one arm.

    Args:
        model, data: the compiled scene.
        joints: names of the arm's actuated joints, base to tip.
        ee_site: the end-effector site.
        arm_prefix: bodies whose names start with it belong to the arm; ``None``: the
            subtree of the first joint's parent body (the arm's base link and all it carries).
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        data: mujoco.MjData,
        *,
        joints: tuple[str, ...],
        ee_site: str = "ee_site",
        arm_prefix: str | None = None,
    ) -> None:
        self.model = model
        self.data = data
        self.joint_ids = np.array([_id(model, mujoco.mjtObj.mjOBJ_JOINT, j) for j in joints])
        self.qpos_adr = model.jnt_qposadr[self.joint_ids].copy()
        self.dof_adr = model.jnt_dofadr[self.joint_ids].copy()
        self.ee_site_id = _id(model, mujoco.mjtObj.mjOBJ_SITE, ee_site)
        self.n = len(joints)
        if arm_prefix is None:  # the arm's base link and everything mounted below it
            first = int(model.jnt_bodyid[self.joint_ids[0]])
            base = int(model.body_parentid[first]) or first  # no base link: the first moving body
            arm_bodies = [b for b in range(model.nbody) if _in_subtree(model, b, base)]
        else:
            arm_bodies = [
                b
                for b in range(model.nbody)
                if (mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, b) or "").startswith(
                    arm_prefix
                )
            ]
        self.arm_geom = np.isin(model.geom_bodyid, arm_bodies)
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        self._force6 = np.zeros(6)

    # ------------------------------------------------------------------ joints
    def qpos(self) -> F64:
        """Arm joint positions (rad)."""
        return self.data.qpos[self.qpos_adr].copy()

    def qvel(self) -> F64:
        """Arm joint velocities (rad/s)."""
        return self.data.qvel[self.dof_adr].copy()

    def joint_limits(self) -> tuple[F64, F64]:
        """Lower and upper position limits of the arm joints (rad)."""
        rng = self.model.jnt_range[self.joint_ids]
        return rng[:, 0].copy(), rng[:, 1].copy()

    # ------------------------------------------------------------ end effector
    def ee_pos(self) -> F64:
        """End-effector site position (world, m)."""
        return self.data.site_xpos[self.ee_site_id].copy()

    def ee_jacobian(self, rotation: bool = False) -> F64:
        """End-effector Jacobian over the arm joints: 3×n (linear) or 6×n (linear over angular)."""
        return self.site_jacobian(self.ee_site_id, rotation=rotation)

    def ee_vel(self) -> F64:
        """End-effector linear velocity (world, m/s) from the full-state Jacobian."""
        mujoco.mj_jacSite(self.model, self.data, self._jacp, None, self.ee_site_id)
        return self._jacp @ self.data.qvel

    # ------------------------------------------------------------------- sites
    def site_id(self, name: str) -> int:
        return _id(self.model, mujoco.mjtObj.mjOBJ_SITE, name)

    def site_pos(self, site: int) -> F64:
        return self.data.site_xpos[site].copy()

    def site_jacobian(self, site: int, rotation: bool = False) -> F64:
        """Jacobian of a site's origin over the arm joints (3×n, or 6×n with rotation)."""
        mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, site)
        lin = self._jacp[:, self.dof_adr]
        if not rotation:
            return lin.copy()
        return np.vstack([lin, self._jacr[:, self.dof_adr]])

    def point_jacobian(self, point: F64, body: int) -> F64:
        """Jacobian (3×n over the arm joints) of a world point rigidly attached to ``body``."""
        mujoco.mj_jac(self.model, self.data, self._jacp, None, point, body)
        return self._jacp[:, self.dof_adr].copy()

    # ---------------------------------------------------------------- contacts
    def contacts(self) -> list[Contact]:
        """Active contacts with their normal force (from ``mj_contactForce``)."""
        out = []
        m, d = self.model, self.data
        for i in range(d.ncon):
            c = d.contact[i]
            if c.exclude != 0 or c.efc_address < 0:
                continue
            mujoco.mj_contactForce(m, d, i, self._force6)
            g1, g2 = int(c.geom1), int(c.geom2)
            side = 1 if self.arm_geom[g1] else (2 if self.arm_geom[g2] else 0)
            out.append(
                Contact(
                    geom1=mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, g1) or "",
                    geom2=mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, g2) or "",
                    force=abs(float(self._force6[0])),
                    normal=c.frame[:3].copy(),
                    pos=c.pos.copy(),
                    arm_side=side,
                )
            )
        return out

    def max_contact_force(self) -> tuple[float, float]:
        """(max arm-contact normal force, max normal force of any contact), N. Allocation-free."""
        m, d = self.model, self.data
        arm_max = 0.0
        any_max = 0.0
        for i in range(d.ncon):
            c = d.contact[i]
            if c.efc_address < 0:
                continue
            mujoco.mj_contactForce(m, d, i, self._force6)
            f = abs(float(self._force6[0]))
            any_max = max(any_max, f)
            if self.arm_geom[c.geom1] or self.arm_geom[c.geom2]:
                arm_max = max(arm_max, f)
        return arm_max, any_max


def _id(model: mujoco.MjModel, kind: mujoco.mjtObj, name: str) -> int:
    i = mujoco.mj_name2id(model, kind, name)
    if i < 0:
        label = str(kind).split(".")[-1].removeprefix("mjOBJ_").lower()
        raise KeyError(f"model has no {label} named {name!r}")
    return int(i)


def arm_observation(phys: ArmPhysics, mode: str) -> F64:
    """The arm's part of a task observation, from the model's current state.

    The one observation function of the env and of ``safebot deploy`` (which writes the
    robot's ``q, dq`` into a kinematic model first).

    Args:
        phys: the arm.
        mode: ``"full"``: joint positions and velocities, end-effector position and velocity;
            ``"cartesian"``: the end effector only (no joint state: the policy can drive
            another arm that tracks the same Cartesian command).
    """
    if mode == "cartesian":
        return np.concatenate([phys.ee_pos(), phys.ee_vel()])
    return np.concatenate([phys.qpos(), phys.qvel(), phys.ee_pos(), phys.ee_vel()])


def _in_subtree(model: mujoco.MjModel, body: int, root: int) -> bool:
    """Whether ``body`` is ``root`` (> 0) or below it."""
    while body > 0:
        if body == root:
            return True
        body = int(model.body_parentid[body])
    return False
