"""Numba-jitted projection kernels: the exact QP behind the shield.

Every safety limit in safebot is a linear row in the command ``u``
(docs/design.md, rule 1), so making an action safe is one small quadratic
program

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
call :func:`project_batch`, and jitted code calls :func:`solve_into` with
workspaces from :func:`work` (no allocation, no Python dispatch). :func:`solve`
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
    "solve_into",
    "warmup",
    "work",
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
# Weighted row norms are summed unscaled when the largest weighted entry lies in
# (2^-500, 2^500): no square can overflow there, and one that underflows is below
# 2^-74 of the sum (rounding). Rows outside (near float64's limits) are divided
# by their largest entry first, which costs a division per entry.
_UNSCALED_LO = 2.0**-500
_UNSCALED_HI = 2.0**500
# The helpers below are inlined at numba's level (inline="always"): LLVM does not
# inline across numba functions, and the calls, each passing every array as
# several scalars, cost ~13 % of a solve.
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


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _givens(x: float, y: float) -> tuple[float, float, float]:
    """Return (c, s, h) with [c s; -s c] @ [x; y] = [h; 0]."""
    # Plain sqrt, not hypot (3x slower): the entries are coordinates of unit
    # vectors in an orthonormal basis, so x² + y² cannot overflow.
    h = math.sqrt(x * x + y * y)
    if h == 0.0:
        return 1.0, 0.0, 0.0
    return x / h, y / h, h


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _rotate_rows(M: np.ndarray, i: int, k: int, c: float, s: float, lo: int, hi: int) -> None:
    # Rows (i, k) of M, columns lo..hi-1, <- G @ rows with G = [c s; -s c].
    for col in range(lo, hi):
        mi = M[i, col]
        mk = M[k, col]
        M[i, col] = c * mi + s * mk
        M[k, col] = -s * mi + c * mk


# Layout of the float workspace F (see work()): one row per vector, then the two
# n x n factors, so that no array view is created on the hot path (each view
# costs a reference-count increment and decrement, ~20 cycles, and the solve of
# an already-safe action is only a few hundred).
_SL = 0  # slacks b − A u                          (m)
_AR = 1  # weighted 1-norms Σ_k |A_jk| / sqrt(w_k) (m)
_MG = 2  # row magnitudes Σ_k |A_jk u_k|           (m)
_NW = 3  # weighted 2-norms, only of rows inspected (m)
_RS = 4  # 1 / sqrt(w)                             (n)
_X = 5  # iterate in z = sqrt(w) u                 (n)
_U = 6  # the same iterate in u                    (n)
_CP = 7  # unit normal of the entering row, z-space (n)
_DV = 8  # J n_p                                   (n)
_ZD = 9  # primal direction                        (n)
_RD = 10  # dual direction                         (n)
_LAM = 11  # multipliers of the active rows        (n)
_TMP = 12  # Householder scratch                   (n)
_SS = 13  # squared weighted 2-norms Σ_k (A_jk / sqrt(w_k))² (m)
_JT = 14  # rows _JT.._JT+n-1: orthonormal basis (GI's J, transposed); then R (n x n)
# Rows of the integer workspace IW.
_FLAG = 0  # per row: 0 candidate, 1 ignored (inert zero row), 2 in the active set
_IACT = 1  # row index of each active position


@njit(cache=True, error_model="numpy", inline="always")
def _nonfinite_sum(x: np.ndarray) -> float:
    # x − x is 0 for a finite x and NaN for ±inf or NaN: the sum screens a whole
    # vector without a branch per entry (two chains: the adds are the latency).
    s0 = 0.0
    s1 = 0.0
    i = 0
    while i + 2 <= x.shape[0]:
        s0 += x[i] - x[i]
        s1 += x[i + 1] - x[i + 1]
        i += 2
    if i < x.shape[0]:
        s0 += x[i] - x[i]
    return s0 + s1


@njit(cache=True, error_model="numpy", inline="always")
def _inputs_ok(a: np.ndarray, w: np.ndarray, safe: np.ndarray, m: int) -> bool:
    """Whether w and safe are finite, every weight is positive, and a is finite when m = 0.

    With rows, a and b are screened by :func:`_screen` on the way (a non-finite
    a_k makes every product A_jk a_k, zero A_jk included, inf or NaN).
    """
    s = _nonfinite_sum(w) + _nonfinite_sum(safe)
    if m == 0:
        s += _nonfinite_sum(a)
    if not s == 0.0:
        return False
    for i in range(w.shape[0]):
        if not w[i] > 0.0:
            return False
    return True


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _householder(F: np.ndarray, q: int, n: int, ss: float) -> None:
    """Reflect basis rows q.. so that dv[q:] (with ‖dv[q:]‖² = ss) becomes ∓‖·‖ e_q."""
    nrm = math.sqrt(ss)
    alpha = -nrm if F[_DV, q] >= 0.0 else nrm
    # v = dv2 − alpha e_q, stored in place; the sign choice avoids cancellation.
    F[_DV, q] -= alpha
    vtv = ss - 2.0 * alpha * (F[_DV, q] + alpha) + alpha * alpha
    beta = 2.0 / vtv
    # tmp = vᵀ JT[q:], then JT[q:] −= beta v tmp. Both loops run along the rows
    # of JT (contiguous) with one independent accumulator per column, instead of
    # one latency-bound dot product per column.
    for k in range(n):
        F[_TMP, k] = 0.0
    for i in range(q, n):
        vi = F[_DV, i]
        for k in range(n):
            F[_TMP, k] += vi * F[_JT + i, k]
    for i in range(q, n):
        f = beta * F[_DV, i]
        for k in range(n):
            F[_JT + i, k] -= f * F[_TMP, k]
    F[_DV, q] = alpha
    for i in range(q + 1, n):
        F[_DV, i] = 0.0


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _first_add(F: np.ndarray, n: int, dp: float) -> tuple[float, float]:
    """GI's first full step and add from J = I, q = 0; return ``(t2, ‖dv‖²)``.

    With J = I the general step reduces to dv = zdir = n_p = −cp, and the
    Householder reflection of I is I − beta v vᵀ, written directly (no identity
    to initialise, no products with it). Every quantity is the one the general
    path computes, in the same order, so the results are identical. Nothing is
    written when the step is NaN.
    """
    ztn = 0.0
    for k in range(n):
        d = -F[_CP, k]
        F[_DV, k] = d
        F[_ZD, k] = d
        ztn += d * d
    sp = dp
    for k in range(n):
        sp -= F[_CP, k] * F[_X, k]
    t2 = -sp / ztn
    if not t2 <= math.inf:
        return t2, ztn
    for k in range(n):
        F[_X, k] += t2 * F[_ZD, k]
    nrm = math.sqrt(ztn)
    alpha = -nrm if F[_DV, 0] >= 0.0 else nrm
    F[_DV, 0] -= alpha
    vtv = ztn - 2.0 * alpha * (F[_DV, 0] + alpha) + alpha * alpha
    beta = 2.0 / vtv
    for i in range(n):
        f = beta * F[_DV, i]
        for k in range(n):
            F[_JT + i, k] = (1.0 if i == k else 0.0) - f * F[_DV, k]
    F[_JT + n, 0] = alpha  # R's first column
    return t2, ztn


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _drop(pos: int, q: int, n: int, F: np.ndarray, IW: np.ndarray) -> int:
    """Remove the active row at position ``pos``, restore triangular R; return new q."""
    R = _JT + n  # first row of R in F
    IW[_FLAG, IW[_IACT, pos]] = 0
    for i in range(pos, q - 1):
        IW[_IACT, i] = IW[_IACT, i + 1]
        F[_LAM, i] = F[_LAM, i + 1]
        for row in range(i + 2):
            F[R + row, i] = F[R + row, i + 1]
    # Columns pos..q-2 of R are now upper Hessenberg: one Givens rotation per
    # column restores triangular form; the basis JT gets the same rotation so
    # that Jᵀ N_active = [R; 0] keeps holding.
    for j in range(pos, q - 1):
        c, s, h = _givens(F[R + j, j], F[R + j + 1, j])
        F[R + j, j] = h
        F[R + j + 1, j] = 0.0
        _rotate_rows(F, R + j, R + j + 1, c, s, j + 1, q - 1)
        _rotate_rows(F, _JT + j, _JT + j + 1, c, s, 0, n)
    return q - 1


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _scan(A: np.ndarray, b: np.ndarray, u: np.ndarray, F: np.ndarray) -> None:
    """Slacks ``b − A u`` and magnitudes ``Σ_k |A_jk u_k|`` of all rows, into F."""
    m, n = A.shape
    # Four rows at a time: eight independent accumulator chains instead of
    # latency-bound dot products (~1.3x over two rows at a time on the shield's
    # rows). Each row still sums k = 0, 1, ... in order.
    j = 0
    while j + 4 <= m:
        d0 = 0.0
        d1 = 0.0
        d2 = 0.0
        d3 = 0.0
        g0 = 0.0
        g1 = 0.0
        g2 = 0.0
        g3 = 0.0
        for k in range(n):
            uk = u[k]
            t0 = A[j, k] * uk
            t1 = A[j + 1, k] * uk
            t2 = A[j + 2, k] * uk
            t3 = A[j + 3, k] * uk
            d0 += t0
            d1 += t1
            d2 += t2
            d3 += t3
            g0 += abs(t0)
            g1 += abs(t1)
            g2 += abs(t2)
            g3 += abs(t3)
        F[_SL, j] = b[j] - d0
        F[_SL, j + 1] = b[j + 1] - d1
        F[_SL, j + 2] = b[j + 2] - d2
        F[_SL, j + 3] = b[j + 3] - d3
        F[_MG, j] = g0
        F[_MG, j + 1] = g1
        F[_MG, j + 2] = g2
        F[_MG, j + 3] = g3
        j += 4
    if j + 2 <= m:
        # Two of the last three rows together, for the same reason.
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
        F[_SL, j] = b[j] - d0
        F[_SL, j + 1] = b[j + 1] - d1
        F[_MG, j] = g0
        F[_MG, j + 1] = g1
        j += 2
    if j < m:
        d0 = 0.0
        g0 = 0.0
        for k in range(n):
            t0 = A[j, k] * u[k]
            d0 += t0
            g0 += abs(t0)
        F[_SL, j] = b[j] - d0
        F[_MG, j] = g0


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _slacks(A: np.ndarray, b: np.ndarray, u: np.ndarray, F: np.ndarray) -> None:
    """Slacks ``b − A u`` of all rows into F, four rows at a time (as :func:`_scan`).

    The iterations need the magnitudes of a few rows only: :func:`_row_mag`.
    """
    m, n = A.shape
    j = 0
    while j + 4 <= m:
        d0 = 0.0
        d1 = 0.0
        d2 = 0.0
        d3 = 0.0
        for k in range(n):
            uk = u[k]
            d0 += A[j, k] * uk
            d1 += A[j + 1, k] * uk
            d2 += A[j + 2, k] * uk
            d3 += A[j + 3, k] * uk
        F[_SL, j] = b[j] - d0
        F[_SL, j + 1] = b[j + 1] - d1
        F[_SL, j + 2] = b[j + 2] - d2
        F[_SL, j + 3] = b[j + 3] - d3
        j += 4
    while j < m:
        d0 = 0.0
        for k in range(n):
            d0 += A[j, k] * u[k]
        F[_SL, j] = b[j] - d0
        j += 1


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _row_mag(A: np.ndarray, j: int, u: np.ndarray) -> float:
    """``Σ_k |A_jk u_k|``: the magnitude a row's feasibility tolerance is relative to."""
    g = 0.0
    for k in range(A.shape[1]):
        g += abs(A[j, k] * u[k])
    return g


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _weighted_norms(A: np.ndarray, F: np.ndarray) -> None:
    """Weighted 1-norms ``Σ_k |c_jk|`` and squared 2-norms ``Σ_k c_jk²`` of all rows.

    ``c_jk = A_jk rs_k``; four rows at a time (as :func:`_scan`), one pass over
    A for both. The squares are only used where they cannot have overflowed or
    underflowed (see :func:`_most_violated`).
    """
    m, n = A.shape
    j = 0
    while j + 4 <= m:
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        q0 = 0.0
        q1 = 0.0
        q2 = 0.0
        q3 = 0.0
        for k in range(n):
            rk = F[_RS, k]
            c0 = A[j, k] * rk
            c1 = A[j + 1, k] * rk
            c2 = A[j + 2, k] * rk
            c3 = A[j + 3, k] * rk
            s0 += abs(c0)
            s1 += abs(c1)
            s2 += abs(c2)
            s3 += abs(c3)
            q0 += c0 * c0
            q1 += c1 * c1
            q2 += c2 * c2
            q3 += c3 * c3
        F[_AR, j] = s0
        F[_AR, j + 1] = s1
        F[_AR, j + 2] = s2
        F[_AR, j + 3] = s3
        F[_SS, j] = q0
        F[_SS, j + 1] = q1
        F[_SS, j + 2] = q2
        F[_SS, j + 3] = q3
        j += 4
    while j < m:
        s0 = 0.0
        q0 = 0.0
        for k in range(n):
            c0 = A[j, k] * F[_RS, k]
            s0 += abs(c0)
            q0 += c0 * c0
        F[_AR, j] = s0
        F[_SS, j] = q0
        j += 1


@njit(cache=True, error_model="numpy", inline="always")
def _screen(A: np.ndarray, b: np.ndarray, a: np.ndarray, F: np.ndarray, act_out: np.ndarray) -> int:
    """Slacks at ``u = a``; return 0 (feasible), 1 (must project) or −1 (non-finite).

    Exact arithmetic on the raw rows: most actions the shield sees are already
    safe and must come back bit-for-bit. A NaN/inf entry of a or A shows up as
    a non-finite magnitude, one of b as a non-finite slack, so this screens a,
    A and b; so does a product beyond float64 range (|A_jk a_k| > 1e308), which
    no tolerance could judge. ``act_out`` gets the rows binding at ``a`` to
    rounding.
    """
    _scan(A, b, a, F)
    feasible = True
    for j in range(b.shape[0]):
        mag = F[_MG, j]
        slack = F[_SL, j]
        if not (math.isfinite(mag) & math.isfinite(slack)):
            return -1
        if slack < 0.0:
            feasible = False
        # Binding to rounding relative to the magnitudes in the row; a zero row
        # binds nothing (the check is off the common path: slack is rarely ~0).
        act_out[j] = slack <= _FEAS_TOL * (abs(b[j]) + mag) and not _zero_row(A, j)
    return 0 if feasible else 1


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _weighted_norm(A: np.ndarray, j: int, F: np.ndarray) -> float:
    """``‖A_j diag(rs)‖₂``, without under/overflow for rows anywhere in float64's range."""
    n = A.shape[1]
    big = 0.0
    acc = 0.0
    for k in range(n):
        c = A[j, k] * F[_RS, k]
        big = max(big, abs(c))
        acc += c * c
    if _UNSCALED_LO < big < _UNSCALED_HI:
        return math.sqrt(acc)
    # Near float64's limits: scaled by the largest entry first.
    acc = 0.0
    for k in range(n):
        c = A[j, k] * F[_RS, k] / big
        acc += c * c
    return big * math.sqrt(acc)


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _unit_normal(A: np.ndarray, b: np.ndarray, p: int, F: np.ndarray) -> float:
    """Unit normal of row p in z-space into F; return its offset ``b_p / ‖·‖`` (may be inf)."""
    n = A.shape[1]
    nwp = F[_NW, p]
    if _UNSCALED_LO < nwp < _UNSCALED_HI:
        # Every weighted entry is at most nwp: no product below can overflow.
        inv = 1.0 / nwp
        for k in range(n):
            F[_CP, k] = A[p, k] * F[_RS, k] * inv
        return b[p] * inv
    # Divided through the largest entry first so that nothing overflows for rows
    # near float64's limits.
    big = 0.0
    for k in range(n):
        big = max(big, abs(A[p, k]) * F[_RS, k])
    inv = big / nwp
    for k in range(n):
        F[_CP, k] = A[p, k] * F[_RS, k] / big * inv
    return b[p] / big * inv


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _most_violated(
    A: np.ndarray,
    b: np.ndarray,
    u: np.ndarray,
    F: np.ndarray,
    IW: np.ndarray,
    path: float,
    fresh: bool,
) -> int:
    """GI step 1: the candidate row most violated by distance in z-space.

    Returns its index, −1 when no row is violated beyond tolerance (optimal), or
    −2 when a zero row has ``b < 0`` (infeasible). Marks inert zero rows and
    fills the weighted 2-norms of the rows it inspects, lazily: the common case
    of a few binding limits never pays for normalising all m rows. The
    magnitudes ``Σ_k |A_jk u_k|`` of the tolerance are those of the screen when
    ``fresh`` (u = a), else computed here for the rows with negative slack only.
    """
    p = -1
    worst = 0.0
    for j in range(b.shape[0]):
        slj = F[_SL, j]
        if not slj < 0.0 or IW[_FLAG, j] != 0:
            continue
        arj = F[_AR, j]
        mgj = F[_MG, j] if fresh else _row_mag(A, j, u)
        if slj < -(_FEAS_TOL * (abs(b[j]) + mgj) + _ROUND_TOL * path * arj):
            if arj == 0.0:
                # 0·u <= b with b < 0 cannot hold; with b >= 0 the row is inert
                # (that is how batched callers pad). Only exact zeros (after
                # weighting, i.e. up to underflow) count: any relative cut-off
                # would drop legitimate rows of problems spanning many decades,
                # while a tiny row is normalised and handled exactly, and keeping
                # a rounding-level row is conservative (it can only restrict u).
                if b[j] < 0.0:
                    return -2
                IW[_FLAG, j] = 1
                continue
            if F[_NW, j] < 0.0:
                # ar_j/n <= max_k |A_jk| rs_k <= ar_j: inside the unscaled range,
                # the squares summed in _weighted_norms are exact to rounding.
                if _UNSCALED_LO * A.shape[1] < arj < _UNSCALED_HI:
                    F[_NW, j] = math.sqrt(F[_SS, j])
                else:
                    F[_NW, j] = _weighted_norm(A, j, F)
            dist = slj / F[_NW, j]
            if dist < worst:
                worst = dist
                p = j
    return p


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _directions(F: np.ndarray, q: int, n: int) -> tuple[float, float]:
    """GI step 2(a) for the entering normal ``n_p = −cp``; return ``(‖dv2‖², max|r|)``.

    ``dv = J n_p``; the primal direction ``zdir = J2ᵀ dv2`` spans the null space
    of the active rows, the dual direction is ``r = R⁻¹ dv1``.
    """
    # Column by column: n independent accumulators (each still sums k in order).
    for i in range(n):
        F[_DV, i] = 0.0
    for k in range(n):
        ck = F[_CP, k]
        for i in range(n):
            F[_DV, i] -= F[_JT + i, k] * ck
    ztn = 0.0
    for i in range(q, n):
        ztn += F[_DV, i] * F[_DV, i]
    # zdir = J2ᵀ dv2 from the null-space rows, not n_p − J1ᵀ dv1 from the active
    # ones (fewer rows when few are active): that difference cancels when n_p is
    # nearly in the active span, and lost 1e-9 of feasibility on rows spanning
    # 1e±20 (found by test_extreme_magnitudes_never_raise_or_lie).
    for k in range(n):
        F[_ZD, k] = 0.0
    for i in range(q, n):
        di = F[_DV, i]
        for k in range(n):
            F[_ZD, k] += F[_JT + i, k] * di
    R = _JT + n
    rmax = 0.0
    for i in range(q - 1, -1, -1):
        acc = F[_DV, i]
        for k in range(i + 1, q):
            acc -= F[R + i, k] * F[_RD, k]
        ri = acc / F[R + i, i]
        F[_RD, i] = ri
        rmax = max(rmax, abs(ri))
    return ztn, rmax


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _dual_step(F: np.ndarray, q: int, rmax: float) -> tuple[float, int]:
    """GI step 2(b): the largest step keeping ``lam >= 0`` and the position that blocks it.

    Rounding-level positive entries of r are ignored: they would give an
    enormous, meaningless dual step. ``(inf, −1)`` when nothing blocks.
    """
    t1 = math.inf
    kdrop = -1
    rtol = 1e-14 * rmax
    for i in range(q):
        ri = F[_RD, i]
        if ri > rtol:
            t = F[_LAM, i] / ri
            if t < t1:
                t1 = t
                kdrop = i
    return t1, kdrop


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _finish(
    a: np.ndarray,
    A: np.ndarray,
    b: np.ndarray,
    safe: np.ndarray,
    u: np.ndarray,
    F: np.ndarray,
    IW: np.ndarray,
    q: int,
    path: float,
    u_out: np.ndarray,
    act_out: np.ndarray,
) -> int:
    """Write the optimum and the rows binding there; return the status.

    The last step 1 evaluated every candidate row at the final u. Rows binding
    there are reported active: the optimal active set plus rows satisfied with
    equality to tolerance.
    """
    n = a.shape[0]
    bad = False
    for i in range(n):
        bad |= not math.isfinite(F[_U, i])
    for j in range(b.shape[0]):
        bad |= math.isnan(F[_SL, j])  # A u overflowed: the rows were not really checked
    if bad:
        # Only reachable with data near float64's limits (say a far vertex of
        # nearly parallel rows at 1e300): report it, never return inf/NaN.
        _fill_safe(safe, u_out, act_out)
        return STATUS_NONFINITE
    for i in range(n):
        # q == 0: a was feasible to tolerance; return it untouched, not z0 / sqrt(w).
        u_out[i] = a[i] if q == 0 else F[_U, i]
    # Σ_k |A_jk u_k| <= ar_j max_k |x_k| (u_k = x_k / sqrt(w_k)); twice that
    # bounds the rounding too. A row whose slack exceeds the tolerance with this
    # bound is not binding; only the others need their exact magnitude.
    xinf = 0.0
    for i in range(n):
        xinf = max(xinf, abs(F[_X, i]))
    for j in range(b.shape[0]):
        fl = IW[_FLAG, j]
        ar = F[_AR, j]
        slj = F[_SL, j]
        act = fl == 2
        if fl == 0 and ar > 0.0:
            base = _FEAS_TOL * abs(b[j]) + _ROUND_TOL * path * ar
            if slj <= base + _FEAS_TOL * 2.0 * ar * xinf:
                mgj = F[_MG, j] if q == 0 else _row_mag(A, j, u)
                act = slj <= base + _FEAS_TOL * mgj
        act_out[j] = act
    return STATUS_OK


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _setup(a: np.ndarray, w: np.ndarray, A: np.ndarray, F: np.ndarray, IW: np.ndarray) -> None:
    """Start of GI at the unconstrained minimum, in z = sqrt(w) u.

    The change of variables turns the objective into ½‖z − z0‖² with
    z0 = sqrt(w) a: the Hessian is I, so GI's Cholesky factor is trivial.
    """
    n = a.shape[0]
    for i in range(n):
        sq = math.sqrt(w[i])
        F[_RS, i] = 1.0 / sq
        F[_X, i] = sq * a[i]
        F[_U, i] = a[i]
    # J = I is written by _first_add together with the first reflection.
    _weighted_norms(A, F)
    for j in range(A.shape[0]):
        F[_NW, j] = -1.0
        IW[_FLAG, j] = 0


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _dual_active_set(
    a: np.ndarray,
    A: np.ndarray,
    b: np.ndarray,
    safe: np.ndarray,
    F: np.ndarray,
    IW: np.ndarray,
    u: np.ndarray,
    u_out: np.ndarray,
    act_out: np.ndarray,
) -> int:
    """Goldfarb–Idnani iterations from the state :func:`_setup` leaves; return the status.

    Invariants (H = I): JT orthonormal, J N = [R; 0] for the q active normals N
    (GI's n_j = −c_j), lam ≥ 0 their multipliers, x the minimiser subject to the
    active rows. ``u`` is the view of row _U of F, the iterate in u-space.
    """
    m, n = A.shape
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
        # Step 1: slacks of the candidate rows at u (the screen already has
        # those of u = a) and the most violated row, by distance in z-space.
        if not first:
            for i in range(n):
                u[i] = F[_X, i] * F[_RS, i]
            _slacks(A, b, u, F)
        p = _most_violated(A, b, u, F, IW, path, first)
        first = False
        if p == -2:
            _fill_safe(safe, u_out, act_out)
            return STATUS_INFEASIBLE
        if p < 0:
            break  # primal feasible and dual feasible: optimal
        dp = _unit_normal(A, b, p, F)
        if not math.isfinite(dp):
            # |b_p| / ‖A_p‖ beyond 1e308: the row asks for a u float64 cannot hold.
            _fill_safe(safe, u_out, act_out)
            return STATUS_NONFINITE
        if iters == 0:
            # The first row to enter meets J = I and no active row: a special
            # case with the same arithmetic (bit for bit) and a third of the work.
            iters = 1
            t2, ztn = _first_add(F, n, dp)
            if not t2 <= math.inf:
                # NaN (data at float64's limits): never step on it.
                _fill_safe(safe, u_out, act_out)
                return STATUS_NONFINITE
            path += t2 * math.sqrt(ztn)
            IW[_IACT, 0] = p
            F[_LAM, 0] = t2
            IW[_FLAG, p] = 2
            q = 1
            continue
        up = 0.0  # multiplier of the entering row p
        while True:
            iters += 1
            if iters > max_iters:
                _fill_safe(safe, u_out, act_out)
                return STATUS_MAXITER
            ztn, rmax = _directions(F, q, n)
            t1, kdrop = _dual_step(F, q, rmax)
            if ztn <= _DEP_TOL * _DEP_TOL:
                # n_p lies in the span of the active normals: no primal step exists.
                if kdrop < 0:
                    # ... and is a non-positive combination of them: the rows
                    # cannot all hold (GI step 2(c)(i)).
                    _fill_safe(safe, u_out, act_out)
                    return STATUS_INFEASIBLE
                # Dual-only step: drop the blocking row, keep p pending.
                for i in range(q):
                    F[_LAM, i] = max(F[_LAM, i] - t1 * F[_RD, i], 0.0)
                up += t1
                q = _drop(kdrop, q, n, F, IW)
                continue
            # Slack of p at the current x (recomputed, not accumulated, to avoid drift).
            sp = dp
            for k in range(n):
                sp -= F[_CP, k] * F[_X, k]
            t2 = -sp / ztn  # full step: makes row p exactly active
            full = t2 <= t1
            if not full and kdrop < 0:
                # NaN (data at float64's limits): never step on it.
                _fill_safe(safe, u_out, act_out)
                return STATUS_NONFINITE
            # The full step, or a partial one until the blocking multiplier is 0.
            t = t2 if full else t1
            for k in range(n):
                F[_X, k] += t * F[_ZD, k]
            path += t * math.sqrt(ztn)
            for i in range(q):
                F[_LAM, i] = max(F[_LAM, i] - t * F[_RD, i], 0.0)
            up += t
            if not full:
                q = _drop(kdrop, q, n, F, IW)
                continue
            # Add p: one Householder reflection of the null-space rows JT[q:]
            # maps dv2 onto ∓‖dv2‖ e_q (one sqrt instead of n − q − 1 Givens
            # rotations); the new R column is dv1 and that entry.
            _householder(F, q, n, ztn)
            for i in range(q + 1):
                F[_JT + n + i, q] = F[_DV, i]
            IW[_IACT, q] = p
            F[_LAM, q] = up
            IW[_FLAG, p] = 2
            q += 1
            break
    return _finish(a, A, b, safe, u, F, IW, q, path, u_out, act_out)


@njit(cache=True, error_model="numpy")
def solve_into(
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

    The allocation-free core behind :func:`project`, for other jitted code (a
    fused step calls it once per step with workspaces it keeps): it creates no
    array and no array view on the path of an action that is already safe.
    Same method, guarantees and statuses as :func:`project`.

    Args:
        a: Desired command, float64[n].
        A: Constraint rows, float64[m, n] (C-contiguous is fastest).
        b: Bounds, float64[m].
        w: Positive weights, float64[n].
        safe: Command returned when no projection exists, float64[n].
        u_out: Output float64[n]: the projection (or the safe command).
        act_out: Output bool[m]: rows binding at ``u_out``.
        fwork: Float workspace from :func:`work` for at least ``m`` rows and ``n``
            variables (overwritten).
        iwork: Integer workspace from the same :func:`work` call (overwritten).

    Returns:
        The status code (``STATUS_NAMES[status]``).

    Raises:
        ValueError: Wrong shapes or a workspace too small (never on values).
    """
    n = a.shape[0]
    m = b.shape[0]
    if A.shape[0] != m or A.shape[1] != n or w.shape[0] != n or safe.shape[0] != n:
        raise ValueError("project: shapes must be a[n], A[m,n], b[m], w[n], safe[n]")
    if u_out.shape[0] != n or act_out.shape[0] != m:
        raise ValueError("project: output shapes must be u[n], active[m]")
    if (
        fwork.shape[0] < _JT + 2 * n
        or fwork.shape[1] < max(m, n)
        or iwork.shape[0] < 2
        or iwork.shape[1] < max(m, n)
    ):
        raise ValueError("project: workspace too small (use kernels.work(m, n))")
    # Non-finite data or a non-positive weight: nothing below would mean anything.
    if not _inputs_ok(a, w, safe, m):
        _fill_safe(safe, u_out, act_out)
        return STATUS_NONFINITE
    # Fast path: the action is already feasible (the shield does not intervene).
    screen = _screen(A, b, a, fwork, act_out)
    if screen < 0:
        _fill_safe(safe, u_out, act_out)
        return STATUS_NONFINITE
    if screen == 0:
        for i in range(n):
            u_out[i] = a[i]
        return STATUS_OK
    _setup(a, w, A, fwork, iwork)
    return _dual_active_set(a, A, b, safe, fwork, iwork, fwork[_U, :n], u_out, act_out)


_solve_into = solve_into
"""Former name of :func:`solve_into`, kept for existing callers."""


@njit(cache=True, error_model="numpy")
def work(m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Workspaces ``(fwork, iwork)`` for :func:`solve_into` on up to ``m`` rows, ``n`` variables.

    Allocate once (per thread) and reuse; :func:`solve_into` overwrites them.
    Workspaces for a larger ``(m, n)`` serve smaller problems too.
    """
    cols = max(m, n, 1)
    return np.empty((_JT + 2 * n, cols)), np.empty((2, cols), dtype=np.int64)


_work = work


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
    fwork, iwork = work(b.shape[0], a.shape[0])
    return solve_into(a, A, b, w, safe, u, active, fwork, iwork)


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
        fwork, iwork = work(m, n)
        for i in range(lo, hi):
            status[i] = solve_into(a[i], A[i], b[i], w[i], safe[i], u[i], active[i], fwork, iwork)
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
