"""Speed and accuracy of the projection kernel against reference QP solvers.

One problem set shaped like the shield's real workload (7 joint velocities, 26
rows: a joint-velocity box, end-effector speed rows through the site Jacobian,
workspace and keep-out rows) is solved by

* ``solve_into`` called from jitted code, one call per problem with workspaces
  kept across calls: what the fused numba step pays (no Python dispatch),
* ``project`` called from Python once per problem (what a single env pays),
* ``project_into`` likewise, writing into buffers kept across calls,
* ``project_batch`` on ``batch`` problems per call (vectorised envs), on all of
  numba's threads and on one,
* ``quadprog.solve_qp`` (the same Goldfarb–Idnani method, Fortran),
* DAQP (``daqp.solve``, a dual active-set solver in C; Arnström, Bemporad and
  Axehill, IEEE TAC 2022) per problem from Python, and the solve and set-up
  times it reports itself (C clock, no Python),
* OSQP, set up once for the sparsity pattern and then updated per problem,
* proxsuite's dense ProxQP, a fresh solver per problem,

each timed with ``time.perf_counter`` over the whole set, round-robin, median of
a few repetitions after a warm-up pass (JIT, caches); the kernel's constraint
violation and its distance to quadprog's solution are measured on the same
problems. Every figure is reported with its ratio to quadprog in the same run:
on a shared machine the absolute times drift, the ratios much less.

Example:
    >>> from safebot.bench.kernels import run, format_table
    >>> print(format_table(run(problems=500)))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numba
import numpy as np
import numpy.typing as npt

from safebot import kernels

__all__ = ["format_table", "make_problems", "run"]

FloatArray = npt.NDArray[np.float64]

N_JOINTS = 7
N_ROWS = 26
# Franka Panda joint velocity limits (rad/s), the arm the project's assets model.
PANDA_QD_MAX = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61])
# Share of problems whose action violates a row (the shield intervenes).
NEED_PROJECTION = 0.7


def _jacobian(rng: np.random.Generator, cols: int, log10_cond: float) -> FloatArray:
    """A 3 x 7 Jacobian with ``cols`` non-zero columns and a chosen condition number.

    Singular values are spread log-uniformly between ~0.8 m/rad and that over
    10**log10_cond, which reaches the near-singular poses (outstretched arm, wrist
    alignment) where naive iterative projections stall.
    """
    smax = rng.uniform(0.3, 1.0)
    sv = smax * np.logspace(0.0, -log10_cond, 3)
    U, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    V, _ = np.linalg.qr(rng.normal(size=(cols, cols)))
    J = np.zeros((3, N_JOINTS))
    J[:, :cols] = U @ np.diag(sv) @ V[:, :3].T
    return J


def make_problems(problems: int, seed: int = 0) -> dict[str, FloatArray]:
    """Build ``problems`` shield-like projection QPs (n = 7, m = 26).

    Rows (all with ``b >= 0``, so stopping is feasible, docs/design.md rule 2):
    14 joint-velocity box rows ``±u_i <= vmax_i``; 6 end-effector speed rows
    ``±J_k u <= v``; 3 workspace rows ``σ_k J_k u <= γ·distance`` toward the
    nearest wall (parallel to speed rows: a realistic redundancy) and 3 keep-out
    rows ``n_k·J_e u <= γ·clearance`` through an elbow Jacobian ``J_e`` that only
    the first four joints move. Jacobians have condition numbers log-uniform in
    [1, 1e8]. The action is drawn along a random direction and scaled so that a
    ``NEED_PROJECTION`` share of the problems violates some row.

    Returns:
        Dict of stacked arrays ``a[N,7]``, ``A[N,26,7]``, ``b[N,26]``, ``w[N,7]``,
        ``safe[N,7]``.
    """
    rng = np.random.default_rng(seed)
    N = problems
    a = np.empty((N, N_JOINTS))
    A = np.empty((N, N_ROWS, N_JOINTS))
    b = np.empty((N, N_ROWS))
    w = np.empty((N, N_JOINTS))
    eye = np.eye(N_JOINTS)
    for i in range(N):
        vmax = PANDA_QD_MAX * rng.uniform(0.2, 1.0)  # the envelope's current width
        J = _jacobian(rng, N_JOINTS, rng.uniform(0.0, 8.0))
        Je = _jacobian(rng, 4, rng.uniform(0.0, 4.0))
        v = rng.uniform(0.1, 1.0)
        side = rng.choice([-1.0, 1.0], size=3)
        normals = rng.normal(size=(3, 3))
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        gamma = 5.0  # barrier gain: allowed approach speed shrinks with distance
        A[i] = np.vstack([eye, -eye, J, -J, side[:, None] * J, normals @ Je])
        b[i] = np.concatenate(
            [
                vmax,
                vmax,
                np.full(6, v),
                gamma * rng.uniform(0.005, 0.3, size=3),
                gamma * rng.uniform(0.005, 0.3, size=3),
            ]
        )
        # Normalised-command weighting, as the shield uses for [-1, 1] actions.
        w[i] = 1.0 / vmax**2
        direction = vmax * rng.uniform(-1.0, 1.0, size=N_JOINTS)
        Ad = A[i] @ direction
        pos = Ad > 0
        t_max = float(np.min(b[i][pos] / Ad[pos])) if pos.any() else 1.0
        if rng.random() < NEED_PROJECTION:
            a[i] = direction * t_max * rng.uniform(1.05, 4.0)
        else:
            a[i] = direction * t_max * rng.uniform(0.05, 0.95)
    return {"a": a, "A": A, "b": b, "w": w, "safe": np.zeros((N, N_JOINTS))}


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence output written to file descriptor 1 by C extensions."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


class _Contender(NamedTuple):
    """One way of solving the whole set: ``loop()`` solves it, ``answers()`` after.

    ``own()``, where the solver times itself, returns its own figures (µs per
    problem, median over the loops run so far).
    """

    loop: Callable[[], None]
    answers: Callable[[], FloatArray]
    own: Callable[[], dict[str, float]] | None = None


def _split(P: dict[str, FloatArray]) -> list[tuple[FloatArray, ...]]:
    # Per-problem contiguous arrays built up front: the loops time the calls only.
    keys = ("a", "A", "b", "w", "safe")
    return [tuple(P[k][i].copy() for k in keys) for i in range(P["a"].shape[0])]


# Not cached: numba's cache of a function keys on its own file only, so a cached
# driver would keep running the solve_into of an older safebot/kernels.py.
@numba.njit(cache=False)
def _fused_loop(
    a: FloatArray,
    A: FloatArray,
    b: FloatArray,
    w: FloatArray,
    safe: FloatArray,
    U: FloatArray,
    active: npt.NDArray[np.bool_],
    status: npt.NDArray[np.int64],
    fwork: FloatArray,
    iwork: npt.NDArray[np.int64],
) -> None:
    # One solve_into call per problem from jitted code, workspaces kept: what a
    # fused numba step (state -> rows -> projection) pays for its projection.
    for i in range(a.shape[0]):
        status[i] = kernels.solve_into(
            a[i], A[i], b[i], w[i], safe[i], U[i], active[i], fwork, iwork
        )


def _numba_fused(P: dict[str, FloatArray]) -> _Contender:
    N, m, n = P["A"].shape
    keys = ("a", "A", "b", "w", "safe")
    a, A, b, w, safe = (np.ascontiguousarray(P[k]) for k in keys)
    U = np.empty((N, n))
    active = np.zeros((N, m), dtype=np.bool_)
    status = np.empty(N, dtype=np.int64)
    fwork, iwork = kernels.work(m, n)

    def loop() -> None:
        _fused_loop(a, A, b, w, safe, U, active, status, fwork, iwork)

    return _Contender(loop, lambda: U)


def _numba_project(P: dict[str, FloatArray]) -> _Contender:
    args = _split(P)
    project = kernels.project
    out: list[FloatArray] = []

    def loop() -> None:
        out.clear()
        for a, A, b, w, safe in args:
            out.append(project(a, A, b, w, safe)[0])

    return _Contender(loop, lambda: np.stack(out))


def _numba_project_into(P: dict[str, FloatArray]) -> _Contender:
    # project_into writes into preallocated outputs: what a stepping loop that
    # keeps its buffers pays (boxing fresh arrays is most of project's overhead).
    args = _split(P)
    N, m, n = P["A"].shape
    U = np.empty((N, n))
    active = np.empty(m, dtype=np.bool_)
    project_into = kernels.project_into

    def loop() -> None:
        for i, (a, A, b, w, safe) in enumerate(args):
            project_into(a, A, b, w, safe, U[i], active)

    return _Contender(loop, lambda: U)


def _numba_batch(P: dict[str, FloatArray], batch: int, threads: int | None) -> _Contender:
    N = P["a"].shape[0]
    keys = ("a", "A", "b", "w", "safe")
    chunks = [
        tuple(np.ascontiguousarray(P[k][s : s + batch]) for k in keys) for s in range(0, N, batch)
    ]
    project_batch = kernels.project_batch
    out: list[FloatArray] = []

    def loop() -> None:
        saved = numba.get_num_threads()
        if threads is not None:
            numba.set_num_threads(threads)
        try:
            out.clear()
            for a, A, b, w, safe in chunks:
                out.append(project_batch(a, A, b, w, safe)[0])
        finally:
            numba.set_num_threads(saved)

    return _Contender(loop, lambda: np.concatenate(out))


def _quadprog(P: dict[str, FloatArray]) -> _Contender:
    import quadprog

    # quadprog: min ½xᵀGx − aᵀx s.t. Cᵀx >= b, so G = W, a = W a, C = −Aᵀ, b = −b.
    args = [
        (np.diag(w), w * a, np.ascontiguousarray(-A.T), -b)
        for a, A, b, w in zip(P["a"], P["A"], P["b"], P["w"], strict=True)
    ]
    solve_qp = quadprog.solve_qp
    out: list[FloatArray] = []

    def loop() -> None:
        out.clear()
        for G, q, C, lb in args:
            try:
                out.append(solve_qp(G, q, C, lb)[0])
            except ValueError:  # infeasible or numerically singular: no solution
                out.append(np.full(G.shape[0], np.nan))

    return _Contender(loop, lambda: np.stack(out))


def _daqp(P: dict[str, FloatArray]) -> _Contender:
    import daqp

    # DAQP: min ½xᵀHx + fᵀx s.t. A x <= bupper (no lower bounds), default settings.
    args = [
        (np.diag(w), -w * a, np.ascontiguousarray(A), b.copy())
        for a, A, b, w in zip(P["a"], P["A"], P["b"], P["w"], strict=True)
    ]
    N = len(args)
    solve = daqp.solve
    out: list[FloatArray] = []
    own: list[tuple[float, float]] = []  # (set-up, solve) seconds DAQP reports, per loop

    def loop() -> None:
        out.clear()
        setup = solve_s = 0.0
        for H, f, C, ub in args:
            x, _, flag, info = solve(H, f, C, ub)
            out.append(np.asarray(x, dtype=float) if flag == 1 else np.full(H.shape[0], np.nan))
            setup += info["setup_time"]
            solve_s += info["solve_time"]
        own.append((setup, solve_s))

    def own_us() -> dict[str, float]:
        timed = own[1:] or own  # the first loop is the warm-up
        setup = statistics.median(t[0] for t in timed) / N * 1e6
        solve_us = statistics.median(t[1] for t in timed) / N * 1e6
        return {"daqp_own_setup_us": setup, "daqp_own_solve_us": solve_us}

    return _Contender(loop, lambda: np.stack(out), own_us)


def _osqp(P: dict[str, FloatArray]) -> _Contender:
    import osqp
    from scipy import sparse

    _, m, n = P["A"].shape
    # One sparsity pattern for the whole set (union of non-zeros), so the solver is
    # set up once and every problem is an update of P, q, A and u (warm start on).
    pattern = np.any(P["A"] != 0.0, axis=0)
    rows, cols = sparse.csc_matrix(pattern.astype(float)).nonzero()
    # CSC stores column-major: order the (row, col) pairs the way Ax is laid out.
    order = np.lexsort((rows, cols))
    rows, cols = rows[order], cols[order]
    solver = osqp.OSQP()
    solver.setup(
        sparse.csc_matrix(np.diag(P["w"][0])),
        -P["w"][0] * P["a"][0],
        sparse.csc_matrix((P["A"][0][rows, cols], (rows, cols)), shape=(m, n)),
        np.full(m, -np.inf),
        P["b"][0],
        eps_abs=1e-10,
        eps_rel=1e-10,
        polishing=True,
        warm_starting=True,
        verbose=False,
        max_iter=20000,
    )
    updates = [
        {"Px": w, "q": -w * a, "Ax": A[rows, cols], "u": b}
        for a, A, b, w in zip(P["a"], P["A"], P["b"], P["w"], strict=True)
    ]
    out: list[FloatArray] = []

    def loop() -> None:
        out.clear()
        # OSQP's C code prints "Polishing not needed" whatever `verbose` says.
        with _quiet_stdout():
            for upd in updates:
                solver.update(**upd)
                out.append(np.array(solver.solve(raise_error=False).x, dtype=float))

    return _Contender(loop, lambda: np.stack(out))


def _proxsuite(P: dict[str, FloatArray]) -> _Contender:
    import proxsuite

    _, m, n = P["A"].shape
    dense = proxsuite.proxqp.dense
    lower = np.full(m, -1e20)
    args = [
        (np.diag(w), -w * a, np.ascontiguousarray(A), b)
        for a, A, b, w in zip(P["a"], P["A"], P["b"], P["w"], strict=True)
    ]
    out: list[FloatArray] = []

    # A fresh solver per problem: measured faster here than init() or update() on
    # one object (whose update() without a new preconditioner also lost accuracy).
    def loop() -> None:
        out.clear()
        for H, g, C, ub in args:
            qp = dense.QP(n, 0, m)
            qp.settings.eps_abs = 1e-10
            qp.settings.eps_rel = 0.0
            qp.settings.verbose = False
            qp.init(H, g, None, None, C, lower, ub)
            qp.solve()
            out.append(np.array(qp.results.x, dtype=float))

    return _Contender(loop, lambda: np.stack(out))


def _race(contenders: dict[str, _Contender], count: int, repeats: int) -> dict[str, float]:
    """Median µs per problem of each contender, timed round-robin.

    Round-robin rather than one contender after another, so that load from other
    jobs drifting during the run hits every contender alike.
    """
    for c in contenders.values():
        c.loop()  # warm-up: JIT, caches, solver set-up
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, c in contenders.items():
            t0 = time.perf_counter()
            c.loop()
            times[name].append((time.perf_counter() - t0) / count * 1e6)
    return {name: statistics.median(t) for name, t in times.items()}


def _machine() -> dict[str, Any]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        # Other jobs on the machine distort timings (parallel ones most): record it.
        "load_avg_1min": load,
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": _threading_layer(),
        **{
            dist: version(dist)
            for dist in ("numba", "numpy", "quadprog", "daqp", "osqp", "proxsuite")
        },
    }


def _threading_layer() -> str:
    try:
        return str(numba.threading_layer())
    except ValueError:  # no parallel region has run yet
        return "not initialised"


def _max_err(u: FloatArray, ref: FloatArray) -> float:
    ok = np.all(np.isfinite(ref), axis=1)
    return float(np.max(np.abs(u[ok] - ref[ok]))) if ok.any() else float("nan")


# Issue goals for the kernel, as (result key, comparison, bound).
GOALS: dict[str, tuple[str, str, float]] = {
    "fused_vs_quadprog": ("speedup_fused_vs_quadprog", ">=", 10.0),
    "batched_us_per_problem": ("numba_batched_us_per_env", "<=", 1.0),
    "batched_1thread_us_per_problem": ("numba_batched_1thread_us_per_env", "<=", 1.0),
}


def _contenders(P: dict[str, FloatArray], batch: int) -> dict[str, _Contender]:
    return {
        "numba_fused": _numba_fused(P),
        "numba": _numba_project(P),
        "numba_into": _numba_project_into(P),
        "numba_batched": _numba_batch(P, batch, threads=None),
        # One thread: the kernel's cost with dispatch amortised. On a machine
        # shared with other jobs it is also the robust figure: a parallel region
        # waits for its slowest thread, and a thread descheduled by another
        # process stalls the whole batch.
        "numba_batched_1thread": _numba_batch(P, batch, threads=1),
        "quadprog": _quadprog(P),
        "daqp": _daqp(P),
        "osqp": _osqp(P),
        "proxsuite": _proxsuite(P),
    }


def _timings(us: dict[str, float], own: dict[str, float]) -> dict[str, float]:
    """µs per solve of every contender and each one's speedup over quadprog."""
    q = us["quadprog"]
    t = {
        "numba_fused_us": us["numba_fused"],
        "numba_us": us["numba"],
        "numba_into_us": us["numba_into"],
        "numba_batched_us_per_env": us["numba_batched"],
        "numba_batched_1thread_us_per_env": us["numba_batched_1thread"],
        "quadprog_us": q,
        "daqp_us": us["daqp"],
        **own,
        "osqp_us": us["osqp"],
        "proxsuite_us": us["proxsuite"],
    }
    return t | {
        "speedup_fused_vs_quadprog": q / t["numba_fused_us"],
        "speedup_vs_quadprog": q / t["numba_us"],
        "speedup_into_vs_quadprog": q / t["numba_into_us"],
        "speedup_batched_vs_quadprog": q / t["numba_batched_us_per_env"],
        "speedup_batched_1thread_vs_quadprog": q / t["numba_batched_1thread_us_per_env"],
        "speedup_daqp_vs_quadprog": q / t["daqp_us"],
        # DAQP's own clock against the fused call: solver work only on both sides.
        "speedup_fused_vs_daqp_own_solve": t["daqp_own_solve_us"] / t["numba_fused_us"],
        "speedup_fused_vs_daqp_own_total": (t["daqp_own_setup_us"] + t["daqp_own_solve_us"])
        / t["numba_fused_us"],
    }


def _accuracy(P: dict[str, FloatArray], answers: dict[str, FloatArray]) -> dict[str, Any]:
    """The kernel's violation, agreement of its entry points, distances to quadprog."""
    u, u_qp = answers["numba"], answers["quadprog"]
    status = np.array(
        [kernels.project(*(x.copy() for x in args))[2] for args in _split(P)], dtype=np.int64
    )
    violation = np.einsum("kij,kj->ki", P["A"], u) - P["b"]
    projected = np.any(np.einsum("kij,kj->ki", P["A"], P["a"]) > P["b"], axis=1)
    same = ("numba_fused", "numba_into", "numba_batched", "numba_batched_1thread")
    return {
        "share_projected": float(projected.mean()),
        "status_ok": int(np.sum(status == kernels.STATUS_OK)),
        "max_violation": float(np.max(violation)),
        "max_err_vs_quadprog": _max_err(u, u_qp),
        "batched_equals_single": all(np.array_equal(u, answers[k]) for k in same),
        "quadprog_failures": int(np.sum(~np.all(np.isfinite(u_qp), axis=1))),
        "daqp_failures": int(np.sum(~np.all(np.isfinite(answers["daqp"]), axis=1))),
        "daqp_max_violation": float(
            np.nanmax(np.einsum("kij,kj->ki", P["A"], answers["daqp"]) - P["b"])
        ),
        **{
            f"{k}_max_err_vs_quadprog": _max_err(answers[k], u_qp)
            for k in ("daqp", "osqp", "proxsuite")
        },
    }


def _goals(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each issue goal with its bound, the measured figure and whether it is met."""
    out: dict[str, dict[str, Any]] = {}
    for name, (key, op, bound) in GOALS.items():
        value = float(result[key])
        met = value >= bound if op == ">=" else value <= bound
        out[name] = {"key": key, "goal": f"{op} {bound:g}", "measured": value, "met": met}
    return out


def run(
    problems: int = 2000,
    batch: int = 64,
    seed: int = 0,
    json_path: str | Path | None = None,
    repeats: int = 9,
) -> dict[str, Any]:
    """Time the kernel against quadprog, DAQP, OSQP and proxsuite on one problem set.

    Args:
        problems: Number of projection QPs (7 variables, 26 rows each).
        batch: Problems per ``project_batch`` call (the number of vectorised envs).
        seed: Seed of the problem generator.
        json_path: If given, the result is also written there as JSON.
        repeats: Timed repetitions per solver; the median is reported.

    Returns:
        Timings in µs per solve (``numba_fused_us``: ``solve_into`` from jitted
        code; ``numba_us``, ``numba_into_us``: from Python; ``numba_batched_us_per_env``,
        ``numba_batched_1thread_us_per_env``; ``quadprog_us``, ``daqp_us``, DAQP's own
        ``daqp_own_setup_us`` and ``daqp_own_solve_us``, ``osqp_us``, ``proxsuite_us``),
        speedups (``speedup_*``), accuracy (``max_violation`` of the kernel's
        ``A u − b``, ``max_err_vs_quadprog``, the other solvers' errors), the share of
        problems projected, ``goals`` (each issue goal: bound, figure, met),
        ``problems``, ``batch`` and ``machine``.

    Raises:
        ValueError: ``problems`` or ``batch`` below 1.
    """
    if problems < 1 or batch < 1:
        raise ValueError(f"problems and batch must be >= 1, got {problems} and {batch}")
    P = make_problems(problems, seed)
    kernels.warmup()
    contenders = _contenders(P, batch)
    us = _race(contenders, problems, repeats)
    own = {k: v for c in contenders.values() if c.own is not None for k, v in c.own().items()}
    answers = {name: c.answers() for name, c in contenders.items()}
    result: dict[str, Any] = {
        "problems": problems,
        "batch": batch,
        "seed": seed,
        "repeats": repeats,
        "n": N_JOINTS,
        "m": N_ROWS,
        **_timings(us, own),
        **_accuracy(P, answers),
        "machine": _machine(),
    }
    result["goals"] = _goals(result)
    if json_path is not None:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def format_table(result: dict[str, Any]) -> str:
    """Render a :func:`run` result as a plain-text table."""
    q = result["quadprog_us"]
    b = result["batch"]
    rows = [
        ("numba solve_into (from jitted code: fused path)", result["numba_fused_us"]),
        ("numba project (from Python)", result["numba_us"]),
        ("numba project_into (from Python, own buffers)", result["numba_into_us"]),
        (f"numba project_batch (N={b})", result["numba_batched_us_per_env"]),
        (f"numba project_batch (N={b}, 1 thread)", result["numba_batched_1thread_us_per_env"]),
        ("quadprog solve_qp", q),
        ("DAQP daqp.solve (from Python)", result["daqp_us"]),
        ("DAQP, own solve time", result["daqp_own_solve_us"]),
        (
            "DAQP, own set-up + solve time",
            result["daqp_own_setup_us"] + result["daqp_own_solve_us"],
        ),
        ("OSQP (setup once, update)", result["osqp_us"]),
        ("proxsuite dense (new solver per problem)", result["proxsuite_us"]),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [
        f"projection QP: {result['problems']} problems, n={result['n']}, m={result['m']}, "
        f"{100 * result['share_projected']:.0f}% projected",
        f"{'solver':<{width}}  {'µs/solve':>9}  {'vs quadprog':>11}",
    ]
    lines += [f"{name:<{width}}  {us:9.2f}  {q / us:10.1f}x" for name, us in rows]
    lines.append(
        f"kernel max violation {result['max_violation']:.2e}, "
        f"max |u − u_quadprog| {result['max_err_vs_quadprog']:.2e} "
        f"(DAQP {result['daqp_max_err_vs_quadprog']:.2e})"
    )
    lines += [
        f"goal {name}: {g['goal']}, measured {g['measured']:.2f}: {'met' if g['met'] else 'NOT met'}"
        for name, g in result["goals"].items()
    ]
    return "\n".join(lines)
