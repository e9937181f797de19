"""The rows ``A u <= b``: one numba function per limit kind, in one registry.

Every limit is linear in the command (docs/design.md, rule 1), because every
velocity the limits talk about is affine in the physical action ``u``:

* joint velocity            ``qd = M u + c``
* end-effector velocity     ``v  = E u + e``
* a site's velocity         ``v_s = S u + s``
* contact approach speed    ``n . v_p = N u + nu``

Position-like limits use the barrier form (Ames et al. 2019, "Control barrier
functions: theory and applications"): the allowed rate toward a boundary is
``gain * distance``, so it shrinks to zero at the boundary and ``u = 0`` stays
feasible inside the envelope (rule 2). Outside it (after a tightening, say) the
rows require backing off, but never faster than ``backoff`` so the set stays
feasible alongside the speed limits.

Each row function has the signature of :data:`ROW_FUNCTIONS`' entries::

    rows(scale, Fk, F3, F1, dims, BF, flags, A, b, kind, r) -> r

it reads the packed state (``Fk, F3, F1, dims``: :class:`~safebot.shield.packed.PackedState`)
and bounds (``BF, flags``: :class:`~safebot.shield.packed.PackedBounds`), writes its rows
from row ``r`` on and returns the next free row (or -1 on a shape error). Adding a
limit kind is one function here, one entry in :data:`ROW_FUNCTIONS`, its call in
:func:`build_into` (``tests/shield/test_rows.py`` holds the two in the same order)
and its row count in :func:`~safebot.shield.packed.row_capacity`.

The pure-NumPy twin of these rows is the test oracle, ``tests/oracle.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from safebot.envelope import Bounds, Envelope
from safebot.shield.packed import (
    BF_JVEL,
    BF_PAR,
    D_HAS_EE,
    D_HAS_Q,
    D_HAS_QD,
    D_K,
    D_NB,
    D_NC,
    D_NQ,
    D_NS,
    F64,
    F_CONTACT,
    F_EE_SPEED,
    F_JMARGIN,
    F_JVEL,
    F_KEEPOUT,
    F_WS,
    K_CF,
    K_EE,
    K_JP,
    K_JV,
    K_KO,
    K_WS,
    MARGIN_KINDS,
    MAX_CONTACT_ROWS,
    P_BACKOFF,
    P_CONTACT,
    P_GAIN,
    P_JBACKOFF,
    P_JGAIN,
    P_JMARGIN,
    P_KEEPOUT,
    P_NJV,
    ArmState,
    PackedBounds,
    PackedState,
    Rows,
    check_state,
    offsets,
    pack_bounds,
    pack_state,
    row_capacity,
)

CORNERS = np.array(
    [[sx, sy, sz] for sx in (1, -1) for sy in (1, -1) for sz in (1, -1)], dtype=np.float64
) / np.sqrt(3)
"""Unit directions of the eight corner rows of the end-effector speed bound."""

CONTACT_APPROACH_SPEED = 0.2
"""Approach speed (m/s) allowed along a contact normal at zero force; 0 at the force bound."""


# NaN behaves as numpy's minimum/maximum (it propagates), so a corrupt state gives NaN rows,
# which the projection reports as non-finite and answers with the safe stop.
@njit(cache=True)
def np_min(x: float, y: float) -> float:
    """``np.minimum`` of two floats: NaN wins."""
    if x != x or y != y:
        return np.nan
    return x if x <= y else y


@njit(cache=True)
def np_max(x: float, y: float) -> float:
    """``np.maximum`` of two floats: NaN wins."""
    if x != x or y != y:
        return np.nan
    return x if x >= y else y


@njit(cache=True)
def barrier(dist: float, gain: float, backoff: float) -> float:
    """Allowed rate toward a boundary at ``dist``: ``gain * dist``, at worst ``-backoff``."""
    return np_max(gain * dist, -backoff)


@njit(cache=True)
def action_box_rows(
    scale: F64, Fk: F64, F3: F64, F1: F64, dims: Any, BF: F64, flags: Any,
    A: F64, b: F64, kind: Any, r: int,
) -> int:  # fmt: skip
    """``|u_i| <= scale_i``: the command stays inside the hard caps the actions scale to."""
    k = scale.shape[0]
    for sign in (1.0, -1.0):
        for i in range(k):
            for j in range(k):
                A[r, j] = 0.0
            A[r, i] = sign
            b[r] = scale[i]
            kind[r] = 0
            r += 1
    return r


@njit(cache=True)
def _joint_bounds(
    i: int, F1: F64, fQ: int, fQl: int, fQh: int, BF: F64, flags: Any, has_q: int
) -> tuple[float, int, float, int]:
    # the upper and lower bound on qd_i, with the kind of whichever is tighter
    hi, lo = np.inf, -np.inf
    khi = klo = K_JV
    if flags[F_JVEL]:
        v = BF[BF_JVEL + i] if BF.shape[0] - BF_JVEL > 1 else BF[BF_JVEL]  # broadcast
        hi, lo = v, -v
    if flags[F_JMARGIN] and has_q:
        m, g, bo = BF[BF_PAR + P_JMARGIN], BF[BF_PAR + P_JGAIN], BF[BF_PAR + P_JBACKOFF]
        q = F1[fQ + i]
        up = barrier(F1[fQh + i] - m - q, g, bo)
        down = -barrier(q - F1[fQl + i] - m, g, bo)
        if up < hi:
            khi = K_JP
        if down > lo:
            klo = K_JP
        hi, lo = np_min(hi, up), np_max(lo, down)
    return hi, khi, lo, klo


@njit(cache=True)
def joint_rows(
    scale: F64, Fk: F64, F3: F64, F1: F64, dims: Any, BF: F64, flags: Any,
    A: F64, b: F64, kind: Any, r: int,
) -> int:  # fmt: skip
    """Joint velocity box merged with the joint-position barrier: all upper rows, then all lower.

    Merging keeps the problem small: each joint gets ``lo_i <= qd_i <= hi_i`` with
    ``hi_i = min(v_i, gain * (q_high - margin - q_i))`` and the label of whichever bound is
    tighter. Returns -1 if the velocity bound does not broadcast to the joints.
    """
    if not dims[D_HAS_QD] or not (flags[F_JVEL] or flags[F_JMARGIN]):
        return r
    k, nq = dims[D_K], dims[D_NQ]
    njv = BF.shape[0] - BF_JVEL
    if flags[F_JVEL] and njv != 1 and njv != nq:
        return -1
    o = offsets(dims)
    kM, fC, fQ, fQl, fQh = o[1], o[12], o[13], o[14], o[15]
    for side in range(2):
        for i in range(nq):
            hi, khi, lo, klo = _joint_bounds(i, F1, fQ, fQl, fQh, BF, flags, dims[D_HAS_Q])
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
    return r


@njit(cache=True)
def ee_speed_rows(
    scale: F64, Fk: F64, F3: F64, F1: F64, dims: Any, BF: F64, flags: Any,
    A: F64, b: F64, kind: Any, r: int,
) -> int:  # fmt: skip
    """Per-axis ``|v_j| <= s_j`` plus eight corner rows ``d . v <= min(s)``.

    The corner rows make the box a polyhedral bound on the norm: with both,
    ``||v|| <= 1.24 min(s)`` instead of ``sqrt(3) s`` for the box alone.
    """
    if not dims[D_HAS_EE] or not flags[F_EE_SPEED]:
        return r
    k = dims[D_K]
    o = offsets(dims)
    kE, tE = o[0], o[6]
    smin = np_min(np_min(BF[0], BF[1]), BF[2])
    for sign in (1.0, -1.0):  # |v_a| <= s_a
        for a in range(3):
            for j in range(k):
                A[r, j] = sign * Fk[kE + a, j]
            b[r] = BF[a] - F3[tE, a] if sign > 0 else BF[a] + F3[tE, a]
            kind[r] = K_EE
            r += 1
    for d in range(8):  # corner rows d . v <= min(s)
        ce = 0.0
        for a in range(3):
            ce += CORNERS[d, a] * F3[tE, a]
        for j in range(k):
            acc = 0.0
            for a in range(3):
                acc += CORNERS[d, a] * Fk[kE + a, j]
            A[r, j] = acc
        b[r] = smin - ce
        kind[r] = K_EE
        r += 1
    return r


@njit(cache=True)
def workspace_rows(
    scale: F64, Fk: F64, F3: F64, F1: F64, dims: Any, BF: F64, flags: Any,
    A: F64, b: F64, kind: Any, r: int,
) -> int:  # fmt: skip
    """End effector inside the box: barrier rows per axis and side."""
    if not dims[D_HAS_EE] or not flags[F_WS]:
        return r
    k = dims[D_K]
    o = offsets(dims)
    kE, tP, tE = o[0], o[5], o[6]
    gain, backoff = BF[BF_PAR + P_GAIN], BF[BF_PAR + P_BACKOFF]
    for sign in (1.0, -1.0):
        for a in range(3):
            for j in range(k):
                A[r, j] = sign * Fk[kE + a, j]
            if sign > 0:  # toward the high face
                b[r] = barrier(BF[6 + a] - F3[tP, a], gain, backoff) - F3[tE, a]
            else:
                b[r] = barrier(F3[tP, a] - BF[3 + a], gain, backoff) + F3[tE, a]
            kind[r] = K_WS
            r += 1
    return r


@njit(cache=True)
def _separating_axis(F3: F64, site_row: int, box_c: int, box_h: int) -> tuple[int, float]:
    # the box face that separates the site most (np.argmax: the first max, or the first NaN)
    jbest = 0
    best = np.abs(F3[site_row, 0] - F3[box_c, 0]) - F3[box_h, 0]
    if best == best:
        for a in range(1, 3):
            sep = np.abs(F3[site_row, a] - F3[box_c, a]) - F3[box_h, a]
            if sep != sep:
                return a, sep
            if sep > best:
                jbest, best = a, sep
    return jbest, best


@njit(cache=True)
def keepout_rows(
    scale: F64, Fk: F64, F3: F64, F1: F64, dims: Any, BF: F64, flags: Any,
    A: F64, b: F64, kind: Any, r: int,
) -> int:  # fmt: skip
    """Each site's sphere stays outside each keep-out box by the margin.

    The sites are the centres of bulky links, so the distance that counts is the
    site's distance minus its radius. Uses the box face that separates the site
    most (a supporting half-space of the convex box): the site's approach speed
    to that face is at most ``gain * (distance - margin - radius)``. Outside the
    corner regions this is exact; near an edge it is conservative, the safe side.
    """
    ns, nb = dims[D_NS], dims[D_NB]
    if not flags[F_KEEPOUT] or nb == 0 or ns == 0:
        return r
    k = dims[D_K]
    o = offsets(dims)
    kS, tSite, tS, tBc, tBh, fR = o[2], o[7], o[8], o[9], o[10], o[18]
    margin = BF[BF_PAR + P_KEEPOUT]
    gain, backoff = BF[BF_PAR + P_GAIN], BF[BF_PAR + P_BACKOFF]
    for bi in range(nb):
        for si in range(ns):
            jbest, best = _separating_axis(F3, tSite + si, tBc + bi, tBh + bi)
            sign = 1.0 if F3[tSite + si, jbest] - F3[tBc + bi, jbest] >= 0 else -1.0
            for j in range(k):  # moving toward the box along axis j means -sign * v_j > 0
                A[r, j] = -sign * Fk[kS + 3 * si + jbest, j]
            dist = best - margin - F1[fR + si]
            b[r] = barrier(dist, gain, backoff) + sign * F3[tS + si, jbest]
            kind[r] = K_KO
            r += 1
    return r


@njit(cache=True)
def contact_rows(
    scale: F64, Fk: F64, F3: F64, F1: F64, dims: Any, BF: F64, flags: Any,
    A: F64, b: F64, kind: Any, r: int,
) -> int:  # fmt: skip
    """No further push along a contact normal as the force nears its bound; back off above it.

    The allowed approach speed is ``CONTACT_APPROACH_SPEED * (1 - f / f_max)``: full
    speed at no force, zero at the bound, negative (retreat, at most ``backoff``) above
    it. The strongest ``MAX_CONTACT_ROWS`` contacts get a row, strongest first; ties keep
    their order (each pick is the largest ``(force, -index)`` below the last).
    """
    nc = dims[D_NC]
    if not flags[F_CONTACT] or nc == 0:
        return r
    k = dims[D_K]
    o = offsets(dims)
    kN, fF, fNu = o[3], o[16], o[17]
    fmax, backoff = BF[BF_PAR + P_CONTACT], BF[BF_PAR + P_BACKOFF]
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
        if -backoff > allowed:  # Python's max(allowed, -backoff): NaN force keeps NaN
            allowed = -backoff
        for j in range(k):
            A[r, j] = Fk[kN + best_i, j]
        b[r] = allowed - F1[fNu + best_i]
        kind[r] = K_CF
        r += 1
    return r


ROW_FUNCTIONS = (
    ("action_box", action_box_rows),
    ("joint", joint_rows),  # joint_velocity and joint_position rows, merged per joint
    ("ee_speed", ee_speed_rows),
    ("workspace", workspace_rows),
    ("keepout", keepout_rows),
    ("contact_force", contact_rows),
)
"""The registry: every limit kind's row function, in the order :func:`build_into` stacks them."""


@njit(cache=True)
def build_into(
    scale: F64, Fk: F64, F3: F64, F1: F64, dims: Any, BF: F64, flags: Any,
    A: F64, b: F64, kind: Any,
) -> int:  # fmt: skip
    """All rows of one step into ``A[:m], b[:m], kind[:m]``; returns ``m`` (-1: bad bounds).

    ``A`` needs :meth:`PackedState.max_rows` rows of ``k`` entries.
    """
    check_state(Fk, F3, F1, dims)
    m_max = row_capacity(dims)
    k = dims[D_K]
    if A.shape[0] < m_max or b.shape[0] < m_max or kind.shape[0] < m_max or A.shape[1] != k:
        raise ValueError("build_into: A, b, kind need PackedState.max_rows() rows of k entries")
    if scale.shape[0] != k or BF.shape[0] < BF_JVEL:
        raise ValueError("build_into: scale or bounds of the wrong size")
    r = action_box_rows(scale, Fk, F3, F1, dims, BF, flags, A, b, kind, 0)
    r = joint_rows(scale, Fk, F3, F1, dims, BF, flags, A, b, kind, r)
    if r < 0:
        return r
    r = ee_speed_rows(scale, Fk, F3, F1, dims, BF, flags, A, b, kind, r)
    r = workspace_rows(scale, Fk, F3, F1, dims, BF, flags, A, b, kind, r)
    r = keepout_rows(scale, Fk, F3, F1, dims, BF, flags, A, b, kind, r)
    return contact_rows(scale, Fk, F3, F1, dims, BF, flags, A, b, kind, r)


@njit(cache=True)
def margins_into(Fk: F64, F3: F64, F1: F64, dims: Any, BF: F64, flags: Any, out: F64) -> int:
    """Distance of the state to each position-like bound (>= 0 inside), for ``info``.

    ``out[i]`` is the margin of ``MARGIN_KINDS[i]``; returns the bit mask of those that exist.
    """
    check_state(Fk, F3, F1, dims)
    if out.shape[0] < len(MARGIN_KINDS) or BF.shape[0] < BF_JVEL:
        raise ValueError("margins_into: out or bounds too small")
    nq, ns, nb, nc = dims[D_NQ], dims[D_NS], dims[D_NB], dims[D_NC]
    o = offsets(dims)
    tP, tSite, tBc, tBh = o[5], o[7], o[9], o[10]
    fQ, fQl, fQh, fF, fR = o[13], o[14], o[15], o[16], o[18]
    mask = 0
    if flags[F_WS]:
        lo = F3[tP, 0] - BF[3]
        hi = BF[6] - F3[tP, 0]
        for a in range(1, 3):
            lo = np_min(lo, F3[tP, a] - BF[3 + a])
            hi = np_min(hi, BF[6 + a] - F3[tP, a])
        out[0] = hi if hi < lo else lo  # Python's min(lo, hi)
        mask |= 1
    if flags[F_KEEPOUT] and nb > 0 and ns > 0:
        least = 0.0
        for bi in range(nb):
            for si in range(ns):
                sep = np.abs(F3[tSite + si, 0] - F3[tBc + bi, 0]) - F3[tBh + bi, 0]
                for a in range(1, 3):
                    d = np.abs(F3[tSite + si, a] - F3[tBc + bi, a]) - F3[tBh + bi, a]
                    sep = np_max(sep, d)
                sep -= F1[fR + si]  # the site's sphere
                if (bi == 0 and si == 0) or sep < least:  # Python's min over the list
                    least = sep
        out[1] = least - BF[BF_PAR + P_KEEPOUT]
        mask |= 2
    if flags[F_JMARGIN] and dims[D_HAS_Q]:
        lo = hi = np.inf
        for i in range(nq):
            dlo, dhi = F1[fQ + i] - F1[fQl + i], F1[fQh + i] - F1[fQ + i]
            lo = dlo if i == 0 else np_min(lo, dlo)
            hi = dhi if i == 0 else np_min(hi, dhi)
        out[2] = (hi if hi < lo else lo) - BF[BF_PAR + P_JMARGIN]
        mask |= 4
    if flags[F_CONTACT]:
        fmax = 0.0  # Python's max(forces, default=0.0)
        for i in range(nc):
            if i == 0 or F1[fF + i] > fmax:
                fmax = F1[fF + i]
        out[3] = BF[BF_PAR + P_CONTACT] - fmax
        mask |= 8
    return mask


@njit(cache=True)
def physical_action(a: Any, scale: F64, u_raw: F64) -> None:
    """``u_raw = scale * clip(a, -1, 1)``; all NaN if ``a`` is not finite.

    NaN/inf must reach the projection as non-finite (its status says so): clipping would hide inf.
    """
    k = scale.shape[0]
    if a.shape[0] != k or u_raw.shape[0] != k:
        raise ValueError("physical_action: a, scale and u_raw differ in size")
    finite = True
    for i in range(k):
        if not np.isfinite(a[i]):
            finite = False
    for i in range(k):
        u_raw[i] = min(max(float(a[i]), -1.0), 1.0) * scale[i] if finite else np.nan


def bounds_error(bounds: PackedBounds, state: PackedState) -> ValueError:
    """The error for :func:`build_into`'s -1: a joint velocity bound that fits no joint count."""
    return ValueError(
        f"joint_velocity bound has {int(bounds.par[P_NJV])} values, "
        f"the arm {int(state.dims[D_NQ])} joints"
    )


def build(state: ArmState, envelope: Envelope, scale: F64, bounds: Bounds | None = None) -> Rows:
    """All rows for one :class:`ArmState` (allocating; for tests and tools, not the step).

    Raises:
        ValueError: the joint velocity bound does not broadcast to the arm's joints.
    """
    bounds = envelope.bounds() if bounds is None else bounds
    packed = pack_state(state, len(scale))
    pb = pack_bounds(bounds, envelope, state.dt)
    m_max = packed.max_rows()
    A, b, kind = np.empty((m_max, len(scale))), np.empty(m_max), np.empty(m_max, dtype=np.int64)
    m = build_into(
        np.asarray(scale, dtype=np.float64), packed.Fk, packed.F3, packed.F1, packed.dims,
        pb.F, pb.flags, A, b, kind,
    )  # fmt: skip
    if m < 0:
        raise bounds_error(pb, packed)
    return Rows(A[:m].copy(), b[:m].copy(), kind[:m].copy())


def margins(state: ArmState, bounds: Bounds, envelope: Envelope) -> dict[str, float]:
    """:func:`margins_into` for one :class:`ArmState` (allocating; for tests and tools)."""
    k = state.ee_map[0].shape[1] if state.ee_map is not None else 0
    packed = pack_state(state, k)
    pb = pack_bounds(bounds, envelope, state.dt)
    out = np.empty(len(MARGIN_KINDS))
    mask = margins_into(packed.Fk, packed.F3, packed.F1, packed.dims, pb.F, pb.flags, out)
    return {kind: float(out[i]) for i, kind in enumerate(MARGIN_KINDS) if mask >> i & 1}
