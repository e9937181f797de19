"""Property tests of the projection kernel (safebot.kernels).

Every optimal answer is checked three independent ways: feasibility, a KKT
certificate (non-negative multipliers found by NNLS on the binding rows) and
agreement with quadprog / OSQP. Problems are generated from a hypothesis-drawn
seed and shape so that failures shrink to a small, reproducible case.
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.pool
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import nnls

from safebot import kernels
from safebot.kernels import (
    STATUS_INFEASIBLE,
    STATUS_NAMES,
    STATUS_NONFINITE,
    STATUS_OK,
    Projection,
    project,
    project_batch,
    project_into,
    solve,
)

quadprog = pytest.importorskip("quadprog")
osqp = pytest.importorskip("osqp")

FEAS_TOL = 1e-9  # the kernel's promise, relative to each row's magnitude
MATCH_TOL = 1e-7  # agreement with reference solvers, relative to the problem scale

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> None:
    kernels.warmup()


@dataclass(frozen=True)
class Problem:
    a: np.ndarray
    A: np.ndarray
    b: np.ndarray
    w: np.ndarray

    @property
    def n(self) -> int:
        return self.a.shape[0]

    def run(self, safe: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, int]:
        s = np.zeros(self.n) if safe is None else safe
        return project(self.a, self.A, self.b, self.w, s)


KINDS = ("random", "degenerate", "duplicate", "jacobian")


def _jacobian(rng: np.random.Generator, n: int, log10_cond: float) -> np.ndarray:
    """A 3 x n Jacobian-like matrix with singular values down to 10**-log10_cond."""
    r = min(3, n)
    U, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    V, _ = np.linalg.qr(rng.normal(size=(n, n)))
    sv = np.logspace(0.0, -log10_cond, r)
    return U[:, :r] @ np.diag(sv) @ V[:, :r].T


def make_problem(
    kind: str, n: int, m: int, seed: int, log_scale: float, row_scales: bool, weighted: bool
) -> Problem:
    """A feasible projection problem of the given kind (the set always contains x0)."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=n)
    if kind == "random":
        A = rng.normal(size=(m, n))
        # About a third of the rows pass exactly through x0: degenerate vertices.
        slack = rng.exponential(size=m) * (rng.random(m) > 0.3)
        b = A @ x0 + slack
    elif kind == "degenerate":
        # Every row passes through x0: up to 64 rows meeting in one point in R^n.
        A = rng.normal(size=(m, n))
        b = A @ x0
    elif kind == "duplicate":
        k = max(1, m // 3)
        base = rng.normal(size=(k, n))
        base_b = base @ x0 + rng.exponential(size=k) * (rng.random(k) > 0.5)
        idx = rng.integers(0, k, size=m)
        mult = np.where(rng.random(m) < 0.5, 1.0, rng.uniform(0.1, 10.0, size=m))
        A = base[idx] * mult[:, None]  # exact duplicates and positive multiples
        b = base_b[idx] * mult
        near = rng.random(m) < 0.2  # and a few nearly parallel rows, still through x0's set
        A[near] += 1e-9 * rng.normal(size=(int(near.sum()), n))
        b[near] = A[near] @ x0 + np.maximum(b[near] - (A[near] @ x0), 0.0)
    elif kind == "jacobian":
        J = _jacobian(rng, n, rng.uniform(0.0, 8.0))
        v = rng.uniform(0.05, 1.0, size=n)
        normals = rng.normal(size=(2, 3))
        A = np.vstack([np.eye(n), -np.eye(n), J, -J, normals @ J])
        b = np.concatenate([v, v, np.full(6, rng.uniform(0.1, 1.0)), rng.uniform(0, 0.5, 2)])
        x0 = np.zeros(n)  # stopping is always feasible (docs/design.md, rule 2)
        A, b = A[: max(m, 1)], b[: max(m, 1)]
    else:  # pragma: no cover - guarded by KINDS
        raise ValueError(kind)
    spread = 10.0 ** rng.uniform(-1.0, 1.0)
    a = x0 + spread * rng.normal(size=n) * (rng.random() < 0.9)
    scale = 10.0**log_scale
    a, b, x0 = a * scale, b * scale, x0 * scale
    if row_scales:
        rho = 10.0 ** rng.uniform(-6.0, 6.0, size=A.shape[0])
        A, b = A * rho[:, None], b * rho
    w = 10.0 ** rng.uniform(-1.0, 1.0, size=n) if weighted else np.ones(n)
    return Problem(a, np.ascontiguousarray(A), b, w)


def problems_with(n: st.SearchStrategy[int]) -> st.SearchStrategy[Problem]:
    return st.builds(
        make_problem,
        kind=st.sampled_from(KINDS),
        n=n,
        m=st.integers(0, 64),
        seed=st.integers(0, 2**32 - 1),
        log_scale=st.floats(-6.0, 6.0),
        row_scales=st.booleans(),
        weighted=st.booleans(),
    )


problems = problems_with(st.integers(1, 12))


# --- independent checkers ---------------------------------------------------------


def row_scale(P: Problem, u: np.ndarray) -> np.ndarray:
    """Per-row magnitude against which a violation is judged."""
    mag = np.linalg.norm(P.A, axis=1) * (np.linalg.norm(u) + np.linalg.norm(P.a))
    return np.abs(P.b) + mag + 1e-300


def violation(P: Problem, u: np.ndarray) -> float:
    """Largest relative violation of A u <= b (<= 0 when feasible)."""
    if P.A.shape[0] == 0:
        return 0.0
    return float(np.max((P.A @ u - P.b) / row_scale(P, u)))


def assert_feasible(P: Problem, u: np.ndarray) -> None:
    assert np.all(np.isfinite(u))
    v = violation(P, u)
    assert v <= FEAS_TOL, f"A u <= b violated by {v:.3e} (relative)"


def assert_kkt(P: Problem, u: np.ndarray) -> None:
    """u is optimal iff W(u − a) = −A_Bᵀ λ with λ >= 0 on the binding rows B."""
    g = P.w * (u - P.a)
    gnorm = float(np.linalg.norm(g))
    if gnorm == 0.0:
        return  # u = a: optimal when feasible
    B = (P.b - P.A @ u) <= 1e-8 * row_scale(P, u)
    assert B.any(), "u moved away from a but no row binds"
    AB = P.A[B]
    # Column-normalise so NNLS sees unit rows whatever their physical scale.
    nrm = np.linalg.norm(AB, axis=1)
    _, resid = nnls((AB / nrm[:, None]).T, -g, maxiter=50 * AB.shape[0] + 100)
    # Relative to the gradient, plus the rounding floor of g itself (u and a are
    # only known to ~1e-16 relative, which matters when the correction is tiny).
    floor = 1e-11 * float(np.linalg.norm(P.w * (np.abs(P.a) + np.abs(u))))
    assert resid <= 1e-9 * gnorm + floor, (
        f"no non-negative multipliers: residual {resid:.3e} vs gradient {gnorm:.3e}"
    )


def certified(P: Problem, x: np.ndarray) -> bool:
    """Whether a reference solver's answer passes the same checks as ours.

    "Solved" by OSQP's absolute criteria can be 1e-5 off on badly scaled rows,
    and quadprog (no row scaling) can stop at a suboptimal point on rows whose
    norms differ by 1e11 (seen here): a reference counts only where it carries
    its own feasibility and KKT certificate.
    """
    try:
        assert_feasible(P, x)
        assert_kkt(P, x)
    except AssertionError:
        return False
    return True


class GuardedQuadprog:
    """quadprog in a worker process with a timeout.

    quadprog's Fortran loop can cycle forever on degenerate problems (duplicated
    rows meeting at a vertex: found by these tests); such a problem simply has no
    quadprog reference.
    """

    def __init__(self, timeout: float = 2.0) -> None:
        self.timeout = timeout
        self._pool: multiprocessing.pool.Pool | None = None

    def __call__(self, P: Problem) -> np.ndarray | None:
        if P.A.shape[0] == 0:
            return P.a.copy()
        if self._pool is None:
            self._pool = multiprocessing.get_context("spawn").Pool(1)
        args = (np.diag(P.w), P.w * P.a, np.ascontiguousarray(-P.A.T), -P.b)
        try:
            x = self._pool.apply_async(quadprog.solve_qp, args).get(self.timeout)[0]
        except ValueError:  # quadprog: infeasible or singular
            return None
        except multiprocessing.TimeoutError:
            self.close()
            return None
        return x if certified(P, x) else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None


@pytest.fixture(scope="module")
def reference_quadprog() -> Iterator[GuardedQuadprog]:
    guarded = GuardedQuadprog()
    yield guarded
    guarded.close()


def reference_osqp(P: Problem) -> np.ndarray | None:
    from scipy import sparse

    if P.A.shape[0] == 0:
        return P.a.copy()
    # Unit rows (an equivalent problem) help OSQP's first-order iterations on
    # rows whose scales differ by 1e12.
    nrm = np.linalg.norm(P.A, axis=1)
    nrm[nrm == 0.0] = 1.0
    solver = osqp.OSQP()
    solver.setup(
        sparse.csc_matrix(np.diag(P.w)),
        -P.w * P.a,
        sparse.csc_matrix(P.A / nrm[:, None]),
        np.full(P.A.shape[0], -np.inf),
        P.b / nrm,
        eps_abs=1e-10,
        eps_rel=1e-10,
        polishing=True,
        max_iter=100_000,
        verbose=False,
    )
    res = solver.solve(raise_error=False)
    if res.info.status_val != 1 or res.info.status_polish != 1:
        return None  # not solved, or polishing (the exact active-set step) failed
    x = np.asarray(res.x, dtype=float)
    return x if certified(P, x) else None


def match_scale(P: Problem, ref: np.ndarray) -> float:
    return float(max(np.max(np.abs(P.a)), np.max(np.abs(ref)), 1e-300))


# --- properties -------------------------------------------------------------------


@PROPS
@given(P=problems)
def test_solution_is_feasible_optimal_and_matches_quadprog(
    P: Problem, reference_quadprog: GuardedQuadprog
) -> None:
    u, active, status = P.run()
    assert status == STATUS_OK, STATUS_NAMES[status]
    assert u.dtype == np.float64 and active.dtype == np.bool_
    assert u.shape == (P.n,) and active.shape == (P.A.shape[0],)
    assert_feasible(P, u)
    assert_kkt(P, u)
    # Rows reported active are binding at u.
    if active.any():
        slack = (P.b - P.A @ u) / row_scale(P, u)
        assert np.all(slack[active] <= 1e-8)
    ref = reference_quadprog(P)
    if ref is not None:
        err = float(np.max(np.abs(u - ref))) / match_scale(P, ref)
        assert err <= MATCH_TOL, f"differs from quadprog by {err:.2e} (relative)"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(P=problems)
def test_matches_osqp(P: Problem) -> None:
    u, _, status = P.run()
    assert status == STATUS_OK
    ref = reference_osqp(P)
    if ref is not None:
        err = float(np.max(np.abs(u - ref))) / match_scale(P, ref)
        assert err <= MATCH_TOL, f"differs from OSQP by {err:.2e} (relative)"


@PROPS
@given(P=problems, seed=st.integers(0, 2**32 - 1))
def test_feasible_action_is_returned_bit_for_bit(P: Problem, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Strictly inside: b is A a plus a margin.
    Aa = P.A @ P.a
    b_in = Aa + np.abs(Aa) * 1e-6 + rng.exponential(size=P.A.shape[0]) * 10.0 ** rng.uniform(-9, 3)
    u, active, status = project(P.a, P.A, b_in, P.w, np.zeros(P.n))
    assert status == STATUS_OK
    assert u.tobytes() == P.a.tobytes()
    assert u is not P.a
    assert not active.any()


@PROPS
@given(
    n=st.integers(1, 12),
    m=st.integers(1, 64),
    seed=st.integers(0, 2**32 - 1),
    weighted=st.booleans(),
)
def test_action_on_the_boundary_is_returned_bit_for_bit(
    n: int, m: int, seed: int, weighted: bool
) -> None:
    # Small integers make A a and b = A a exact in float64: a sits exactly on
    # the binding rows, and must come back untouched with those rows active.
    rng = np.random.default_rng(seed)
    A = rng.integers(-9, 10, size=(m, n)).astype(float)
    a = rng.integers(-99, 100, size=n).astype(float)
    binding = rng.random(m) < 0.5
    b = A @ a + np.where(binding, 0.0, rng.integers(1, 50, size=m))
    w = 10.0 ** rng.uniform(-1.0, 1.0, size=n) if weighted else np.ones(n)
    u, active, status = project(a, A, b, w, np.zeros(n))
    assert status == STATUS_OK
    assert u.tobytes() == a.tobytes()
    nonzero = np.any(A != 0.0, axis=1)
    assert np.array_equal(active[nonzero], binding[nonzero])


@PROPS
@given(P=problems, seed=st.integers(0, 2**32 - 1))
def test_projection_is_non_expansive(P: Problem, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a2 = P.a + rng.normal(size=P.n) * 10.0 ** rng.uniform(-3, 1) * (np.max(np.abs(P.a)) + 1.0)
    u1, _, s1 = P.run()
    u2, _, s2 = project(a2, P.A, P.b, P.w, np.zeros(P.n))
    assert s1 == s2 == STATUS_OK
    sw = np.sqrt(P.w)
    lhs = np.linalg.norm(sw * (u1 - u2))
    rhs = np.linalg.norm(sw * (P.a - a2))
    tol = 1e-9 * (np.linalg.norm(sw * P.a) + np.linalg.norm(sw * a2) + np.linalg.norm(sw * u1))
    assert lhs <= rhs + tol, f"‖P(a1) − P(a2)‖_W = {lhs:.6e} > ‖a1 − a2‖_W = {rhs:.6e}"
    # Projection is idempotent: P(P(a)) = P(a).
    u11, _, _ = project(u1, P.A, P.b, P.w, np.zeros(P.n))
    assert np.max(np.abs(u11 - u1)) <= 1e-9 * match_scale(P, u1)


@PROPS
@given(
    P=problems,
    seed=st.integers(0, 2**32 - 1),
    how=st.sampled_from(["opposite_pair", "farkas"]),
    gap=st.floats(1e-3, 1e3),
)
def test_infeasible_sets_return_the_safe_command(
    P: Problem, seed: int, how: str, gap: float
) -> None:
    rng = np.random.default_rng(seed)
    n = P.n
    if how == "opposite_pair":
        # x_i <= −gap/2 and −x_i <= −gap/2, i.e. x_i >= gap/2.
        i = int(rng.integers(n))
        e = np.zeros(n)
        e[i] = 1.0
        extra_A = np.vstack([e, -e])
        extra_b = np.array([-gap / 2, -gap / 2])
    else:
        # Farkas certificate y >= 0 with yᵀA = 0, yᵀb < 0: the last row is minus a
        # positive combination of the others with a bound below theirs.
        k = int(rng.integers(1, 5))
        rows = rng.normal(size=(k, n))
        rb = rng.normal(size=k)
        c = rng.uniform(0.1, 2.0, size=k)
        extra_A = np.vstack([rows, -(c @ rows)])
        extra_b = np.concatenate([rb, [-(c @ rb) - gap]])
    A = np.vstack([P.A, extra_A])
    b = np.concatenate([P.b, extra_b])
    order = rng.permutation(A.shape[0])
    A, b = np.ascontiguousarray(A[order]), b[order]
    safe = rng.normal(size=n)
    u, active, status = project(P.a, A, b, P.w, safe)
    assert status == STATUS_INFEASIBLE, STATUS_NAMES[status]
    assert u.tobytes() == safe.tobytes()
    assert not active.any()


@PROPS
@given(
    P=problems,
    where=st.sampled_from(["a", "A", "b", "w", "w_nonpositive"]),
    value=st.sampled_from([math.nan, math.inf, -math.inf]),
    seed=st.integers(0, 2**32 - 1),
)
def test_non_finite_input_returns_the_safe_command(
    P: Problem, where: str, value: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    a, A, b, w = P.a.copy(), P.A.copy(), P.b.copy(), P.w.copy()
    if where == "a":
        a[rng.integers(a.size)] = value
    elif where == "A":
        if A.size == 0:
            A = np.zeros((1, P.n))
            b = np.ones(1)
        A.flat[rng.integers(A.size)] = value
    elif where == "b":
        if b.size == 0:
            A = np.zeros((1, P.n))
            b = np.ones(1)
        b[rng.integers(b.size)] = value
    elif where == "w":
        w[rng.integers(w.size)] = value
    else:
        w[rng.integers(w.size)] = 0.0 if math.isnan(value) else -1.0
    safe = rng.normal(size=P.n)
    u, active, status = project(a, A, b, w, safe)
    assert status == STATUS_NONFINITE
    assert u.tobytes() == safe.tobytes()
    assert not active.any()


@PROPS
@given(
    n=st.integers(1, 6),
    m=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    exp_range=st.integers(0, 320),
)
def test_extreme_magnitudes_never_raise_or_lie(n: int, m: int, seed: int, exp_range: int) -> None:
    check_extreme(n, m, seed, exp_range)


@pytest.mark.parametrize(("n", "m", "seed", "exp_range"), [(5, 8, 25945, 21), (2, 8, 25945, 18)])
def test_extreme_magnitudes_found_by_hypothesis(n: int, m: int, seed: int, exp_range: int) -> None:
    # A primal direction computed as n_p − J1ᵀ dv1 (cheaper with few active rows)
    # cancels when n_p is nearly in the active span: these lost 1e-9 of
    # feasibility (the first) and hit the iteration guard (the second).
    check_extreme(n, m, seed, exp_range)


def check_extreme(n: int, m: int, seed: int, exp_range: int) -> None:
    # Entries of a, A, b, w spread over 10**±exp_range, up to float64's limits
    # (denormals, products that overflow): the kernel may refuse (NONFINITE,
    # INFEASIBLE) but never raises, and an OK answer is finite. Up to 1e±100 it
    # is also feasible; beyond, sqrt(w)·a itself can underflow to denormals and
    # no float64 method (quadprog included) can promise 1e-9.
    rng = np.random.default_rng(seed)

    def spread(*shape: int) -> np.ndarray:
        e = rng.uniform(-exp_range, exp_range, size=shape).clip(-320, 300)
        return rng.choice([-1.0, 1.0], size=shape) * 10.0**e

    a, A, b = spread(n), spread(m, n), np.abs(spread(m))
    b[rng.random(m) < 0.3] *= -1.0
    w = np.abs(spread(n)).clip(1e-300, 1e300)
    with np.errstate(all="ignore"):
        u, active, status = project(a, A, b, w, np.zeros(n))
        assert status in (STATUS_OK, STATUS_INFEASIBLE, STATUS_NONFINITE)
        if status != STATUS_OK:
            assert not u.any() and not active.any()
            return
        assert np.all(np.isfinite(u))
        if exp_range > 100:
            return
        # Judge each row divided by its largest entry, so the check itself stays
        # finite, against its own magnitudes and the problem's scale in the
        # W-norm it is posed in (rounding of orthogonal steps in √w·u lands on
        # every component, so spreads of 1e±300 cannot be judged componentwise).
        big = np.abs(A).max(axis=1)
        keep = big > 0.0
        An, bn = A[keep] / big[keep, None], b[keep] / big[keep]
        sw = np.sqrt(w)
        zscale = np.max(np.abs(sw * u)) + np.max(np.abs(sw * a))
        scale = np.abs(bn) + np.abs(An) @ np.abs(u) + (np.abs(An) @ (1.0 / sw)) * zscale
        assert np.all(An @ u - bn <= 1e-9 * scale + 1e-300)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.lists(problems_with(st.just(7)), min_size=1, max_size=12),
    bad=st.lists(st.sampled_from(["none", "nan", "infeasible"]), min_size=12, max_size=12),
)
def test_project_batch_equals_project(batch: list[Problem], bad: list[str]) -> None:
    n = 7
    m = max(P.A.shape[0] for P in batch)
    N = len(batch)
    a = np.zeros((N, n))
    A = np.zeros((N, m, n))
    b = np.ones((N, m))  # padding: zero rows with b = +1 are inert
    w = np.zeros((N, n))
    for i, P in enumerate(batch):
        a[i], w[i] = P.a, P.w
        A[i, : P.A.shape[0]], b[i, : P.A.shape[0]] = P.A, P.b
        if bad[i] == "nan":
            a[i, 0] = math.nan
        elif bad[i] == "infeasible" and m > 0:
            A[i, -1], b[i, -1] = 0.0, -1.0  # 0·u <= −1
    safe = np.arange(N * n, dtype=float).reshape(N, n)
    U, ACT, ST = project_batch(a, A, b, w, safe)
    assert U.shape == (N, n) and ACT.shape == (N, m) and ST.shape == (N,)
    for i, P in enumerate(batch):
        u, act, st_ = project(a[i], A[i], b[i], w[i], safe[i])
        assert ST[i] == st_
        assert U[i].tobytes() == u.tobytes()
        assert np.array_equal(ACT[i], act)
        if st_ == STATUS_OK:
            # Padding changes nothing: same answer as the unpadded problem.
            u0, act0, _ = P.run()
            assert u.tobytes() == u0.tobytes()
            assert not act[P.A.shape[0] :].any()
            assert np.array_equal(act[: P.A.shape[0]], act0)


# --- fixed cases ------------------------------------------------------------------


def test_box_projection_is_clipping() -> None:
    n = 7
    A = np.vstack([np.eye(n), -np.eye(n)])
    v = np.linspace(0.5, 2.0, n)
    b = np.concatenate([v, v])
    a = np.array([3.0, -3.0, 0.1, -0.2, 10.0, -10.0, 0.0])
    u, active, status = project(a, A, b, np.full(n, 2.0), np.zeros(n))
    assert status == STATUS_OK
    np.testing.assert_allclose(u, np.clip(a, -v, v), rtol=1e-15, atol=0.0)
    upper = a > v
    lower = a < -v
    assert active.tolist() == upper.tolist() + lower.tolist()
    assert upper.sum() == 2 and lower.sum() == 2


def test_weighted_projection_onto_a_halfspace() -> None:
    # min ½(w1 (u1−2)² + w2 u2²) s.t. u1 + u2 <= 0  ->  u = a − W⁻¹ c λ.
    w = np.array([1.0, 3.0])
    p = solve([2.0, 0.0], [[1.0, 1.0]], [0.0], w=w)
    lam = 2.0 / (1 / w[0] + 1 / w[1])
    np.testing.assert_allclose(p.action, [2.0 - lam / w[0], -lam / w[1]], rtol=1e-15)
    assert p.status == STATUS_OK and p.ok and p.active.tolist() == [True]
    assert p.correction == pytest.approx(np.sqrt(np.sum(w * (p.action - [2.0, 0.0]) ** 2)))


def test_duplicated_and_opposite_rows_at_a_vertex() -> None:
    # The same binding row three times plus its negation (an equality in disguise).
    A = np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0], [-1.0, -1.0], [0.0, 1.0]])
    b = np.array([1.0, 1.0, 2.0, -1.0, 0.25])
    u, active, status = project(np.array([3.0, 3.0]), A, b, np.ones(2), np.zeros(2))
    assert status == STATUS_OK
    np.testing.assert_allclose(u, [0.75, 0.25], atol=1e-15)
    assert active.all()


def test_contradictory_bounds_are_infeasible() -> None:
    u, active, status = project(
        np.array([0.3]), np.array([[1.0], [-1.0]]), np.array([-1.0, -1.0]), np.ones(1), np.ones(1)
    )
    assert status == STATUS_INFEASIBLE and u.tolist() == [1.0] and not active.any()


def test_zero_rows() -> None:
    a = np.array([2.0, 0.0])
    A = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    u, active, status = project(a, A, np.array([0.0, 1.0, 5.0]), np.ones(2), np.zeros(2))
    assert status == STATUS_OK and u.tolist() == [1.0, 0.0]
    assert active.tolist() == [False, True, False]
    _, _, status = project(a, A, np.array([-1e-300, 1.0, 5.0]), np.ones(2), np.zeros(2))
    assert status == STATUS_INFEASIBLE


def test_no_rows_returns_a() -> None:
    a = np.array([1.5, -2.0])
    u, active, status = project(a, np.zeros((0, 2)), np.zeros(0), np.ones(2), np.zeros(2))
    assert status == STATUS_OK and u.tobytes() == a.tobytes() and active.shape == (0,)


def test_non_finite_safe_command_falls_back_to_zeros() -> None:
    u, _, status = project(
        np.array([math.nan]), np.ones((1, 1)), np.ones(1), np.ones(1), np.array([math.inf])
    )
    assert status == STATUS_NONFINITE and u.tolist() == [0.0]


def test_wrong_shapes_raise() -> None:
    with pytest.raises(ValueError, match="shapes"):
        project(np.zeros(2), np.zeros((3, 3)), np.zeros(3), np.ones(2), np.zeros(2))


def test_project_into_writes_the_same_answer() -> None:
    P = make_problem("jacobian", 7, 26, 3, 0.0, False, True)
    u, active, status = P.run()
    u2 = np.full(7, np.nan)
    act2 = np.ones(P.A.shape[0], dtype=np.bool_)
    assert project_into(P.a, P.A, P.b, P.w, np.zeros(7), u2, act2) == status
    assert u2.tobytes() == u.tobytes() and np.array_equal(act2, active)


def test_solve_converts_inputs_and_reports() -> None:
    p = solve([[3.0], [0.0]], [[1, 0]], [1], safe=[0, 0])
    assert isinstance(p, Projection)
    assert p.action.tolist() == [1.0, 0.0] and p.correction == 2.0
    assert solve([0.0], [[1.0]], [1.0]).correction == 0.0
    bad = solve([math.nan], [[1.0]], [1.0])
    assert bad.status == STATUS_NONFINITE and not bad.ok
    assert STATUS_NAMES[bad.status] == "nonfinite"


def test_checkers_reject_wrong_answers() -> None:
    # The independent checkers used above must be able to fail.
    P = Problem(np.array([2.0, 0.0]), np.array([[1.0, 0.0]]), np.array([1.0]), np.ones(2))
    right = np.array([1.0, 0.0])
    assert_feasible(P, right)
    assert_kkt(P, right)
    with pytest.raises(AssertionError):
        assert_feasible(P, np.array([1.1, 0.0]))
    with pytest.raises(AssertionError):
        assert_kkt(P, np.array([0.5, 0.0]))  # feasible, no row binds, yet u != a
    with pytest.raises(AssertionError):
        assert_kkt(P, np.array([1.0, 0.1]))  # binds, but the gradient is not normal to it
    with pytest.raises(AssertionError):
        assert_kkt(P, np.array([1.0, 0.0]) + np.array([0.0, 1e-5]))


def test_degenerate_problem_on_which_quadprog_cycles() -> None:
    # Duplicated rows meeting at a vertex: quadprog 0.1.x loops forever here
    # (found by the property tests above); the dual step's drop/replace must not.
    P = make_problem("duplicate", 9, 43, 3640812147, 2.1266183342526794, False, True)
    u, _, status = P.run()
    assert status == STATUS_OK
    assert_feasible(P, u)
    assert_kkt(P, u)


# --- the in-numba entry point -----------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(problems, min_size=1, max_size=8))
def test_solve_into_reuses_one_workspace(batch: list[Problem]) -> None:
    # One workspace for the largest size serves every problem in turn, with no
    # state carried from one solve to the next: the answers are project()'s, bit for bit.
    fwork, iwork = kernels.work(64, 12)
    for P in batch:
        u = np.full(P.n, np.nan)
        act = np.ones(P.A.shape[0], dtype=np.bool_)
        status = kernels.solve_into(P.a, P.A, P.b, P.w, np.zeros(P.n), u, act, fwork, iwork)
        u0, act0, status0 = P.run()
        assert status == status0
        assert u.tobytes() == u0.tobytes() and np.array_equal(act, act0)


def test_solve_into_refuses_a_small_workspace() -> None:
    P = make_problem("jacobian", 7, 26, 3, 0.0, False, True)
    u, act = np.empty(7), np.empty(P.A.shape[0], dtype=np.bool_)
    for m, n in ((P.A.shape[0] - 1, 7), (P.A.shape[0], 6)):
        fwork, iwork = kernels.work(m, n)
        with pytest.raises(ValueError, match="workspace too small"):
            kernels.solve_into(P.a, P.A, P.b, P.w, np.zeros(7), u, act, fwork, iwork)


def test_former_names_still_work() -> None:
    # Callers written against _solve_into / _work keep running.
    assert kernels._solve_into is kernels.solve_into and kernels._work is kernels.work
