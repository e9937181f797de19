"""The shield's data: an arm's state and the bounds, as the numba code reads them.

:class:`ArmState` is what an arm adapter (:mod:`safebot.shield.views`) knows at one
control step, with every velocity written as an affine map of the physical action
``u`` (docs/design.md, rule 1). :class:`PackedState` holds the same numbers in three
flat buffers and :class:`PackedBounds` the envelope's bounds with its gains, so the
row builders (:mod:`safebot.shield.rows`) run on preallocated arrays with no Python
objects per step.

What costs time on the hot path is not arithmetic but overhead that grows with
code size, since an env step between two shield steps evicts it from the CPU
caches: every array argument of a numba call (~0.1-0.2 us) and every array view
made inside one. So a state travels in three buffers plus an int64 ``dims``
vector -- ``Fk`` (rows of length k: the maps ``E``, ``M``, ``S``, ``N``), ``F3``
(points and offsets in 3-space) and ``F1`` (scalars per joint, contact or site)
-- and the numba code indexes them at offsets (:func:`offsets`) instead of
slicing. Absent limits are flags, not ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import NDArray

from safebot.envelope import LIMIT_KINDS, Bounds, Envelope

F64 = NDArray[np.float64]

# Row kind codes; index into ROW_KINDS. "action_box" keeps u inside the hard action scale.
ROW_KINDS = ("action_box", *LIMIT_KINDS)
KIND_CODE = {k: i for i, k in enumerate(ROW_KINDS)}

MAX_CONTACT_ROWS = 4
"""The strongest this many contacts get a contact-force row."""


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
        """No rows, ``k`` columns."""
        return Rows(np.zeros((0, k)), np.zeros(0), np.zeros(0, dtype=np.int64))


def kind_rows(A: F64, b: F64, kind: str) -> Rows:
    """Rows ``A u <= b`` all of one limit kind."""
    return Rows(
        np.asarray(A, dtype=np.float64),
        np.asarray(b, dtype=np.float64),
        np.full(len(b), KIND_CODE[kind], dtype=np.int64),
    )


# PackedState.dims entries: sizes in use, presence flags, then capacities
D_K, D_NQ, D_NS, D_NB, D_NC, D_HAS_EE, D_HAS_QD, D_HAS_Q = range(8)
D_CAP_NQ, D_CAP_NS, D_CAP_NB, D_CAP_NC = range(8, 12)
# PackedBounds.flags entries: which limits are enforced
F_JVEL, F_EE_SPEED, F_WS, F_KEEPOUT, F_JMARGIN, F_CONTACT = range(6)
# PackedBounds.par entries
P_KEEPOUT, P_JMARGIN, P_CONTACT, P_GAIN, P_JGAIN, P_BACKOFF, P_JBACKOFF, P_NJV = range(8)
NPAR = 8
BF_PAR = 9  # offset of par in PackedBounds.F (after ee_speed, ws_low, ws_high)
BF_JVEL = BF_PAR + NPAR  # the joint velocity bound follows par
K_JV, K_EE, K_WS, K_KO, K_JP, K_CF = (KIND_CODE[k] for k in LIMIT_KINDS)

MARGIN_KINDS = ("workspace", "keepout", "joint_position", "contact_force")
"""Order of the margins the filter reports (bit ``i`` of its mask = ``MARGIN_KINDS[i]``)."""


@njit(cache=True)
def offsets(dims: Any) -> tuple[int, ...]:
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
        o = offsets(d)
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

    def unpack(self, dt: float) -> ArmState:
        """The packed numbers as an :class:`ArmState` (copies; for tools and tests)."""
        d = self.dims
        nq, ns, nb, nc = (int(d[i]) for i in (D_NQ, D_NS, D_NB, D_NC))
        has_q = bool(d[D_HAS_Q])
        return ArmState(
            dt=dt,
            ee_pos=self.ee_pos.copy(),
            ee_map=(self.E.copy(), self.e.copy()) if d[D_HAS_EE] else None,
            qd_map=(self.M[:nq].copy(), self.c[:nq].copy()) if d[D_HAS_QD] else None,
            q=self.q[:nq].copy() if has_q else None,
            q_low=self.q_low[:nq].copy() if has_q else None,
            q_high=self.q_high[:nq].copy() if has_q else None,
            sites=[
                (self.site_pos[i].copy(), (self.S[i].copy(), self.s[i].copy())) for i in range(ns)
            ],
            boxes=[(self.box_c[i].copy(), self.box_h[i].copy()) for i in range(nb)],
            contacts=[
                (float(self.con_f[i]), (self.con_N[i].copy(), np.asarray(self.con_nu[i])))
                for i in range(nc)
            ],
            site_radius=[float(r) for r in self.site_radius[:ns]],
        )

    def max_rows(self) -> int:
        """Upper bound on the rows :func:`build_into` writes for the current ``dims``."""
        return int(row_capacity(self.dims))


@njit(cache=True)
def row_capacity(dims: Any) -> int:
    """:func:`row_capacity_of` the sizes in ``dims``."""
    return row_capacity_of(dims[D_K], dims[D_NQ], dims[D_NS], dims[D_NB], dims[D_NC])


@njit(cache=True)
def row_capacity_of(k: int, nq: int, ns: int, nb: int, nc: int) -> int:
    """Most rows one step can have: action box (2k), joints (2nq), end-effector speed (14),
    workspace (6), keep-out (one per site and box) and contacts (at most MAX_CONTACT_ROWS)."""
    return 2 * k + 2 * nq + 14 + 6 + ns * nb + min(nc, MAX_CONTACT_ROWS)


def pack_state(state: ArmState, k: int, out: PackedState | None = None) -> PackedState:
    """Copy ``state`` into a :class:`PackedState` (the generic way in, for adapters without a
    numba path of their own)."""
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
        return self.F[BF_PAR:BF_JVEL]


def pack_bounds(bounds: Bounds, envelope: Envelope, dt: float) -> PackedBounds:
    """The bounds as :func:`safebot.shield.rows.build_into` reads them (control period ``dt``).

    The barrier gains are capped at ``0.9 / dt`` so one step cannot cross a boundary; the
    back-off speeds (how fast the arm may return inside after a tightening) are half the
    smallest speed bound.
    """
    jv = None if bounds.joint_velocity is None else np.asarray(bounds.joint_velocity).reshape(-1)
    F = np.zeros(BF_JVEL + (0 if jv is None else len(jv)))
    ee, lo, hi, par = F[0:3], F[3:6], F[6:9], F[BF_PAR:BF_JVEL]
    par[:] = np.nan
    flags = np.zeros(6, dtype=np.int64)
    par[P_GAIN] = min(envelope.barrier_gain, 0.9 / dt)
    par[P_JGAIN] = min(envelope.joint_gain, 0.9 / dt)
    par[P_BACKOFF] = 0.5 * float(np.min(bounds.ee_speed)) if bounds.ee_speed is not None else 0.05
    par[P_JBACKOFF] = 0.5 * float(np.min(jv)) if jv is not None else 0.2
    par[P_NJV] = 0 if jv is None else len(jv)
    if jv is not None:
        flags[F_JVEL] = 1
        F[BF_JVEL:] = jv
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
def check_state(Fk: F64, F3: F64, F1: F64, dims: Any) -> None:
    o = offsets(dims)
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
