"""Constraint rows ``A u <= b`` on the physical action ``u`` from the arm's state and the bounds.

Every limit is linear in the command (design rule 1), because every velocity
the limits talk about is affine in ``u``:

* joint velocity            ``qd = M u + c``
* end-effector velocity     ``v  = E u + e``
* a site's velocity         ``v_s = S u + s``
* contact approach speed    ``n . v_p = N u + nu``

Position-like limits use the barrier form (Ames et al. 2019, "Control barrier
functions: theory and applications"): the allowed rate toward a boundary is
``gain * distance``, so it shrinks to zero at the boundary and ``u = 0`` stays
feasible inside the envelope. Outside it (after a tightening, say) the rows
require backing off, but never faster than ``backoff`` so the set stays feasible
alongside the speed limits.

One function per limit kind, each ``rows(state, bound, ...) -> Rows``;
:func:`build` stacks them into one fixed-size problem for the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from safebot.envelope import Bounds, Envelope

F64 = NDArray[np.float64]

# Row kind codes; index into ROW_KINDS. "action_box" keeps u inside the hard action scale.
ROW_KINDS = (
    "action_box",
    "joint_velocity",
    "ee_speed",
    "workspace",
    "keepout",
    "joint_position",
    "contact_force",
)
KIND_CODE = {k: i for i, k in enumerate(ROW_KINDS)}

_CORNERS = np.array(
    [[sx, sy, sz] for sx in (1, -1) for sy in (1, -1) for sz in (1, -1)], dtype=np.float64
) / np.sqrt(3)
MAX_CONTACT_ROWS = 4
# Approach speed (m/s) allowed along a contact normal at zero force; it falls to 0 at the force bound.
CONTACT_APPROACH_SPEED = 0.2


@dataclass
class ArmState:
    """What the shield needs to know about the arm at one control step.

    Attributes:
        dt: control period (s).
        ee_pos: end-effector position (m).
        ee_map: ``(E, e)``: end-effector linear velocity ``E u + e``; ``None`` if unknown.
        qd_map: ``(M, c)``: joint velocity ``M u + c``; ``None`` for arms without joint access (Fetch mocap).
        q, q_low, q_high: joint positions and limits (rad); ``None`` without joint access.
        sites: ``(position, (S, s))`` of each site checked against keep-out boxes.
        boxes: keep-out boxes ``(centre, half_size)`` (world-axis-aligned).
        contacts: ``(force, (N, nu))`` per arm contact: force (N) and the approach speed map
            along the normal into the touched object.
        action_dims: which entries of the full action ``u`` the rows act on (others pass through).
    """

    dt: float
    ee_pos: F64
    ee_map: tuple[F64, F64] | None
    qd_map: tuple[F64, F64] | None = None
    q: F64 | None = None
    q_low: F64 | None = None
    q_high: F64 | None = None
    sites: list[tuple[F64, tuple[F64, F64]]] = field(default_factory=list)
    boxes: list[tuple[F64, F64]] = field(default_factory=list)
    contacts: list[tuple[float, tuple[F64, F64]]] = field(default_factory=list)


@dataclass
class Rows:
    """Rows of ``A u <= b`` with the limit kind of each row (codes into :data:`ROW_KINDS`)."""

    A: F64
    b: F64
    kind: NDArray[np.int64]

    @staticmethod
    def empty(k: int) -> Rows:
        return Rows(np.zeros((0, k)), np.zeros(0), np.zeros(0, dtype=np.int64))


def _rows(A: F64, b: F64, kind: str) -> Rows:
    return Rows(
        np.asarray(A, dtype=np.float64),
        np.asarray(b, dtype=np.float64),
        np.full(len(b), KIND_CODE[kind], dtype=np.int64),
    )


def _barrier_rhs(dist: F64, gain: float, backoff: float) -> F64:
    # rate toward the boundary <= gain * distance; outside (dist < 0) back off, at most at `backoff`
    return np.maximum(gain * dist, -backoff)


def joint_rows(state: ArmState, scale: F64, bounds: Bounds, gain: float, backoff: float) -> Rows:
    """Joint velocity box merged with the joint-position barrier, one row per joint and side.

    Merging keeps the problem small: each joint gets ``lo_i <= qd_i <= hi_i`` with
    ``hi_i = min(v_i, gain * (q_high - margin - q_i))`` and the label of whichever bound is tighter.
    """
    assert state.qd_map is not None
    M, c = state.qd_map
    n = M.shape[0]
    hi = np.full(n, np.inf)
    lo = np.full(n, -np.inf)
    khi = np.full(n, KIND_CODE["joint_velocity"])
    klo = khi.copy()
    if bounds.joint_velocity is not None:
        v = np.broadcast_to(bounds.joint_velocity, (n,))
        hi, lo = v.copy(), -v
    if bounds.joint_margin is not None and state.q is not None:
        assert state.q_low is not None and state.q_high is not None
        m = bounds.joint_margin
        up = _barrier_rhs(state.q_high - m - state.q, gain, backoff)
        down = -_barrier_rhs(state.q - state.q_low - m, gain, backoff)
        tighter_hi, tighter_lo = up < hi, down > lo
        khi = np.where(tighter_hi, KIND_CODE["joint_position"], khi)
        klo = np.where(tighter_lo, KIND_CODE["joint_position"], klo)
        hi, lo = np.minimum(hi, up), np.maximum(lo, down)
    keep_hi, keep_lo = np.isfinite(hi), np.isfinite(lo)
    A = np.vstack([M[keep_hi], -M[keep_lo]])
    b = np.concatenate([hi[keep_hi] - c[keep_hi], -lo[keep_lo] + c[keep_lo]])
    return Rows(A, b, np.concatenate([khi[keep_hi], klo[keep_lo]]).astype(np.int64))


def ee_speed_rows(state: ArmState, bound: F64) -> Rows:
    """Per-axis ``|v_j| <= s_j`` plus eight corner rows ``d . v <= min(s)``.

    The corner rows make the box a polyhedral bound on the norm: with both,
    ``||v|| <= 1.24 min(s)`` instead of ``sqrt(3) s`` for the box alone.
    """
    assert state.ee_map is not None
    E, e = state.ee_map
    s = np.broadcast_to(bound, (3,))
    D = _CORNERS @ E
    A = np.vstack([E, -E, D])
    b = np.concatenate([s - e, s + e, np.full(8, s.min()) - _CORNERS @ e])
    return _rows(A, b, "ee_speed")


def workspace_rows(state: ArmState, low: F64, high: F64, gain: float, backoff: float) -> Rows:
    """End effector inside the box: barrier rows per axis and side."""
    assert state.ee_map is not None
    E, e = state.ee_map
    p = state.ee_pos
    up = _barrier_rhs(high - p, gain, backoff)
    down = _barrier_rhs(p - low, gain, backoff)
    return _rows(np.vstack([E, -E]), np.concatenate([up - e, down + e]), "workspace")


def keepout_rows(state: ArmState, margin: float, gain: float, backoff: float) -> Rows:
    """Each site stays outside each box by ``margin``.

    Uses the box face that separates the site most (a supporting half-space of
    the convex box): the site's approach speed to that face is at most
    ``gain * (distance - margin)``. Outside the corner regions this is exact;
    near an edge it is conservative, which is the safe side.
    """
    A, b = [], []
    for centre, half in state.boxes:
        for pos, (S, s) in state.sites:
            rel = pos - centre
            sep = np.abs(rel) - half
            j = int(np.argmax(sep))
            sign = 1.0 if rel[j] >= 0 else -1.0
            # moving toward the box along axis j means -sign * v_j > 0
            A.append(-sign * S[j])
            b.append(float(_barrier_rhs(np.array(sep[j] - margin), gain, backoff)) + sign * s[j])
    if not A:
        return Rows.empty(0)
    return _rows(np.array(A), np.array(b), "keepout")


def contact_rows(state: ArmState, max_force: float, backoff: float) -> Rows:
    """No further push along a contact normal as the force nears its bound; back off above it.

    The allowed approach speed is ``CONTACT_APPROACH_SPEED * (1 - f / f_max)``:
    full speed at no force, zero at the bound, negative (retreat, at most
    ``backoff``) above it. The strongest ``MAX_CONTACT_ROWS`` contacts get a row.
    """
    if not state.contacts:
        return Rows.empty(0)
    strongest = sorted(state.contacts, key=lambda c: -c[0])[:MAX_CONTACT_ROWS]
    A, b = [], []
    for force, (N, nu) in strongest:
        allowed = max(CONTACT_APPROACH_SPEED * (1.0 - force / max_force), -backoff)
        A.append(N)
        b.append(allowed - float(nu))
    return _rows(np.array(A), np.array(b), "contact_force")


def build(state: ArmState, envelope: Envelope, scale: F64, bounds: Bounds | None = None) -> Rows:
    """All rows for one step, in the action's physical units (``u = scale * a``)."""
    bounds = envelope.bounds() if bounds is None else bounds
    k = len(scale)
    gain = min(
        envelope.barrier_gain, 0.9 / state.dt
    )  # gain * dt < 1: one step cannot cross a boundary
    jgain = min(envelope.joint_gain, 0.9 / state.dt)
    # back-off speed: what the ee may use to return inside after a tightening
    backoff = 0.5 * float(np.min(bounds.ee_speed)) if bounds.ee_speed is not None else 0.05
    jbackoff = (
        0.5 * float(np.min(bounds.joint_velocity)) if bounds.joint_velocity is not None else 0.2
    )
    parts = [
        _rows(np.vstack([np.eye(k), -np.eye(k)]), np.concatenate([scale, scale]), "action_box")
    ]
    if state.qd_map is not None and (
        bounds.joint_velocity is not None or bounds.joint_margin is not None
    ):
        parts.append(joint_rows(state, scale, bounds, jgain, jbackoff))
    if state.ee_map is not None:
        if bounds.ee_speed is not None:
            parts.append(ee_speed_rows(state, bounds.ee_speed))
        if bounds.workspace_low is not None and bounds.workspace_high is not None:
            parts.append(
                workspace_rows(state, bounds.workspace_low, bounds.workspace_high, gain, backoff)
            )
    if bounds.keepout_margin is not None and state.boxes and state.sites:
        parts.append(keepout_rows(state, bounds.keepout_margin, gain, backoff))
    if bounds.contact_force is not None and state.contacts:
        parts.append(contact_rows(state, bounds.contact_force, backoff))
    parts = [p for p in parts if len(p.b)]
    return Rows(
        np.vstack([p.A for p in parts]),
        np.concatenate([p.b for p in parts]),
        np.concatenate([p.kind for p in parts]),
    )


def margins(state: ArmState, bounds: Bounds) -> dict[str, float]:
    """Distance of the current state to each position-like bound (>= 0 inside), for ``info``."""
    out: dict[str, float] = {}
    if bounds.workspace_low is not None and bounds.workspace_high is not None:
        out["workspace"] = float(
            min(
                np.min(state.ee_pos - bounds.workspace_low),
                np.min(bounds.workspace_high - state.ee_pos),
            )
        )
    if bounds.keepout_margin is not None and state.boxes and state.sites:
        seps = [
            float(np.max(np.abs(pos - c) - h)) for c, h in state.boxes for pos, _ in state.sites
        ]
        out["keepout"] = min(seps) - bounds.keepout_margin
    if bounds.joint_margin is not None and state.q is not None:
        assert state.q_low is not None and state.q_high is not None
        out["joint_position"] = float(
            min(np.min(state.q - state.q_low), np.min(state.q_high - state.q)) - bounds.joint_margin
        )
    if bounds.contact_force is not None:
        fmax = max((f for f, _ in state.contacts), default=0.0)
        out["contact_force"] = bounds.contact_force - fmax
    return out
