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

Those functions are the readable reference. The shield's hot path builds the
same rows, in the same order, in numba on preallocated arrays
(:class:`PackedState`, :func:`build_into`, :func:`margins_into`, and
:func:`arm_rows_into` straight from a MuJoCo arm); see "Fast path" below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np
from numba import njit
from numpy.typing import NDArray

from safebot.envelope import LIMIT_KINDS, Bounds, Envelope

F64 = NDArray[np.float64]

# Row kind codes; index into ROW_KINDS. "action_box" keeps u inside the hard action scale.
ROW_KINDS = ("action_box", *LIMIT_KINDS)
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
        site_radius: radius (m) of the sphere around each site that must stay outside the
            keep-out boxes (a link's rough cross-section: MuJoCo's ``site_size[:, 0]``), one
            per entry of ``sites``; empty means 0 for every site (point sites).
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
    site_radius: list[float] = field(default_factory=list)

    def radii(self) -> list[float]:
        """``site_radius`` with one entry per site (zeros where it is empty)."""
        if not self.site_radius:
            return [0.0] * len(self.sites)
        if len(self.site_radius) != len(self.sites):
            raise ValueError(
                f"ArmState has {len(self.sites)} sites but {len(self.site_radius)} site radii"
            )
        return [float(r) for r in self.site_radius]


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
    """Each site's sphere (``state.site_radius``) stays outside each box by ``margin``.

    The sites are the centres of bulky links, so the distance that counts is the
    site's distance minus its radius. Uses the box face that separates the site
    most (a supporting half-space of the convex box): the site's approach speed
    to that face is at most ``gain * (distance - margin - radius)``. Outside the
    corner regions this is exact; near an edge it is conservative, which is the
    safe side.
    """
    A, b = [], []
    radii = state.radii()
    for centre, half in state.boxes:
        for (pos, (S, s)), radius in zip(state.sites, radii, strict=True):
            rel = pos - centre
            sep = np.abs(rel) - half
            j = int(np.argmax(sep))
            sign = 1.0 if rel[j] >= 0 else -1.0
            # moving toward the box along axis j means -sign * v_j > 0
            A.append(-sign * S[j])
            dist = sep[j] - margin - radius
            b.append(float(_barrier_rhs(np.array(dist), gain, backoff)) + sign * s[j])
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
        # the sphere around each site: its separation from the box less its radius
        radii = state.radii()
        seps = [
            float(np.max(np.abs(pos - c) - h)) - r
            for c, h in state.boxes
            for (pos, _), r in zip(state.sites, radii, strict=True)
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


# ---------------------------------------------------------------------------
# Fast path. The functions above are the readable reference; the shield's hot
# path builds the same rows, in the same order, with one numba call on
# preallocated arrays (tests/test_constraints_fast.py holds the two together).
#
# What costs time on the hot path is not arithmetic but overhead that grows with
# code size, since an env step between two shield steps evicts it from the CPU
# caches: every array argument of a numba call (~0.1 us) and every array view
# made inside one (a reference count and its code). So a state travels in three
# buffers plus an int64 ``dims`` vector -- ``Fk`` (rows of length k: the maps
# ``E``, ``M``, ``S``, ``N``), ``F3`` (points and offsets in 3-space) and ``F1``
# (scalars per joint, contact or site) -- and the numba code indexes them at offsets
# (:func:`_offsets`) instead of slicing. Absent limits are flags, not ``None``;
# NaN behaves as in the reference (numpy's min/max propagate it, Python's
# ``min``/``max`` keep the first value).

# PackedState.dims entries: sizes in use, presence flags, then capacities
D_K, D_NQ, D_NS, D_NB, D_NC, D_HAS_EE, D_HAS_QD, D_HAS_Q = range(8)
D_CAP_NQ, D_CAP_NS, D_CAP_NB, D_CAP_NC = range(8, 12)
# PackedBounds.flags entries: which limits are enforced
F_JVEL, F_EE_SPEED, F_WS, F_KEEPOUT, F_JMARGIN, F_CONTACT = range(6)
# PackedBounds.par entries
P_KEEPOUT, P_JMARGIN, P_CONTACT, P_GAIN, P_JGAIN, P_BACKOFF, P_JBACKOFF, P_NJV = range(8)
_NPAR = 8
_BF_PAR = 9  # offset of par in PackedBounds.F (after ee_speed, ws_low, ws_high)
_BF_JVEL = _BF_PAR + _NPAR  # the joint velocity bound follows par
MARGIN_KINDS = ("workspace", "keepout", "joint_position", "contact_force")
"""Order of the margins the fast path reports (bit ``i`` of its mask = ``MARGIN_KINDS[i]``)."""

_K_JV, _K_EE, _K_WS, _K_KO, _K_JP, _K_CF = (KIND_CODE[k] for k in LIMIT_KINDS)


@njit(cache=True)
def _offsets(dims: Any) -> tuple[int, ...]:
    """Where each field starts in a PackedState's buffers, from the capacities in ``dims``.

    ``(Fk rows: E, M, S, con_N, end;  F3 rows: ee_pos, e, site_pos, s, box_c, box_h, end;
    F1 entries: c, q, q_low, q_high, con_f, con_nu, site_radius, end)``. ``S`` is flat over
    (site, axis): row ``S + 3 * site + axis``.
    """
    nq, ns, nb, nc = dims[D_CAP_NQ], dims[D_CAP_NS], dims[D_CAP_NB], dims[D_CAP_NC]
    kS = 3 + nq
    kN = kS + 3 * ns
    return (
        0, 3, kS, kN, kN + nc,
        0, 1, 2, 2 + ns, 2 + 2 * ns, 2 + 2 * ns + nb, 2 + 2 * ns + 2 * nb,
        0, nq, 2 * nq, 3 * nq, 4 * nq, 4 * nq + nc, 4 * nq + 2 * nc, 4 * nq + 2 * nc + ns,
    )  # fmt: skip


class PackedState:
    """An :class:`ArmState` as arrays, the fast builder's input.

    Three buffers hold every field: ``Fk`` (rows of length ``k``), ``F3`` (rows of
    length 3) and ``F1``; ``dims`` (``D_*``) holds the sizes in use, the presence
    flags and the capacities. The named attributes are views into the buffers,
    shaped as in :class:`ArmState`: ``E`` (3, k), ``e`` (3,), ``M`` (nq, k),
    ``c``/``q``/``q_low``/``q_high`` (nq,), ``site_pos`` (ns, 3), ``S`` (ns, 3, k),
    ``s`` (ns, 3), ``site_radius`` (ns,), ``box_c``/``box_h`` (nb, 3), ``con_f`` (nc,),
    ``con_N`` (nc, k), ``con_nu`` (nc,). Capacities grow on demand (:meth:`reserve`).
    """

    def __init__(self, k: int, nq: int = 0, ns: int = 0, nb: int = 0, nc: int = 0) -> None:
        self.k = k
        self.dims = np.zeros(12, dtype=np.int64)
        self.dims[D_K] = k
        self._make(nq, ns, nb, nc)

    def _make(self, nq: int, ns: int, nb: int, nc: int) -> None:
        d, k = self.dims, self.k
        d[D_CAP_NQ], d[D_CAP_NS], d[D_CAP_NB], d[D_CAP_NC] = nq, ns, nb, nc
        self._caps = (nq, ns, nb, nc)
        o = _offsets(d)
        self.Fk, self.F3, self.F1 = np.zeros((o[4], k)), np.zeros((o[11], 3)), np.zeros(o[19])
        Fk, F3, F1 = self.Fk, self.F3, self.F1
        self.E, self.M = Fk[o[0] : o[1]], Fk[o[1] : o[2]]
        self.S, self.con_N = Fk[o[2] : o[3]].reshape(ns, 3, k), Fk[o[3] : o[4]]
        self.ee_pos, self.e = F3[o[5]], F3[o[6]]
        self.site_pos, self.s = F3[o[7] : o[8]], F3[o[8] : o[9]]
        self.box_c, self.box_h = F3[o[9] : o[10]], F3[o[10] : o[11]]
        self.c, self.q, self.q_low, self.q_high = (F1[o[i] : o[i + 1]] for i in range(12, 16))
        self.con_f, self.con_nu = F1[o[16] : o[17]], F1[o[17] : o[18]]
        self.site_radius = F1[o[18] : o[19]]

    def reserve(self, nq: int = 0, ns: int = 0, nb: int = 0, nc: int = 0) -> None:
        """Make room for ``nq`` joints, ``ns`` sites, ``nb`` boxes and ``nc`` contacts.

        Growing reallocates the buffers (contents are lost: call before filling).
        """
        caps = self._caps
        if nq > caps[0] or ns > caps[1] or nb > caps[2] or nc > caps[3]:
            # contacts come and go: leave headroom so a few more do not reallocate every step
            self._make(
                max(nq, caps[0]), max(ns, caps[1]), max(nb, caps[2]), max(nc, caps[3], 2 * nc)
            )

    def max_rows(self) -> int:
        """Upper bound on the rows :func:`build_into` writes for the current ``dims``."""
        return int(_max_rows(self.dims))


@njit(cache=True)
def _max_rows(dims: Any) -> int:
    k, nq, ns, nb, nc = dims[D_K], dims[D_NQ], dims[D_NS], dims[D_NB], dims[D_NC]
    return 2 * k + 2 * nq + 14 + 6 + ns * nb + min(nc, MAX_CONTACT_ROWS)


def pack_state(state: ArmState, k: int, out: PackedState | None = None) -> PackedState:
    """Copy ``state`` into a :class:`PackedState` (the generic, allocation-heavy way in)."""
    out = PackedState(k) if out is None else out
    nq = 0
    if state.qd_map is not None:
        nq = state.qd_map[0].shape[0]
    elif state.q is not None:
        nq = len(state.q)
    out.reserve(nq, len(state.sites), len(state.boxes), len(state.contacts))
    d = out.dims
    d[:D_CAP_NQ] = 0
    d[D_K] = k
    out.ee_pos[:] = state.ee_pos
    if state.ee_map is not None:
        out.E[:], out.e[:] = state.ee_map
        d[D_HAS_EE] = 1
    d[D_NQ] = nq
    if state.qd_map is not None:
        out.M[:nq], out.c[:nq] = state.qd_map
        d[D_HAS_QD] = 1
    if state.q is not None:
        assert state.q_low is not None and state.q_high is not None
        out.q[:nq], out.q_low[:nq], out.q_high[:nq] = state.q, state.q_low, state.q_high
        d[D_HAS_Q] = 1
    for i, ((pos, (S, s)), radius) in enumerate(zip(state.sites, state.radii(), strict=True)):
        out.site_pos[i], out.S[i], out.s[i], out.site_radius[i] = pos, S, s, radius
    for i, (centre, half) in enumerate(state.boxes):
        out.box_c[i], out.box_h[i] = centre, half
    for i, (force, (N, nu)) in enumerate(state.contacts):
        out.con_f[i], out.con_N[i], out.con_nu[i] = force, N, nu
    d[D_NS], d[D_NB], d[D_NC] = len(state.sites), len(state.boxes), len(state.contacts)
    return out


@dataclass
class PackedBounds:
    """:class:`Bounds` with the envelope's gains and back-off speeds, as arrays.

    ``F`` holds ``ee_speed`` (3), ``ws_low`` (3), ``ws_high`` (3), ``par`` (``P_*``), then the
    joint velocity bound (one value, or one per joint: ``par[P_NJV]`` of them);
    ``flags`` (``F_*``) says which limits are enforced.
    """

    F: F64
    flags: NDArray[np.int64]

    @property
    def par(self) -> F64:
        return self.F[_BF_PAR:_BF_JVEL]


def pack_bounds(bounds: Bounds, envelope: Envelope, dt: float) -> PackedBounds:
    """Bounds for :func:`build_into`, computed as :func:`build` does (control period ``dt``)."""
    jv = None if bounds.joint_velocity is None else np.asarray(bounds.joint_velocity).reshape(-1)
    F = np.zeros(_BF_JVEL + (0 if jv is None else len(jv)))
    ee, lo, hi, par = F[0:3], F[3:6], F[6:9], F[_BF_PAR:_BF_JVEL]
    par[:] = np.nan
    flags = np.zeros(6, dtype=np.int64)
    par[P_GAIN] = min(envelope.barrier_gain, 0.9 / dt)
    par[P_JGAIN] = min(envelope.joint_gain, 0.9 / dt)
    par[P_BACKOFF] = 0.5 * float(np.min(bounds.ee_speed)) if bounds.ee_speed is not None else 0.05
    par[P_JBACKOFF] = 0.5 * float(np.min(jv)) if jv is not None else 0.2
    par[P_NJV] = 0 if jv is None else len(jv)
    if jv is not None:
        flags[F_JVEL] = 1
        F[_BF_JVEL:] = jv
    if bounds.ee_speed is not None:
        flags[F_EE_SPEED] = 1
        ee[:] = np.broadcast_to(bounds.ee_speed, (3,))
    if bounds.workspace_low is not None and bounds.workspace_high is not None:
        flags[F_WS] = 1
        lo[:], hi[:] = bounds.workspace_low, bounds.workspace_high
    for flag, p, value in (
        (F_KEEPOUT, P_KEEPOUT, bounds.keepout_margin),
        (F_JMARGIN, P_JMARGIN, bounds.joint_margin),
        (F_CONTACT, P_CONTACT, bounds.contact_force),
    ):
        if value is not None:
            flags[flag] = 1
            par[p] = value
    return PackedBounds(F, flags)


@njit(cache=True)
def _np_min(x: float, y: float) -> float:  # np.minimum: NaN wins
    if x != x or y != y:
        return np.nan
    return x if x <= y else y


@njit(cache=True)
def _np_max(x: float, y: float) -> float:  # np.maximum: NaN wins
    if x != x or y != y:
        return np.nan
    return x if x >= y else y


@njit(cache=True)
def _barrier_nb(dist: float, gain: float, backoff: float) -> float:
    return _np_max(gain * dist, -backoff)


@njit(cache=True)
def _check_state(Fk: F64, F3: F64, F1: F64, dims: Any) -> None:
    o = _offsets(dims)
    if Fk.shape[0] < o[4] or F3.shape[0] < o[11] or F1.shape[0] < o[19]:
        raise ValueError("packed state: buffers smaller than the capacities in dims")
    if Fk.shape[1] != dims[D_K] or F3.shape[1] != 3:
        raise ValueError("packed state: Fk needs k columns, F3 three")
    if (
        dims[D_NQ] > dims[D_CAP_NQ]
        or dims[D_NS] > dims[D_CAP_NS]
        or dims[D_NB] > dims[D_CAP_NB]
        or dims[D_NC] > dims[D_CAP_NC]
    ):
        raise ValueError("packed state: sizes beyond the capacities")


@njit(cache=True)
def _joint_bounds(
    i: int, F1: F64, fQ: int, fQl: int, fQh: int, BF: F64, flags: Any, has_q: int
) -> tuple[float, int, float, int]:
    # joint_rows' upper and lower bound on qd_i, with the kind of each
    hi, lo = np.inf, -np.inf
    khi = klo = _K_JV
    if flags[F_JVEL]:
        v = BF[_BF_JVEL + i] if BF.shape[0] - _BF_JVEL > 1 else BF[_BF_JVEL]  # broadcast
        hi, lo = v, -v
    if flags[F_JMARGIN] and has_q:
        m, g, bo = BF[_BF_PAR + P_JMARGIN], BF[_BF_PAR + P_JGAIN], BF[_BF_PAR + P_JBACKOFF]
        q = F1[fQ + i]
        up = _barrier_nb(F1[fQh + i] - m - q, g, bo)
        down = -_barrier_nb(q - F1[fQl + i] - m, g, bo)
        if up < hi:
            khi = _K_JP
        if down > lo:
            klo = _K_JP
        hi, lo = _np_min(hi, up), _np_max(lo, down)
    return hi, khi, lo, klo


@njit(cache=True)
def build_into(
    scale: F64,
    Fk: F64,
    F3: F64,
    F1: F64,
    dims: Any,
    BF: F64,
    flags: Any,
    A: F64,
    b: F64,
    kind: Any,
) -> int:
    """:func:`build` on a :class:`PackedState` and a :class:`PackedBounds` (``BF``, ``flags``).

    Writes the rows into ``A[:m], b[:m], kind[:m]`` and returns ``m``: the same
    rows in the same order as :func:`build`. ``A`` needs :meth:`PackedState.max_rows` rows.
    Returns -1 where :func:`build` raises: a joint velocity bound that does not
    broadcast to the joints.
    """
    _check_state(Fk, F3, F1, dims)
    k, nq, ns, nb, nc = dims[D_K], dims[D_NQ], dims[D_NS], dims[D_NB], dims[D_NC]
    m_max = _max_rows(dims)
    if A.shape[0] < m_max or b.shape[0] < m_max or kind.shape[0] < m_max or A.shape[1] != k:
        raise ValueError("build_into: A, b, kind need PackedState.max_rows() rows of k entries")
    if scale.shape[0] != k or BF.shape[0] < _BF_JVEL:
        raise ValueError("build_into: scale or bounds of the wrong size")
    o = _offsets(dims)
    kE, kM, kS, kN = o[0], o[1], o[2], o[3]
    tP, tE, tSite, tS, tBc, tBh = o[5], o[6], o[7], o[8], o[9], o[10]
    fC, fQ, fQl, fQh, fF, fNu = o[12], o[13], o[14], o[15], o[16], o[17]
    has_ee, has_qd, has_q = dims[D_HAS_EE], dims[D_HAS_QD], dims[D_HAS_Q]
    gain, backoff = BF[_BF_PAR + P_GAIN], BF[_BF_PAR + P_BACKOFF]
    r = 0
    # action box: u inside the hard scale
    for sign in (1.0, -1.0):
        for i in range(k):
            for j in range(k):
                A[r, j] = 0.0
            A[r, i] = sign
            b[r] = scale[i]
            kind[r] = 0
            r += 1
    # joint velocity merged with the joint-position barrier: all upper rows, then all lower rows
    if has_qd and (flags[F_JVEL] or flags[F_JMARGIN]):
        njv = BF.shape[0] - _BF_JVEL
        if flags[F_JVEL] and njv != 1 and njv != nq:
            return -1  # the bound does not broadcast to the joints (build raises ValueError)
        for side in range(2):
            for i in range(nq):
                hi, khi, lo, klo = _joint_bounds(i, F1, fQ, fQl, fQh, BF, flags, has_q)
                if not np.isfinite(hi if side == 0 else lo):
                    continue
                if side == 0:  # M_i u + c_i <= hi
                    for j in range(k):
                        A[r, j] = Fk[kM + i, j]
                    b[r] = hi - F1[fC + i]
                    kind[r] = khi
                else:  # M_i u + c_i >= lo
                    for j in range(k):
                        A[r, j] = -Fk[kM + i, j]
                    b[r] = -lo + F1[fC + i]
                    kind[r] = klo
                r += 1
    if has_ee and flags[F_EE_SPEED]:
        smin = _np_min(_np_min(BF[0], BF[1]), BF[2])
        for sign in (1.0, -1.0):  # |v_a| <= s_a
            for a in range(3):
                for j in range(k):
                    A[r, j] = sign * Fk[kE + a, j]
                b[r] = BF[a] - F3[tE, a] if sign > 0 else BF[a] + F3[tE, a]
                kind[r] = _K_EE
                r += 1
        for d in range(8):  # corner rows d . v <= min(s)
            ce = 0.0
            for a in range(3):
                ce += _CORNERS[d, a] * F3[tE, a]
            for j in range(k):
                acc = 0.0
                for a in range(3):
                    acc += _CORNERS[d, a] * Fk[kE + a, j]
                A[r, j] = acc
            b[r] = smin - ce
            kind[r] = _K_EE
            r += 1
    if has_ee and flags[F_WS]:
        for sign in (1.0, -1.0):
            for a in range(3):
                for j in range(k):
                    A[r, j] = sign * Fk[kE + a, j]
                if sign > 0:  # toward the high face
                    b[r] = _barrier_nb(BF[6 + a] - F3[tP, a], gain, backoff) - F3[tE, a]
                else:
                    b[r] = _barrier_nb(F3[tP, a] - BF[3 + a], gain, backoff) + F3[tE, a]
                kind[r] = _K_WS
                r += 1
    if flags[F_KEEPOUT] and nb > 0 and ns > 0:
        margin = BF[_BF_PAR + P_KEEPOUT]
        fR = o[18]  # site radii: each site's sphere stays outside the box by the margin
        for bi in range(nb):
            for si in range(ns):
                # the box face that separates the site most (np.argmax: first max, or first NaN)
                jbest = 0
                best = np.abs(F3[tSite + si, 0] - F3[tBc + bi, 0]) - F3[tBh + bi, 0]
                if best == best:
                    for a in range(1, 3):
                        sep = np.abs(F3[tSite + si, a] - F3[tBc + bi, a]) - F3[tBh + bi, a]
                        if sep != sep:
                            jbest, best = a, sep
                            break
                        if sep > best:
                            jbest, best = a, sep
                sign = 1.0 if F3[tSite + si, jbest] - F3[tBc + bi, jbest] >= 0 else -1.0
                for j in range(k):
                    A[r, j] = -sign * Fk[kS + 3 * si + jbest, j]
                dist = best - margin - F1[fR + si]
                b[r] = _barrier_nb(dist, gain, backoff) + sign * F3[tS + si, jbest]
                kind[r] = _K_KO
                r += 1
    if flags[F_CONTACT] and nc > 0:
        # the strongest MAX_CONTACT_ROWS contacts, strongest first; ties keep their order
        # (sorted(key=-force) is stable): each pick is the largest (force, -index) below the last
        fmax = BF[_BF_PAR + P_CONTACT]
        last = -1
        for _ in range(min(nc, MAX_CONTACT_ROWS)):
            best_i = -1
            for i in range(nc):
                f = F1[fF + i]
                if last >= 0 and not (f < F1[fF + last] or (f == F1[fF + last] and i > last)):
                    continue  # already taken
                if best_i < 0 or f > F1[fF + best_i]:
                    best_i = i
            last = best_i
            allowed = CONTACT_APPROACH_SPEED * (1.0 - F1[fF + best_i] / fmax)
            if -backoff > allowed:  # Python's max(allowed, -backoff)
                allowed = -backoff
            for j in range(k):
                A[r, j] = Fk[kN + best_i, j]
            b[r] = allowed - F1[fNu + best_i]
            kind[r] = _K_CF
            r += 1
    return r


@njit(cache=True)
def margins_into(Fk: F64, F3: F64, F1: F64, dims: Any, BF: F64, flags: Any, out: F64) -> int:
    """:func:`margins` on packed arrays: ``out[i]`` is the margin of ``MARGIN_KINDS[i]``.

    Returns the bit mask of the margins that exist (the keys of :func:`margins`' dict).
    """
    _check_state(Fk, F3, F1, dims)
    if out.shape[0] < len(MARGIN_KINDS) or BF.shape[0] < _BF_JVEL:
        raise ValueError("margins_into: out or bounds too small")
    nq, ns, nb, nc = dims[D_NQ], dims[D_NS], dims[D_NB], dims[D_NC]
    o = _offsets(dims)
    tP, tSite, tBc, tBh = o[5], o[7], o[9], o[10]
    fQ, fQl, fQh, fF, fR = o[13], o[14], o[15], o[16], o[18]
    mask = 0
    if flags[F_WS]:
        lo = F3[tP, 0] - BF[3]
        hi = BF[6] - F3[tP, 0]
        for a in range(1, 3):
            lo = _np_min(lo, F3[tP, a] - BF[3 + a])
            hi = _np_min(hi, BF[6 + a] - F3[tP, a])
        out[0] = hi if hi < lo else lo  # Python's min(lo, hi)
        mask |= 1
    if flags[F_KEEPOUT] and nb > 0 and ns > 0:
        least = 0.0
        for bi in range(nb):
            for si in range(ns):
                sep = np.abs(F3[tSite + si, 0] - F3[tBc + bi, 0]) - F3[tBh + bi, 0]
                for a in range(1, 3):
                    d = np.abs(F3[tSite + si, a] - F3[tBc + bi, a]) - F3[tBh + bi, a]
                    sep = _np_max(sep, d)
                sep -= F1[fR + si]  # the site's sphere
                if (bi == 0 and si == 0) or sep < least:  # Python's min over the list
                    least = sep
        out[1] = least - BF[_BF_PAR + P_KEEPOUT]
        mask |= 2
    if flags[F_JMARGIN] and dims[D_HAS_Q]:
        lo = hi = np.inf
        for i in range(nq):
            dlo, dhi = F1[fQ + i] - F1[fQl + i], F1[fQh + i] - F1[fQ + i]
            lo = dlo if i == 0 else _np_min(lo, dlo)
            hi = dhi if i == 0 else _np_min(hi, dhi)
        out[2] = (hi if hi < lo else lo) - BF[_BF_PAR + P_JMARGIN]
        mask |= 4
    if flags[F_CONTACT]:
        fmax = 0.0  # Python's max(forces, default=0.0)
        for i in range(nc):
            if i == 0 or F1[fF + i] > fmax:
                fmax = F1[fF + i]
        out[3] = BF[_BF_PAR + P_CONTACT] - fmax
        mask |= 8
    return mask


def build_packed(state: PackedState, bounds: PackedBounds, scale: F64) -> Rows:
    """Rows from packed inputs via :func:`build_into` (allocating; for tests and tools)."""
    m_max = state.max_rows()
    A, b, kind = np.empty((m_max, state.k)), np.empty(m_max), np.empty(m_max, dtype=np.int64)
    m = build_into(
        scale, state.Fk, state.F3, state.F1, state.dims, bounds.F, bounds.flags, A, b, kind
    )
    check_rows(m, state, bounds)
    return Rows(A[:m].copy(), b[:m].copy(), kind[:m].copy())


def check_rows(m: int, state: PackedState, bounds: PackedBounds) -> None:
    """Raise where :func:`build` would: ``m < 0`` from :func:`build_into`."""
    if m < 0:
        raise ValueError(
            f"joint_velocity bound has {int(bounds.par[P_NJV])} values, "
            f"the arm {int(state.dims[D_NQ])} joints"
        )


def margins_packed(state: PackedState, bounds: PackedBounds) -> dict[str, float]:
    """:func:`margins` via :func:`margins_into` (for tests and tools)."""
    out = np.empty(len(MARGIN_KINDS))
    mask = margins_into(state.Fk, state.F3, state.F1, state.dims, bounds.F, bounds.flags, out)
    return {k: float(out[i]) for i, k in enumerate(MARGIN_KINDS) if mask >> i & 1}


# ---------------------------------------------------------------------------
# The shield's step: rows from a packed state, or straight from a MuJoCo arm


class StepBuffers:
    """What one shield step writes, allocated once: the packed state, the rows
    ``A u <= b`` with their kinds and active flags, the physical action and the margins."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.state = PackedState(k)
        self.u_raw = np.zeros(k)  # the physical action asked for
        self.u = np.zeros(k)  # the projected one
        self.margins = np.zeros(len(MARGIN_KINDS))
        self.rows = 0
        self.reserve_rows(64)

    def reserve_rows(self, m: int) -> None:
        if m > self.rows:
            self.rows = m
            self.A, self.b = np.zeros((m, self.k)), np.zeros(m)
            self.kind = np.zeros(m, dtype=np.int64)
            self.active = np.zeros(m, dtype=np.bool_)


@njit(cache=True)
def rows_into(
    a: Any,
    scale: F64,
    u_raw: F64,
    Fk: F64,
    F3: F64,
    F1: F64,
    dims: Any,
    BF: F64,
    flags: Any,
    A: F64,
    b: F64,
    kind: Any,
    margins_out: F64,
) -> tuple[int, int]:
    """One step's numbers from a packed state: the physical action ``u_raw = scale * clip(a)``
    (all NaN if ``a`` is not finite), the rows (:func:`build_into`) and the margins
    (:func:`margins_into`). Returns ``(m, margin_mask)``."""
    k = scale.shape[0]
    if a.shape[0] != k or u_raw.shape[0] != k:
        raise ValueError("rows_into: a, scale and u_raw differ in size")
    # NaN/inf must reach the kernel as non-finite (its status says so): clipping would hide inf
    finite = True
    for i in range(k):
        if not np.isfinite(a[i]):
            finite = False
    for i in range(k):
        u_raw[i] = min(max(float(a[i]), -1.0), 1.0) * scale[i] if finite else np.nan
    m = build_into(scale, Fk, F3, F1, dims, BF, flags, A, b, kind)
    return m, margins_into(Fk, F3, F1, dims, BF, flags, margins_out)


def step_rows(a: Any, scale: F64, buf: StepBuffers, bounds: PackedBounds) -> tuple[int, int]:
    """:func:`rows_into` on a :class:`StepBuffers` whose state is packed; ``(m, margin_mask)``."""
    st = buf.state
    buf.reserve_rows(st.max_rows())
    return rows_into(  # type: ignore[no-any-return]
        a, scale, buf.u_raw, st.Fk, st.F3, st.F1, st.dims, bounds.F, bounds.flags,
        buf.A, buf.b, buf.kind, buf.margins,
    )  # fmt: skip


# A MuJoCo arm straight into a PackedState (SafebotArmView's fast path). The
# arm's fixed indices travel in one int64 vector (arm_index); the site Jacobians
# come from the joint axes and anchors MuJoCo's kinematics already computed:
# what mj_jacSite returns for hinge and slide joints, without a call per site.

_HINGE, _SLIDE = int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)


def arm_index(
    model: mujoco.MjModel,
    *,
    k: int,
    joints: NDArray[np.int64],
    ee_site: int,
    sites: list[int],
    boxes: list[int],
) -> NDArray[np.int64] | None:
    """The index vector of :func:`arm_state_into`; ``None`` if a joint is neither hinge nor slide.

    Layout: ``dims`` (8, as written into the packed state, 0 contacts), then per joint
    (n each) its id, type, dof and qpos address, then the keep-out site ids (ns), the
    keep-out geom ids (nb), the end-effector site, and for the end effector and each
    keep-out site (n each) whether the joint moves it.
    """
    types = model.jnt_type[joints]
    if not np.all((types == _HINGE) | (types == _SLIDE)):
        return None
    n = len(joints)
    dims = np.zeros(8, dtype=np.int64)
    dims[[D_HAS_EE, D_HAS_QD, D_HAS_Q]] = 1
    dims[D_K], dims[D_NQ], dims[D_NS], dims[D_NB] = k, n, len(sites), len(boxes)

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
        boxes,
        [ee_site],
        *(moves(s) for s in [ee_site, *sites]),
    ]
    return np.concatenate([np.asarray(p, dtype=np.int64).reshape(-1) for p in parts])


@njit(cache=True)
def _site_jacobian(
    site_xpos: F64,
    site: int,
    idx: Any,
    o_moves: int,
    n: int,
    xanchor: F64,
    xaxis: F64,
    J: F64,
) -> None:
    """``J[:3, :n]``: linear Jacobian of a site over the arm joints (see :func:`arm_index`).

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
    """``M = J^T (J J^T + damping^2 I)^-1`` into ``Fk[kM : kM + n]`` (``ArmTaskEnv.action_map``).

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
def arm_state_into(
    mode: int,
    damping: float,
    idx: Any,
    qpos: F64,
    xanchor: F64,
    xaxis: F64,
    site_xpos: F64,
    geom_xpos: F64,
    geom_size: F64,
    site_size: F64,
    q_low: F64,
    q_high: F64,
    con: F64,
    nc: int,
    work: F64,
    Fk: F64,
    F3: F64,
    F1: F64,
    dims: Any,
) -> None:
    """A MuJoCo arm's :class:`ArmState` straight into a :class:`PackedState` (``Fk .. dims``).

    What ``SafebotArmView.state()`` computes, from MuJoCo's arrays:

    Args:
        mode: 0: joint-velocity actions (``M = I``); 1: end-effector velocity through the
            damped pseudo-inverse ``M = J^T (J J^T + damping^2 I)^-1`` (``ArmTaskEnv.action_map``).
        idx: :func:`arm_index`.
        qpos, xanchor, xaxis, site_xpos, geom_xpos: ``MjData`` arrays; geom_size, site_size:
            ``MjModel``'s (a keep-out site's radius is its ``site_size[site, 0]``).
        q_low, q_high: the arm's joint limits.
        con: one row per arm contact (``nc`` of them): force, the normal from the arm into the
            other body (3), the contact point's Jacobian from ``mj_jac`` (3 x nv, flat).
        work: scratch, at least 4 x n.
    """
    n, ns, nb = idx[D_NQ], idx[D_NS], idx[D_NB]
    # idx layout (arm_index): dims, joint id, type, dof, qpos address, sites, boxes, ee, moves
    oDof, oQ = 8 + 2 * n, 8 + 3 * n
    oSite = 8 + 4 * n
    oBox = oSite + ns
    oEe = oBox + nb
    oMoves = oEe + 1
    if idx.shape[0] != oMoves + (ns + 1) * n:
        raise ValueError("arm_state_into: idx is not an arm_index")
    if dims[D_CAP_NQ] < n or dims[D_CAP_NS] < ns or dims[D_CAP_NB] < nb or dims[D_CAP_NC] < nc:
        raise ValueError("arm_state_into: packed state too small (PackedState.reserve)")
    if con.shape[0] < nc or work.shape[0] < 4 or work.shape[1] < n:
        raise ValueError("arm_state_into: contact or scratch buffer too small")
    if site_size.shape[0] != site_xpos.shape[0] or site_size.shape[1] < 1:
        raise ValueError("arm_state_into: site_size is not the model's (nsite, 3) array")
    if mode == 1 and idx[D_K] != 3:
        raise ValueError("arm_state_into: end-effector velocity actions have 3 entries")
    if mode == 0 and idx[D_K] != n:
        raise ValueError("arm_state_into: joint velocity actions have one entry per joint")
    for i in range(8):
        dims[i] = idx[i]
    dims[D_NC] = nc
    _check_state(Fk, F3, F1, dims)
    k = dims[D_K]
    o = _offsets(dims)
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
    for a in range(3):  # E = J M
        for j in range(k):
            acc = 0.0
            for t in range(n):
                acc += work[a, t] * Fk[kM + t, j]
            Fk[kE + a, j] = acc
    for si in range(ns):
        site = idx[oSite + si]
        _site_jacobian(site_xpos, site, idx, oMoves + (si + 1) * n, n, xanchor, xaxis, work)
        F1[fR + si] = site_size[site, 0]
        for a in range(3):
            F3[tSite + si, a] = site_xpos[site, a]
            F3[tS + si, a] = 0.0  # J_site c
            for j in range(k):  # S = J_site M
                acc = 0.0
                for t in range(n):
                    acc += work[a, t] * Fk[kM + t, j]
                Fk[kS + 3 * si + a, j] = acc
    for bi in range(nb):
        g = idx[oBox + bi]
        for a in range(3):
            F3[tBc + bi, a] = geom_xpos[g, a]
            F3[tBh + bi, a] = geom_size[g, a]
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


@njit(cache=True)
def arm_rows_into(
    mode: int,
    damping: float,
    idx: Any,
    qpos: F64,
    xanchor: F64,
    xaxis: F64,
    site_xpos: F64,
    geom_xpos: F64,
    geom_size: F64,
    site_size: F64,
    q_low: F64,
    q_high: F64,
    con: F64,
    nc: int,
    work: F64,
    a: Any,
    scale: F64,
    u_raw: F64,
    Fk: F64,
    F3: F64,
    F1: F64,
    dims: Any,
    BF: F64,
    flags: Any,
    A: F64,
    b: F64,
    kind: Any,
    margins_out: F64,
) -> tuple[int, int]:
    """:func:`arm_state_into` then :func:`rows_into`: a MuJoCo arm's rows in one call."""
    arm_state_into(
        mode, damping, idx, qpos, xanchor, xaxis, site_xpos, geom_xpos, geom_size, site_size,
        q_low, q_high, con, nc, work, Fk, F3, F1, dims,
    )  # fmt: skip
    return rows_into(a, scale, u_raw, Fk, F3, F1, dims, BF, flags, A, b, kind, margins_out)
