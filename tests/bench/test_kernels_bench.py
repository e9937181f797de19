"""The kernel benchmark (safebot.bench.kernels): its answers, its bookkeeping, its table.

Timings are not asserted (they belong to the benchmark's JSON, not to tests);
what is checked is that every contender solves the same problems, that the
in-numba driver gives the kernel's own answers, and that goals are judged right.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from safebot import kernels
from safebot.bench import kernels as kb

pytest.importorskip("quadprog")
pytest.importorskip("daqp")
pytest.importorskip("osqp")
pytest.importorskip("proxsuite")


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("bench") / "kernels.json"
    res = kb.run(problems=40, batch=16, seed=3, json_path=path, repeats=1)
    assert json.loads(Path(path).read_text()) == json.loads(json.dumps(res))
    return res


def test_every_contender_is_timed_and_compared(result: dict) -> None:
    for key in (
        "numba_fused_us",
        "numba_us",
        "numba_into_us",
        "numba_batched_us_per_env",
        "numba_batched_1thread_us_per_env",
        "quadprog_us",
        "daqp_us",
        "daqp_own_solve_us",
        "daqp_own_setup_us",
        "osqp_us",
        "proxsuite_us",
    ):
        assert result[key] > 0.0, key
    assert result["speedup_fused_vs_quadprog"] == pytest.approx(
        result["quadprog_us"] / result["numba_fused_us"]
    )
    assert result["speedup_fused_vs_daqp_own_solve"] == pytest.approx(
        result["daqp_own_solve_us"] / result["numba_fused_us"]
    )
    # DAQP's own clock excludes its Python call: it must be below the call.
    assert result["daqp_own_solve_us"] < result["daqp_us"]


def test_all_entry_points_agree_and_match_the_references(result: dict) -> None:
    assert result["status_ok"] == result["problems"] == 40
    assert result["batched_equals_single"] is True
    assert result["max_violation"] <= 1e-9
    assert result["max_err_vs_quadprog"] <= 1e-9
    assert result["daqp_failures"] == 0
    assert result["daqp_max_err_vs_quadprog"] <= 1e-6
    assert 0.0 < result["share_projected"] < 1.0
    assert result["machine"]["daqp"] != "not installed"


def test_goals_are_judged_from_the_figures(result: dict) -> None:
    goals = result["goals"]
    assert set(goals) == set(kb.GOALS)
    for name, (key, op, bound) in kb.GOALS.items():
        g = goals[name]
        assert g["measured"] == result[key]
        assert g["met"] == (g["measured"] >= bound if op == ">=" else g["measured"] <= bound)
    # A made-up result where each goal fails, then passes.
    fake = {key: 0.5 if op == ">=" else 2.0 for key, op, _ in kb.GOALS.values()}
    assert not any(g["met"] for g in kb._goals(fake).values())
    fake = {key: 20.0 if op == ">=" else 0.5 for key, op, _ in kb.GOALS.values()}
    assert all(g["met"] for g in kb._goals(fake).values())


def test_table_lists_every_solver_and_goal(result: dict) -> None:
    table = kb.format_table(result)
    for needle in ("solve_into", "quadprog", "DAQP", "own solve", "OSQP", "proxsuite", "goal"):
        assert needle in table
    assert f"{result['quadprog_us'] / result['numba_fused_us']:.1f}x" in table


def test_fused_driver_gives_the_kernels_answers() -> None:
    P = kb.make_problems(30, seed=5)
    N, m, n = P["A"].shape
    U = np.empty((N, n))
    act = np.zeros((N, m), dtype=np.bool_)
    st = np.full(N, -1, dtype=np.int64)
    fwork, iwork = kernels.work(m, n)
    kb._fused_loop(P["a"], P["A"], P["b"], P["w"], P["safe"], U, act, st, fwork, iwork)
    for i in range(N):
        u, a_i, s_i = kernels.project(P["a"][i], P["A"][i], P["b"][i], P["w"][i], P["safe"][i])
        assert st[i] == s_i and u.tobytes() == U[i].tobytes() and np.array_equal(act[i], a_i)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="problems and batch"):
        kb.run(problems=0)
    with pytest.raises(ValueError, match="problems and batch"):
        kb.run(problems=5, batch=0)
