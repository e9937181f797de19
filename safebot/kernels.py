"""Numba-jitted projection kernels: the exact QP behind the shield.

Every safety limit in safebot is a linear row in the command ``u`` (DESIGN.md),
so making an action safe is one small quadratic program

    min_u  ½ Σ_i w_i (u_i − a_i)²    s.t.   A u <= b,

with ``n <= 12`` variables and ``m <= 64`` rows. This module solves it *exactly*
(to rounding) with the dual active-set method of Goldfarb & Idnani (1983), the
algorithm behind ``quadprog``. With a diagonal weight the method is especially
simple: substituting ``z = sqrt(w) * u`` makes the Hessian the identity, so the
Cholesky factor is ``I`` and only the QR factors of the active rows are updated
(one Householder reflection when a row enters, Givens rotations when one leaves).

Why a dual method: it starts from the unconstrained minimum ``u = a`` and only
ever adds a violated row, so it terminates in a handful of iterations when few
limits bind (the common case in the shield), it needs no feasible starting
point, it proves infeasibility (instead of stalling like first-order methods
such as Hildreth's iteration on ill-conditioned Jacobian rows), and it handles
linearly dependent rows through the dual step, which drops a row from the
active set to make room for the new one.

The functions here are pure array functions with no Python objects inside, so
the shield calls :func:`project` (or :func:`project_into`, which writes into
buffers the caller keeps) directly from its hot path, vectorised environments
call :func:`project_batch`, and jitted code can call any of them. :func:`solve`
is a convenience wrapper returning a :class:`Projection`.

References:
    D. Goldfarb and A. Idnani, "A numerically stable dual method for solving
    strictly convex quadratic programs", Mathematical Programming 27, 1-33
    (1983).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit, prange

__all__ = [
    "STATUS_INFEASIBLE",
    "STATUS_MAXITER",
    "STATUS_NAMES",
    "STATUS_NONFINITE",
    "STATUS_OK",
    "Projection",
    "project",
    "project_batch",
    "project_into",
    "solve",
    "warmup",
]

STATUS_OK = 0
"""Solved: ``u`` is the exact projection and satisfies ``A u <= b`` to tolerance."""
STATUS_INFEASIBLE = 1
"""No ``u`` satisfies ``A u <= b``; the safe command is returned."""
STATUS_NONFINITE = 2
"""An input was NaN/inf, a weight was <= 0, or the data overflow float64 (``|A_jk a_k|
> 1e308``); the safe command is returned."""
STATUS_MAXITER = 3
"""The iteration guard fired (should not happen; a bug report); safe command returned."""

STATUS_NAMES: tuple[str, ...] = ("ok", "infeasible", "nonfinite", "maxiter")
"""Human-readable names, indexed by status code."""

# Feasibility tolerance. Row j counts as violated at u = z / sqrt(w) when
#     A_j u − b_j > _FEAS_TOL · (|b_j| + Σ_k |A_jk u_k|)
#                   + _ROUND_TOL · L · Σ_k |A_jk| / sqrt(w_k),
# with L the distance z has travelled from z0. The first term is relative to the
# magnitudes in the row itself: far above the rounding of a 12-term dot product
# (~1e-15), far below the 1e-9 the shield promises, and invariant to scaling a,
# A, b or a single row by 1e-6..1e6. The second is the rounding the steps leave
# in z (their directions come from orthogonal factors, so it spreads over all
# components): without it a degenerate row that is satisfied exactly could look
# violated by rounding and be added and dropped forever.
_FEAS_TOL = 1e-12
_ROUND_TOL = 64 * 2.220446049250313e-16
# A new row whose unit normal has less than this component outside the span of
# the active rows is linearly dependent on them: no primal step exists, only the
# dual step that drops an active row (Goldfarb & Idnani 1983, step 2(c)).
_DEP_TOL = 1e-11
# Problems per parallel chunk in project_batch.
_CHUNK = 8
# Fused multiply-adds only. Reassociation or reciprocal approximation ("reassoc",
# "arcp") would undo the explicit scalings that keep rows near float64's limits
# finite (x / big * inv must not become x * (inv / big)), and "nnan"/"ninf" would
# delete the kernel's own non-finite checks. Every function also uses
# error_model="numpy": IEEE division (no ZeroDivisionError, no check per
# division), as the kernel must never raise on values.
_FASTMATH = {"contract"}


@njit(cache=True, error_model="numpy")
def _all_finite_1d(x: np.ndarray) -> bool:
    for i in range(x.shape[0]):
        if not math.isfinite(x[i]):
            return False
    return True


@njit(cache=True, error_model="numpy")
def _fill_safe(safe: np.ndarray, u_out: np.ndarray, act_out: np.ndarray) -> None:
    # A non-finite safe command would turn the fallback into NaN: use zeros then.
    ok = _all_finite_1d(safe)
    for i in range(u_out.shape[0]):
        u_out[i] = safe[i] if ok else 0.0
    act_out[:] = False


@njit(cache=True, error_model="numpy")
def _zero_row(A: np.ndarray, j: int) -> bool:
    for k in range(A.shape[1]):
        if A[j, k] != 0.0:
            return False
    return True


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _givens(x: float, y: float) -> tuple[float, float, float]:
    """Return (c, s, h) with [c s; -s c] @ [x; y] = [h; 0]."""
    # Plain sqrt, not hypot (3x slower): the entries are coordinates of unit
    # vectors in an orthonormal basis, so x² + y² cannot overflow.
    h = math.sqrt(x * x + y * y)
    if h == 0.0:
        return 1.0, 0.0, 0.0
    return x / h, y / h, h


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _rotate_rows(M: np.ndarray, i: int, k: int, c: float, s: float, lo: int, hi: int) -> None:
    # Rows (i, k) of M, columns lo..hi-1, <- G @ rows with G = [c s; -s c].
    for col in range(lo, hi):
        mi = M[i, col]
        mk = M[k, col]
        M[i, col] = c * mi + s * mk
        M[k, col] = -s * mi + c * mk


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _householder(JT: np.ndarray, dv: np.ndarray, q: int, ss: float) -> None:
    """Reflect rows q.. of JT so that dv[q:] (with ‖dv[q:]‖² = ss) becomes ∓‖·‖ e_q."""
    n = JT.shape[1]
    nrm = math.sqrt(ss)
    alpha = -nrm if dv[q] >= 0.0 else nrm
    # v = dv2 − alpha e_q, stored in place; the sign choice avoids cancellation.
    dv[q] -= alpha
    vtv = ss - 2.0 * alpha * (dv[q] + alpha) + alpha * alpha
    beta = 2.0 / vtv
    for k in range(n):
        acc = 0.0
        for i in range(q, n):
            acc += dv[i] * JT[i, k]
        acc *= beta
        for i in range(q, n):
            JT[i, k] -= acc * dv[i]
    dv[q] = alpha
    for i in range(q + 1, n):
        dv[i] = 0.0


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _drop(
    pos: int,
    q: int,
    R: np.ndarray,
    JT: np.ndarray,
    lam: np.ndarray,
    iact: np.ndarray,
    flag: np.ndarray,
) -> int:
    """Remove the active row at position ``pos``, restore triangular R; return new q."""
    flag[iact[pos]] = 0
    for i in range(pos, q - 1):
        iact[i] = iact[i + 1]
        lam[i] = lam[i + 1]
        for row in range(i + 2):
            R[row, i] = R[row, i + 1]
    # Columns pos..q-2 of R are now upper Hessenberg: one Givens rotation per
    # column restores triangular form; the basis JT gets the same rotation so
    # that Jᵀ N_active = [R; 0] keeps holding.
    n = JT.shape[1]
    for j in range(pos, q - 1):
        c, s, h = _givens(R[j, j], R[j + 1, j])
        R[j, j] = h
        R[j + 1, j] = 0.0
        _rotate_rows(R, j, j + 1, c, s, j + 1, q - 1)
        _rotate_rows(JT, j, j + 1, c, s, 0, n)
    return q - 1


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _scan(A: np.ndarray, b: np.ndarray, u: np.ndarray, sl: np.ndarray, mg: np.ndarray) -> None:
    """Slacks ``sl = b − A u`` and magnitudes ``mg = Σ_k |A_jk u_k|`` of all rows."""
    m, n = A.shape
    # Four rows at a time: four independent accumulator chains instead of one
    # latency-bound chain per 7-term dot product (~1.6x on the shield's rows).
    j = 0
    while j + 2 <= m:
        d0 = 0.0
        d1 = 0.0
        g0 = 0.0
        g1 = 0.0
        for k in range(n):
            uk = u[k]
            t0 = A[j, k] * uk
            t1 = A[j + 1, k] * uk
            d0 += t0
            d1 += t1
            g0 += abs(t0)
            g1 += abs(t1)
        sl[j] = b[j] - d0
        sl[j + 1] = b[j + 1] - d1
        mg[j] = g0
        mg[j + 1] = g1
        j += 2
    if j < m:
        d0 = 0.0
        g0 = 0.0
        for k in range(n):
            t0 = A[j, k] * u[k]
            d0 += t0
            g0 += abs(t0)
        sl[j] = b[j] - d0
        mg[j] = g0


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _solve_into(
    a: np.ndarray,
    A: np.ndarray,
    b: np.ndarray,
    w: np.ndarray,
    safe: np.ndarray,
    u_out: np.ndarray,
    act_out: np.ndarray,
    fwork: np.ndarray,
    iwork: np.ndarray,
) -> int:
    """Solve one projection QP into ``u_out``/``act_out``; return the status.

    ``fwork`` and ``iwork`` come from :func:`_work` (``m`` rows, ``n`` variables),
    so batched callers allocate them once per chunk, not once per problem.
    """
    n = a.shape[0]
    m = b.shape[0]
    if A.shape[0] != m or A.shape[1] != n or w.shape[0] != n or safe.shape[0] != n:
        raise ValueError("project: shapes must be a[n], A[m,n], b[m], w[n], safe[n]")
    if u_out.shape[0] != n or act_out.shape[0] != m:
        raise ValueError("project: output shapes must be u[n], active[m]")
    if fwork.shape[0] < _fwork_size(m, n) or iwork.shape[0] < m + n:
        raise ValueError("project: workspace too small")

    # Non-finite data or a non-positive weight: nothing below would mean anything.
    if not (_all_finite_1d(a) and _all_finite_1d(b) and _all_finite_1d(safe)):
        _fill_safe(safe, u_out, act_out)
        return STATUS_NONFINITE
    for i in range(n):
        if not (math.isfinite(w[i]) and w[i] > 0.0):
            _fill_safe(safe, u_out, act_out)
            return STATUS_NONFINITE

    # Workspace views (no allocation on the hot path).
    o = 0
    sl = fwork[o : o + m]  # slacks b − A u
    o += m
    ar = fwork[o : o + m]  # weighted 1-norms Σ_k |A_jk| / sqrt(w_k)
    o += m
    mg = fwork[o : o + m]  # row magnitudes Σ_k |A_jk u_k|
    o += m
    nw = fwork[o : o + m]  # weighted 2-norms, computed only for rows that enter
    o += m
    JT = fwork[o : o + n * n].reshape((n, n))  # rows: orthonormal basis (GI's J, transposed)
    o += n * n
    R = fwork[o : o + n * n].reshape((n, n))  # upper triangular: Jᵀ N_active = [R; 0]
    o += n * n
    rs = fwork[o : o + n]  # 1 / sqrt(w)
    o += n
    x = fwork[o : o + n]  # iterate in z = sqrt(w) u
    o += n
    u = fwork[o : o + n]  # the same iterate in u
    o += n
    cp = fwork[o : o + n]  # unit normal of the entering row in z-space
    o += n
    dv = fwork[o : o + n]
    o += n
    zdir = fwork[o : o + n]
    o += n
    r = fwork[o : o + n]
    o += n
    lam = fwork[o : o + n]  # multipliers of the active rows
    flag = iwork[:m]  # 0: candidate row, 1: ignored (inert zero row), 2: in active set
    iact = iwork[m : m + n]

    # Fast path, exact arithmetic on the raw rows: most actions the shield sees are
    # already safe and must come back bit-for-bit. A NaN/inf entry of A shows up as
    # a non-finite |dot| sum (a is finite), so this loop also screens A; so does
    # a product beyond float64 range (|A_jk a_k| > 1e308), which no tolerance
    # below could judge.
    feasible = True
    for j in range(m):
        dot = 0.0
        mag = 0.0
        for k in range(n):
            t = A[j, k] * a[k]
            dot += t
            mag += abs(t)
        if not math.isfinite(mag):
            _fill_safe(safe, u_out, act_out)
            return STATUS_NONFINITE
        slack = b[j] - dot
        sl[j] = slack
        mg[j] = mag
        if slack < 0.0:
            feasible = False
        # Binding to rounding relative to the magnitudes in the row; a zero row
        # binds nothing (the check is off the common path: slack is rarely ~0).
        act_out[j] = slack <= _FEAS_TOL * (abs(b[j]) + mag) and not _zero_row(A, j)
    if feasible:
        for i in range(n):
            u_out[i] = a[i]
        return STATUS_OK

    # Change of variables z = sqrt(w) u turns the objective into ½‖z − z0‖² with
    # z0 = sqrt(w) a: the Hessian is I, so GI's Cholesky factor is trivial.
    for i in range(n):
        sq = math.sqrt(w[i])
        rs[i] = 1.0 / sq
        x[i] = sq * a[i]
        u[i] = a[i]
        for k in range(n):
            JT[i, k] = 1.0 if i == k else 0.0
    for j in range(m):
        acc = 0.0
        for k in range(n):
            acc += abs(A[j, k]) * rs[k]
        ar[j] = acc
        nw[j] = -1.0
        flag[j] = 0

    # Goldfarb–Idnani dual active-set iterations. Invariants (H = I):
    #   JT orthonormal, J N = [R; 0] for the q active normals N (GI's n_j = −c_j),
    #   lam ≥ 0 their multipliers, x the minimiser subject to the active rows.
    # Rows are normalised only when they enter (lazily), so the common case of
    # a few binding limits never pays for normalising all m rows.
    q = 0
    iters = 0
    # Each iteration adds or drops one row and GI terminates finitely, so this is
    # a guard against rounding-induced cycling only.
    max_iters = 10 * (m + n) + 50
    # Distance travelled by x: rounding of the steps (unit directions from
    # orthogonal factors) is a few ulps of it in every component.
    path = 0.0
    first = True
    while True:
        # Step 1: slacks of the candidate rows at u (the fast path already has
        # those of u = a) and the most violated row, by distance in z-space.
        if not first:
            for i in range(n):
                u[i] = x[i] * rs[i]
            _scan(A, b, u, sl, mg)
        first = False
        p = -1
        worst = 0.0
        for j in range(m):
            if flag[j] != 0:
                continue
            slj = sl[j]
            if slj < 0.0 and slj < -(_FEAS_TOL * (abs(b[j]) + mg[j]) + _ROUND_TOL * path * ar[j]):
                if ar[j] == 0.0:
                    # 0·u <= b with b < 0 cannot hold; with b >= 0 the row is inert
                    # (that is how batched callers pad). Only exact zeros (after
                    # weighting, i.e. up to underflow) count: any relative cut-off
                    # would drop legitimate rows of problems spanning many decades,
                    # while a tiny row is normalised and handled exactly, and keeping
                    # a rounding-level row is conservative (it can only restrict u).
                    if b[j] < 0.0:
                        _fill_safe(safe, u_out, act_out)
                        return STATUS_INFEASIBLE
                    flag[j] = 1
                    continue
                if nw[j] < 0.0:
                    # Scaled by the largest entry: no under/overflow of the squares
                    # for rows anywhere in float64's range.
                    big = 0.0
                    for k in range(n):
                        big = max(big, abs(A[j, k]) * rs[k])
                    acc = 0.0
                    for k in range(n):
                        c = A[j, k] * rs[k] / big
                        acc += c * c
                    nw[j] = big * math.sqrt(acc)
                dist = sl[j] / nw[j]
                if dist < worst:
                    worst = dist
                    p = j
        if p < 0:
            break  # primal feasible and dual feasible: optimal

        # Unit normal and offset of p, divided through the largest entry first so
        # that neither overflows for rows near float64's limits.
        big = 0.0
        for k in range(n):
            big = max(big, abs(A[p, k]) * rs[k])
        inv = big / nw[p]
        for k in range(n):
            cp[k] = A[p, k] * rs[k] / big * inv
        dp = b[p] / big * inv
        if not math.isfinite(dp):
            # |b_p| / ‖A_p‖ beyond 1e308: the row asks for a u float64 cannot hold.
            _fill_safe(safe, u_out, act_out)
            return STATUS_NONFINITE
        up = 0.0  # multiplier of the entering row p
        while True:
            iters += 1
            if iters > max_iters:
                _fill_safe(safe, u_out, act_out)
                return STATUS_MAXITER
            # Step 2(a): dv = J n_p with n_p = −c_p; primal direction zdir = J2ᵀ dv2
            # spans the null space of the active rows, dual direction r = R⁻¹ dv1.
            ztn = 0.0
            for i in range(n):
                acc = 0.0
                for k in range(n):
                    acc -= JT[i, k] * cp[k]
                dv[i] = acc
                if i >= q:
                    ztn += acc * acc
            for k in range(n):
                zdir[k] = 0.0
            for i in range(q, n):
                di = dv[i]
                for k in range(n):
                    zdir[k] += JT[i, k] * di
            rmax = 0.0
            for i in range(q - 1, -1, -1):
                acc = dv[i]
                for k in range(i + 1, q):
                    acc -= R[i, k] * r[k]
                r[i] = acc / R[i, i]
                rmax = max(rmax, abs(r[i]))
            # Step 2(b): dual step length t1 (largest step keeping lam ≥ 0) and the
            # active position that blocks it. Rounding-level positive entries of r
            # are ignored: they would give an enormous, meaningless dual step.
            t1 = math.inf
            kdrop = -1
            rtol = 1e-14 * rmax
            for i in range(q):
                if r[i] > rtol:
                    t = lam[i] / r[i]
                    if t < t1:
                        t1 = t
                        kdrop = i
            if ztn <= _DEP_TOL * _DEP_TOL:
                # n_p lies in the span of the active normals: no primal step exists.
                if kdrop < 0:
                    # ... and is a non-positive combination of them: the rows
                    # cannot all hold (GI step 2(c)(i)).
                    _fill_safe(safe, u_out, act_out)
                    return STATUS_INFEASIBLE
                # Dual-only step: drop the blocking row, keep p pending.
                for i in range(q):
                    lam[i] = max(lam[i] - t1 * r[i], 0.0)
                up += t1
                q = _drop(kdrop, q, R, JT, lam, iact, flag)
                continue
            # Slack of p at the current x (recomputed, not accumulated, to avoid drift).
            sp = dp
            for k in range(n):
                sp -= cp[k] * x[k]
            t2 = -sp / ztn  # full step: makes row p exactly active
            if not t2 <= t1 and kdrop < 0:
                # NaN (data at float64's limits): never step on it.
                _fill_safe(safe, u_out, act_out)
                return STATUS_NONFINITE
            if t2 <= t1:
                for k in range(n):
                    x[k] += t2 * zdir[k]
                path += t2 * math.sqrt(ztn)
                for i in range(q):
                    lam[i] = max(lam[i] - t2 * r[i], 0.0)
                up += t2
                # Add p: one Householder reflection of the null-space rows JT[q:]
                # maps dv2 onto ∓‖dv2‖ e_q (one sqrt instead of n − q − 1 Givens
                # rotations); the new R column is dv1 and that entry.
                _householder(JT, dv, q, ztn)
                for i in range(q + 1):
                    R[i, q] = dv[i]
                iact[q] = p
                lam[q] = up
                flag[p] = 2
                q += 1
                break
            # Partial step: move until the blocking row's multiplier hits 0, drop it.
            for k in range(n):
                x[k] += t1 * zdir[k]
            path += t1 * math.sqrt(ztn)
            for i in range(q):
                lam[i] = max(lam[i] - t1 * r[i], 0.0)
            up += t1
            q = _drop(kdrop, q, R, JT, lam, iact, flag)

    # The last step 1 evaluated every candidate row at the final u. Rows binding
    # there are reported active: the optimal active set plus rows satisfied with
    # equality to tolerance.
    bad = False
    for i in range(n):
        bad |= not math.isfinite(u[i])
    for j in range(m):
        bad |= math.isnan(sl[j])  # A u overflowed: the rows were not really checked
    if bad:
        # Only reachable with data near float64's limits (say a far vertex of
        # nearly parallel rows at 1e300): report it, never return inf/NaN.
        _fill_safe(safe, u_out, act_out)
        return STATUS_NONFINITE
    for i in range(n):
        # q == 0: a was feasible to tolerance; return it untouched, not z0 / sqrt(w).
        u_out[i] = a[i] if q == 0 else u[i]
    for j in range(m):
        if flag[j] == 2:
            act_out[j] = True
        elif flag[j] == 1:
            act_out[j] = False
        else:
            tol = _FEAS_TOL * (abs(b[j]) + mg[j]) + _ROUND_TOL * path * ar[j]
            act_out[j] = sl[j] <= tol and ar[j] > 0.0
    return STATUS_OK


@njit(cache=True, error_model="numpy")
def _fwork_size(m: int, n: int) -> int:
    return 4 * m + 2 * n * n + 9 * n


@njit(cache=True, error_model="numpy")
def _work(m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.empty(_fwork_size(m, n)), np.empty(m + n, dtype=np.int64)


@njit(cache=True, error_model="numpy")
def project(
    a: np.ndarray, A: np.ndarray, b: np.ndarray, w: np.ndarray, safe: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Project ``a`` onto ``{u : A u <= b}`` in the ``w``-weighted norm, exactly.

    Solves ``min_u ½ Σ w_i (u_i − a_i)²  s.t.  A u <= b`` with the dual
    active-set method of Goldfarb & Idnani (1983) on the scaled variable
    ``z = sqrt(w) u``; a row entering the active set is normalised to unit
    length, so rows and data scaled anywhere from 1e-6 to 1e6 share one relative
    tolerance. Linearly dependent rows (duplicates, positive multiples,
    equalities written as two inequalities) are handled by the method's dual
    step: the blocking row is dropped and the new one enters.

    Guarantees:
        * ``a`` feasible -> ``u`` is a bit-for-bit copy of ``a`` (exact check
          first; ``a`` violating rows only at rounding level, 1e-12 relative,
          comes back unchanged too).
        * status ``STATUS_OK`` -> for every row ``A_j u − b_j <= 1e-12 (|b_j| +
          Σ_k |A_jk u_k|) + 1.4e-14 L Σ_k |A_jk|/√w_k`` with ``L`` the length of
          the path from ``√w a`` to ``√w u`` (at least ``‖√w (u − a)‖``): relative
          to the row's own magnitudes plus the rounding of the steps, well inside
          ``1e-9`` of the row's scale; and ``u`` is the minimiser to rounding.
        * never raises on bad *values*: non-finite inputs, ``w <= 0`` or data
          whose products overflow float64 give ``STATUS_NONFINITE``, an empty feasible set ``STATUS_INFEASIBLE``, the
          iteration guard ``STATUS_MAXITER``; each returns a copy of ``safe`` (zeros
          if ``safe`` itself is non-finite) and no active rows. Wrong *shapes* raise
          ``ValueError``.
        * a zero row (all ``A_jk / sqrt(w_k)`` zero, i.e. zero up to underflow) is
          ignored when ``b_j >= 0`` and makes the problem infeasible otherwise. It
          is never reported active. Tiny non-zero rows are kept and normalised.

    Args:
        a: Desired command, float64[n] (n <= 12 is the design size; any n works).
        A: Constraint rows, float64[m, n]; m may be 0.
        b: Bounds, float64[m].
        w: Positive weights, float64[n].
        safe: Command returned when no projection exists (usually zeros), float64[n].

    Returns:
        ``(u, active, status)``: the projected command float64[n], bool[m] flags of
        the rows binding at ``u`` (the optimal active set plus any row satisfied
        with equality to the tolerance above), and the status code
        (``STATUS_NAMES[status]``).

    Example:
        >>> import numpy as np
        >>> u, act, st = project(np.array([2.0]), np.array([[1.0]]), np.array([1.0]),
        ...                      np.ones(1), np.zeros(1))
        >>> float(u[0]), bool(act[0]), st
        (1.0, True, 0)
    """
    u = np.empty(a.shape[0])
    active = np.zeros(b.shape[0], dtype=np.bool_)
    status = project_into(a, A, b, w, safe, u, active)
    return u, active, status


@njit(cache=True, error_model="numpy")
def project_into(
    a: np.ndarray,
    A: np.ndarray,
    b: np.ndarray,
    w: np.ndarray,
    safe: np.ndarray,
    u: np.ndarray,
    active: np.ndarray,
) -> int:
    """:func:`project` writing into caller-owned ``u`` (float64[n]) and ``active`` (bool[m]).

    Same method and guarantees; returns the status. Called from Python this is
    the fastest entry point: boxing the two fresh arrays that :func:`project`
    returns costs more than the projection itself on the shield's typical
    problems, so a stepping loop should allocate ``u`` and ``active`` once.
    """
    fwork, iwork = _work(b.shape[0], a.shape[0])
    return _solve_into(a, A, b, w, safe, u, active, fwork, iwork)


@njit(cache=True, error_model="numpy", parallel=True)
def project_batch(
    a: np.ndarray, A: np.ndarray, b: np.ndarray, w: np.ndarray, safe: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve ``N`` independent projection QPs in parallel (``numba.prange``).

    Problem ``i`` is exactly ``project(a[i], A[i], b[i], w[i], safe[i])``: same
    method, guarantees and statuses. All problems share the row count ``m``;
    callers with fewer rows pad with zero rows and ``b = +1`` (a zero row with
    ``b >= 0`` is inert: it never binds, is never reported active and costs one
    dot product). Threads share the work in chunks of a few problems.

    Args:
        a: float64[N, n] desired commands.
        A: float64[N, m, n] constraint rows.
        b: float64[N, m] bounds.
        w: float64[N, n] positive weights.
        safe: float64[N, n] safe commands.

    Returns:
        ``(u, active, status)`` with shapes ``[N, n]``, ``[N, m]`` (bool) and ``[N]``
        (int64).
    """
    N = a.shape[0]
    n = a.shape[1]
    m = b.shape[1]
    if A.shape[0] != N or b.shape[0] != N or w.shape[0] != N or safe.shape[0] != N:
        raise ValueError("project_batch: leading dimensions must all be N")
    u = np.empty((N, n))
    active = np.zeros((N, m), dtype=np.bool_)
    status = np.empty(N, dtype=np.int64)
    # Contiguous chunks of a few problems so each chunk allocates its workspace
    # once instead of once per problem. (numba.get_num_threads() would size them
    # per thread, but it is a dynamic global that defeats cache=True.)
    nchunks = (N + _CHUNK - 1) // _CHUNK
    for c in prange(nchunks):
        lo = c * _CHUNK
        hi = min(N, lo + _CHUNK)
        fwork, iwork = _work(m, n)
        for i in range(lo, hi):
            status[i] = _solve_into(a[i], A[i], b[i], w[i], safe[i], u[i], active[i], fwork, iwork)
    return u, active, status


class Projection(NamedTuple):
    """Result of :func:`solve`.

    Attributes:
        action: The projected (safe) command, float64[n].
        active: Rows binding at ``action``, bool[m].
        correction: ``sqrt(Σ w_i (action_i − a_i)²)``: how far the shield moved the
            command, in the weighted norm (0.0 when it did not intervene).
        status: ``STATUS_OK``, ``STATUS_INFEASIBLE``, ``STATUS_NONFINITE`` or
            ``STATUS_MAXITER``; see ``STATUS_NAMES``.
    """

    action: npt.NDArray[np.float64]
    active: npt.NDArray[np.bool_]
    correction: float
    status: int

    @property
    def ok(self) -> bool:
        """True when the projection was solved (``status == STATUS_OK``)."""
        return self.status == STATUS_OK


def solve(
    a: npt.ArrayLike,
    A: npt.ArrayLike,
    b: npt.ArrayLike,
    w: npt.ArrayLike | None = None,
    safe: npt.ArrayLike | None = None,
) -> Projection:
    """Convenience wrapper around :func:`project` for array-likes.

    Converts the inputs to contiguous float64 (``w`` defaults to ones, ``safe`` to
    zeros), projects, and reports the weighted correction norm. Use
    :func:`project` directly on a hot path that already holds float64 arrays.

    Example:
        >>> solve([2.0, 0.0], [[1.0, 1.0]], [1.0]).action.tolist()
        [1.5, -0.5]
    """
    a_ = np.ascontiguousarray(a, dtype=np.float64).reshape(-1)
    n = a_.shape[0]
    A_ = np.ascontiguousarray(A, dtype=np.float64).reshape(-1, n)
    b_ = np.ascontiguousarray(b, dtype=np.float64).reshape(-1)
    w_ = np.ones(n) if w is None else np.ascontiguousarray(w, dtype=np.float64).reshape(-1)
    s_ = np.zeros(n) if safe is None else np.ascontiguousarray(safe, dtype=np.float64).reshape(-1)
    u, active, status = project(a_, A_, b_, w_, s_)
    with np.errstate(invalid="ignore", over="ignore"):
        correction = float(np.sqrt(np.sum(w_ * (u - a_) ** 2)))
    return Projection(u, active, correction, int(status))


def warmup() -> None:
    """Compile (or load from numba's cache) both kernels on tiny inputs."""
    a = np.array([2.0, 0.0])
    A = np.array([[1.0, 0.0]])
    b = np.array([1.0])
    w = np.ones(2)
    z = np.zeros(2)
    project(a, A, b, w, z)
    project_batch(a[None], A[None], b[None], w[None], z[None])
