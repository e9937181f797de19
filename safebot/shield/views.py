"""Arm adapters: what the safety filter reads of an arm, for each kind of env.

* :class:`MujocoArmView` -- any MuJoCo arm described by an
  :class:`~safebot.shield.kinematics.ArmKinematics`: safebot's tasks (``env.kinematics``),
  deploy's kinematic model of the robot, a retargeted arm. Its state goes from
  MuJoCo's arrays into the packed state in numba (:func:`~safebot.shield.kinematics.arm_state_into`);
  only the contacts are gathered in Python (MuJoCo's ``mj_contactForce`` / ``mj_jac``).
* :class:`FetchArmView` -- gymnasium-robotics Fetch tasks (mocap end effector, no joints).
* anything else implementing :class:`ArmView`: ``scale``, ``dt`` and ``state()``.

:func:`arm_view` picks one by what the env offers, never by its class name.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import mujoco
import numpy as np
from numba import njit

from safebot.shield.kinematics import ArmKinematics, arm_state_into
from safebot.shield.packed import F64, ArmState, PackedState, pack_state

FETCH_GRIP_SITE = "robot0:grip"


@runtime_checkable
class ArmView(Protocol):
    """What the filter needs of an arm.

    Attributes:
        scale: physical units per unit of normalised action, one per action entry.
        dt: control period (s).
    """

    scale: F64
    dt: float

    def state(self) -> ArmState:
        """The arm's state now, with every velocity as an affine map of the physical action."""
        ...


def pack_view(view: ArmView, out: PackedState) -> None:
    """Any view's state into ``out`` (the generic way: :meth:`ArmView.state` then pack)."""
    pack_state(view.state(), len(view.scale), out)


@njit(cache=True)
def _arm_contacts(g1: Any, g2: Any, efc: Any, arm_geom: Any, idx: Any) -> int:
    """Indices of the contacts between the arm and the world; returns their count.

    Arm-arm and world-world contacts are not a push on the world and are left out;
    only the first ``len(idx)`` indices are written.
    """
    n = 0
    for i in range(g1.shape[0]):
        if arm_geom[g1[i]] == arm_geom[g2[i]] or efc[i] < 0:
            continue
        if n < idx.shape[0]:
            idx[n] = i
        n += 1
    return n


class MujocoArmView:
    """The filter's view of a MuJoCo arm (see the module docstring).

    Args:
        kin: the arm; its ``data`` must hold current kinematics (after ``mj_step`` or
            ``mj_kinematics``).
    """

    def __init__(self, kin: ArmKinematics) -> None:
        self.kin = kin
        self.scale = np.asarray(kin.scale, dtype=np.float64).copy()
        self.dt = float(kin.dt)
        idx = kin.index()
        if idx is None:
            raise TypeError("the shield supports hinge and slide arm joints only")
        self.idx = idx
        self.mode = 1 if kin.action_mode == "ee_velocity" else 0
        self.n = len(kin.joints)
        nv = kin.model.nv
        self.con = np.zeros((0, 4 + 3 * nv))
        self.work = np.zeros((4, self.n))  # scratch of arm_state_into
        self._force = np.zeros(6)
        self._data: Any = None
        self.mj: Any = ()  # (qpos, xanchor, xaxis, site_xpos, site_size)
        self.args: tuple[Any, ...] = ()
        self._grow_contacts(4)

    @property
    def sizes(self) -> tuple[int, int, int]:
        """``(joints, keep-out sites, keep-out boxes)`` for :meth:`PackedState.reserve`."""
        return self.n, len(self.kin.keepout_sites), self.kin.boxes.shape[0]

    def prepare(self, contacts: bool) -> int:
        """Bind MuJoCo's arrays (once per ``MjData``) and gather the contacts; their count."""
        m, d = self.kin.model, self.kin.data
        if d is not self._data:  # views of MuJoCo's arrays, taken once per MjData
            self._data = d
            self.mj = (d.qpos, d.xanchor, d.xaxis, d.site_xpos, m.site_size)
            self._bind()
        return self._gather_contacts(m, d) if contacts and d.ncon else 0

    def _bind(self) -> None:
        """``args``: what the filter's numba call takes of this arm, in its order (the arrays are
        views that stay valid; rebuilt when the MjData or the contact buffer changes)."""
        kin = self.kin
        self.args = (
            self.mode, kin.damping, self.idx, *self.mj, kin.boxes, kin.q_low, kin.q_high, self.con,
        )  # fmt: skip

    def pack(self, out: PackedState, *, contacts: bool = True) -> None:
        """The state into ``out`` (one numba call after the contacts are gathered)."""
        nc = self.prepare(contacts)
        out.reserve(*self.sizes, nc)
        qpos, xanchor, xaxis, site_xpos, site_size = self.mj
        kin = self.kin
        arm_state_into(
            self.mode, kin.damping, self.idx, qpos, xanchor, xaxis, site_xpos, site_size,
            kin.boxes, kin.q_low, kin.q_high, self.con, nc, self.work,
            out.Fk, out.F3, out.F1, out.dims,
        )  # fmt: skip

    def state(self) -> ArmState:
        """The state as an :class:`ArmState` (unpacked from :meth:`pack`: one implementation)."""
        packed = PackedState(len(self.scale))
        self.pack(packed)
        return packed.unpack(self.dt)

    def _gather_contacts(self, m: mujoco.MjModel, d: mujoco.MjData) -> int:
        """Arm-vs-world contacts into ``self.con``: force, normal (arm -> other), point Jacobian."""
        con = d.contact
        g1, g2 = con.geom1, con.geom2
        arm = self.kin.arm_geom
        n = _arm_contacts(g1, g2, con.efc_address, arm, self._con_idx)
        if n > len(self._con_idx):  # more than the buffers hold: grow and gather again
            self._grow_contacts(n)
            n = _arm_contacts(g1, g2, con.efc_address, arm, self._con_idx)
        if n:
            frame, pos, bodies = con.frame, con.pos, m.geom_bodyid
            for j in range(n):
                i = int(self._con_idx[j])
                mujoco.mj_contactForce(m, d, i, self._force)
                arm1 = arm[g1[i]]
                row = self.con[j]
                row[0] = abs(float(self._force[0]))
                # frame[:3] points from geom1 to geom2; we want arm -> other
                row[1:4] = frame[i, :3] if arm1 else -frame[i, :3]
                body = bodies[g1[i] if arm1 else g2[i]]
                mujoco.mj_jac(m, d, self._con_jacs[j], None, pos[i], body)
        return n

    def _grow_contacts(self, n: int) -> None:
        nv = (self.con.shape[1] - 4) // 3
        self._con_idx = np.zeros(2 * n, dtype=np.int64)
        self.con = np.zeros((2 * n, 4 + 3 * nv))
        self._con_jacs = [row[4:].reshape(3, nv) for row in self.con]  # views for mj_jac
        if self.mj:
            self._bind()


class FetchArmView:
    """Adapter for gymnasium-robotics Fetch tasks (``FetchReach/Push/PickAndPlace-v4``).

    Fetch actions are end-effector displacements (``0.05 * a`` metres per step,
    through a mocap weld) plus a gripper command. The physical action is the
    end-effector velocity ``0.05 a / dt`` (m/s) on the first three entries; the
    gripper entry passes through (scale 1, box rows only). There is no joint
    access (the arm follows the mocap), so joint limits are not enforced.
    """

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        self.env = env.unwrapped
        u: Any = self.env
        self.dt = float(u.dt)
        self.scale = np.array([0.05 / self.dt] * 3 + [1.0])
        self._E = np.hstack([np.eye(3), np.zeros((3, 1))])  # ee velocity = the physical u[:3]
        self._site = mujoco.mj_name2id(u.model, mujoco.mjtObj.mjOBJ_SITE, FETCH_GRIP_SITE)
        if self._site < 0:
            raise TypeError(f"FetchArmView needs a Fetch env with the {FETCH_GRIP_SITE!r} site")

    def state(self) -> ArmState:
        d: Any = self.env.data  # type: ignore[attr-defined]
        return ArmState(
            dt=self.dt, ee_pos=d.site_xpos[self._site].copy(), ee_map=(self._E, np.zeros(3))
        )


def _is_fetch(env: Any) -> bool:
    # a gymnasium-robotics Fetch env: a MuJoCo model with the grip site and a 4-entry action
    model = getattr(env, "model", None)
    if not isinstance(model, mujoco.MjModel) or getattr(env, "action_space", None) is None:
        return False
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, FETCH_GRIP_SITE)
    return site >= 0 and env.action_space.shape == (4,) and hasattr(env, "dt")


def arm_view(env: gym.Env[Any, Any]) -> MujocoArmView | FetchArmView:
    """The adapter for ``env``: its ``kinematics`` (an :class:`ArmKinematics`) or a Fetch arm.

    Raises:
        TypeError: the env offers neither; pass ``arm=`` (an :class:`ArmView`) explicitly.
    """
    inner = env.unwrapped
    kin = getattr(inner, "kinematics", None)
    if isinstance(kin, ArmKinematics):
        return MujocoArmView(kin)
    if _is_fetch(inner):
        return FetchArmView(env)
    raise TypeError(
        f"Shield has no adapter for {type(inner).__name__}: give the env a `kinematics` "
        "attribute (safebot.shield.ArmKinematics) or pass arm=... (an ArmView) explicitly"
    )
