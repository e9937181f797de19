"""A MuJoCo arm as the safety filter reads it: :class:`ArmKinematics`, and its numba state.

The arm is data: an env (or deploy's kinematic model, or a retargeted arm) describes
its joints, end-effector site, keep-out sites, joint limits, action mode, action
scale and the keep-out boxes it *believes* in (docs/design.md, rule 6: the rows are
built from the controller's map, the physics runs on the truth). Nothing here knows
the Panda: joint counts and names come from the model.

:func:`arm_state_into` turns MuJoCo's arrays into a
:class:`~safebot.shield.packed.PackedState` in one numba pass. The site Jacobians
come from the joint axes and anchors MuJoCo's kinematics already computed -- what
``mj_jacSite`` returns for hinge and slide joints, without a call per site.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np
from numba import njit
from numpy.typing import NDArray

from safebot.shield.packed import (
    D_CAP_NB,
    D_CAP_NC,
    D_CAP_NQ,
    D_CAP_NS,
    D_HAS_EE,
    D_HAS_Q,
    D_HAS_QD,
    D_K,
    D_NB,
    D_NC,
    D_NQ,
    D_NS,
    F64,
    check_state,
    offsets,
)

ACTION_MODES = ("joint_velocity", "ee_velocity")

PINV_DAMPING = 0.05
"""Damped least squares factor of the end-effector velocity map (Nakamura & Hanafusa 1986):
keeps joint speeds bounded near singularities."""

_HINGE, _SLIDE = int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)


@dataclass
class ArmKinematics:
    """Everything the safety filter needs to know about a MuJoCo arm, as public data.

    Attributes:
        model, data: the compiled scene (the filter reads poses after ``mj_kinematics``).
        joints: ids of the arm's actuated joints, base to tip (hinge or slide).
        ee_site: the end-effector site id.
        keepout_sites: sites whose spheres (radius ``site_size[:, 0]``) stay outside the boxes.
        arm_geom: per geom, whether it belongs to the arm (contacts arm vs world get rows).
        q_low, q_high: joint limits the rows enforce (rad).
        action_mode: ``"joint_velocity"`` (``u`` is ``qd``) or ``"ee_velocity"`` (``u`` is the
            end effector's linear velocity, ``qd = J^T (J J^T + damping^2 I)^-1 u``).
        scale: physical units per unit of normalised action, one per action entry.
        dt: control period (s).
        boxes: keep-out boxes the controller believes in, ``(nb, 6)``: centre then half size,
            world-axis-aligned (m). The owner updates it in place (e.g. at reset).
        damping: damped-least-squares factor of the ``ee_velocity`` map.
    """

    model: mujoco.MjModel
    data: mujoco.MjData
    joints: NDArray[np.int64]
    ee_site: int
    keepout_sites: NDArray[np.int64]
    arm_geom: NDArray[np.bool_]
    q_low: F64
    q_high: F64
    action_mode: str
    scale: F64
    dt: float
    boxes: F64
    damping: float = PINV_DAMPING

    def __post_init__(self) -> None:
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {self.action_mode!r}")
        n, k = len(self.joints), len(self.scale)
        if self.action_mode == "ee_velocity" and k != 3:
            raise ValueError(f"ee_velocity actions have 3 entries, the scale has {k}")
        if self.action_mode == "joint_velocity" and k != n:
            raise ValueError(f"joint_velocity actions have one entry per joint ({n}), got {k}")
        if self.q_low.shape != (n,) or self.q_high.shape != (n,):
            raise ValueError(f"q_low and q_high need {n} entries (one per joint)")
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 6:
            raise ValueError(f"boxes must be (nb, 6) centre + half size, got {self.boxes.shape}")

    @staticmethod
    def boxes_array(boxes: list[tuple[F64, F64]]) -> F64:
        """``[(centre, half_size), ...]`` as the ``(nb, 6)`` array of :attr:`boxes`."""
        out = np.zeros((len(boxes), 6))
        for i, (c, h) in enumerate(boxes):
            out[i, :3], out[i, 3:] = c, h
        return out

    def box_list(self) -> list[tuple[F64, F64]]:
        """:attr:`boxes` as ``[(centre, half_size), ...]`` (copies)."""
        return [(row[:3].copy(), row[3:].copy()) for row in self.boxes]

    def index(self) -> NDArray[np.int64] | None:
        """The index vector of :func:`arm_state_into`; ``None`` if a joint is neither hinge nor slide.

        Layout: ``dims`` (8, as written into the packed state, 0 contacts), then per joint
        (n each) its id, type, dof and qpos address, then the keep-out site ids (ns), the
        end-effector site, and for the end effector and each keep-out site (n each)
        whether the joint moves it.
        """
        model, joints = self.model, np.asarray(self.joints, dtype=np.int64)
        types = model.jnt_type[joints]
        if not np.all((types == _HINGE) | (types == _SLIDE)):
            return None
        n, sites = len(joints), [int(s) for s in self.keepout_sites]
        dims = np.zeros(8, dtype=np.int64)
        dims[[D_HAS_EE, D_HAS_QD, D_HAS_Q]] = 1
        dims[D_K], dims[D_NQ], dims[D_NS], dims[D_NB] = len(self.scale), n, len(sites), 0

        def moves(site: int) -> list[bool]:
            chain, body = set(), int(model.site_bodyid[site])
            while body > 0:
                chain.add(body)
                body = int(model.body_parentid[body])
            return [int(model.jnt_bodyid[j]) in chain for j in joints]

        parts = [
            dims,
            joints,
            types,
            model.jnt_dofadr[joints],
            model.jnt_qposadr[joints],
            sites,
            [self.ee_site],
            *(moves(s) for s in [self.ee_site, *sites]),
        ]
        return np.concatenate([np.asarray(p, dtype=np.int64).reshape(-1) for p in parts])


@njit(cache=True)
def _site_jacobian(
    site_xpos: F64, site: int, idx: Any, o_moves: int, n: int, xanchor: F64, xaxis: F64, J: F64
) -> None:
    """``J[:3, :n]``: linear Jacobian of a site over the arm joints (see :meth:`ArmKinematics.index`).

    Hinge: ``axis x (p - anchor)``; slide: ``axis``; zero for joints that do not move it.
    """
    px, py, pz = site_xpos[site, 0], site_xpos[site, 1], site_xpos[site, 2]
    for j in range(n):
        jnt = idx[8 + j]
        if not idx[o_moves + j]:
            J[0, j] = J[1, j] = J[2, j] = 0.0
            continue
        ax, ay, az = xaxis[jnt, 0], xaxis[jnt, 1], xaxis[jnt, 2]
        if idx[8 + n + j] == _SLIDE:
            J[0, j], J[1, j], J[2, j] = ax, ay, az
            continue
        rx, ry, rz = px - xanchor[jnt, 0], py - xanchor[jnt, 1], pz - xanchor[jnt, 2]
        J[0, j] = ay * rz - az * ry
        J[1, j] = az * rx - ax * rz
        J[2, j] = ax * ry - ay * rx


@njit(cache=True)
def _pinv_map(J: F64, n: int, damping: float, Fk: F64, kM: int) -> None:
    """``M = J^T (J J^T + damping^2 I)^-1`` into ``Fk[kM : kM + n]`` (the ``ee_velocity`` map).

    The 3x3 matrix is symmetric positive definite (the damping bounds its smallest
    eigenvalue away from 0), so its inverse by cofactors is accurate; it agrees with
    ``np.linalg.solve`` to rounding.
    """
    a = b = c = d = e = f = 0.0
    for j in range(n):
        x, y, z = J[0, j], J[1, j], J[2, j]
        a += x * x
        b += x * y
        c += x * z
        d += y * y
        e += y * z
        f += z * z
    a += damping * damping
    d += damping * damping
    f += damping * damping
    i00, i01, i02 = d * f - e * e, c * e - b * f, b * e - c * d
    i11, i12, i22 = a * f - c * c, b * c - a * e, a * d - b * b
    det = a * i00 + b * i01 + c * i02
    i00, i01, i02, i11, i12, i22 = i00 / det, i01 / det, i02 / det, i11 / det, i12 / det, i22 / det
    for j in range(n):
        x, y, z = J[0, j], J[1, j], J[2, j]
        Fk[kM + j, 0] = x * i00 + y * i01 + z * i02
        Fk[kM + j, 1] = x * i01 + y * i11 + z * i12
        Fk[kM + j, 2] = x * i02 + y * i12 + z * i22


@njit(cache=True)
def _check_arm(idx: Any, dims: Any, nb: int, nc: int, con: F64, work: F64, site_size: F64) -> None:
    n, ns = idx[D_NQ], idx[D_NS]
    if idx.shape[0] != 8 + 4 * n + ns + 1 + (ns + 1) * n:
        raise ValueError("arm_state_into: idx is not an ArmKinematics.index()")
    if dims[D_CAP_NQ] < n or dims[D_CAP_NS] < ns or dims[D_CAP_NB] < nb or dims[D_CAP_NC] < nc:
        raise ValueError("arm_state_into: packed state too small (PackedState.reserve)")
    if con.shape[0] < nc or work.shape[0] < 4 or work.shape[1] < n:
        raise ValueError("arm_state_into: contact or scratch buffer too small")
    if site_size.shape[1] < 1:
        raise ValueError("arm_state_into: site_size is not the model's (nsite, 3) array")


@njit(cache=True)
def _mapped_rows(J: F64, n: int, Fk: F64, kM: int, k: int, out: int) -> None:
    # Fk[out : out + 3] = J M: a point's velocity per unit of u (c = 0 in both action modes)
    for a in range(3):
        for j in range(k):
            acc = 0.0
            for t in range(n):
                acc += J[a, t] * Fk[kM + t, j]
            Fk[out + a, j] = acc


@njit(cache=True)
def arm_state_into(
    mode: int, damping: float, idx: Any, qpos: F64, xanchor: F64, xaxis: F64, site_xpos: F64,
    site_size: F64, boxes: F64, q_low: F64, q_high: F64, con: F64, nc: int, work: F64,
    Fk: F64, F3: F64, F1: F64, dims: Any,
) -> None:  # fmt: skip
    """A MuJoCo arm's state straight into a :class:`~safebot.shield.packed.PackedState`.

    Args:
        mode: 0: joint-velocity actions (``M = I``); 1: end-effector velocity through the
            damped pseudo-inverse ``M = J^T (J J^T + damping^2 I)^-1``.
        idx: :meth:`ArmKinematics.index`.
        qpos, xanchor, xaxis, site_xpos: ``MjData`` arrays; site_size: ``MjModel``'s (a
            keep-out site's radius is its ``site_size[site, 0]``).
        boxes: the believed keep-out boxes, ``(nb, 6)``.
        q_low, q_high: the joint limits the rows enforce.
        con: one row per arm contact (``nc`` of them): force, the normal from the arm into the
            other body (3), the contact point's Jacobian from ``mj_jac`` (3 x nv, flat).
        work: scratch, at least 4 x n.
    """
    n, ns, nb = idx[D_NQ], idx[D_NS], boxes.shape[0]
    _check_arm(idx, dims, nb, nc, con, work, site_size)
    # idx layout: dims, joint id, type, dof, qpos address, sites, ee, moves
    oDof, oQ, oSite = 8 + 2 * n, 8 + 3 * n, 8 + 4 * n
    oEe = oSite + ns
    oMoves = oEe + 1
    for i in range(8):
        dims[i] = idx[i]
    dims[D_NB], dims[D_NC] = nb, nc
    check_state(Fk, F3, F1, dims)
    k = dims[D_K]
    o = offsets(dims)
    kE, kM, kS, kN = o[0], o[1], o[2], o[3]
    tP, tE, tSite, tS, tBc, tBh = o[5], o[6], o[7], o[8], o[9], o[10]
    fC, fQ, fQl, fQh, fF, fNu, fR = o[12], o[13], o[14], o[15], o[16], o[17], o[18]
    ee = idx[oEe]
    for a in range(3):
        F3[tP, a] = site_xpos[ee, a]
        F3[tE, a] = 0.0  # e = J c, and c = 0 below
    _site_jacobian(site_xpos, ee, idx, oMoves, n, xanchor, xaxis, work)
    # the action map qd = M u + c; no null-space term in either mode: u = 0 commands qd = 0
    if mode == 0:
        for i in range(n):
            for j in range(k):
                Fk[kM + i, j] = 1.0 if i == j else 0.0
    else:
        _pinv_map(work, n, damping, Fk, kM)
    for i in range(n):
        F1[fC + i] = 0.0
        F1[fQ + i] = qpos[idx[oQ + i]]
        F1[fQl + i] = q_low[i]
        F1[fQh + i] = q_high[i]
    _mapped_rows(work, n, Fk, kM, k, kE)  # E = J M
    for si in range(ns):
        site = idx[oSite + si]
        _site_jacobian(site_xpos, site, idx, oMoves + (si + 1) * n, n, xanchor, xaxis, work)
        F1[fR + si] = site_size[site, 0]
        for a in range(3):
            F3[tSite + si, a] = site_xpos[site, a]
            F3[tS + si, a] = 0.0  # J_site c
        _mapped_rows(work, n, Fk, kM, k, kS + 3 * si)  # S = J_site M
    for bi in range(nb):
        for a in range(3):
            F3[tBc + bi, a] = boxes[bi, a]
            F3[tBh + bi, a] = boxes[bi, 3 + a]
    nv = (con.shape[1] - 4) // 3
    for ci in range(nc):
        F1[fF + ci] = con[ci, 0]
        F1[fNu + ci] = 0.0  # (n . J_point) c
        for t in range(n):  # n . J_point over the arm joints, in work row 3
            acc = 0.0
            for a in range(3):
                acc += con[ci, 1 + a] * con[ci, 4 + a * nv + idx[oDof + t]]
            work[3, t] = acc
        for j in range(k):
            acc = 0.0
            for t in range(n):
                acc += work[3, t] * Fk[kM + t, j]
            Fk[kN + ci, j] = acc
