"""The headline summary's functions on constructed inputs: bootstrap, Pareto, goal, rows -> summary."""

from __future__ import annotations

import numpy as np
import pytest

from safebot.bench.stats import (
    RunRecord,
    bootstrap_interval,
    dominated_by,
    first_step_at,
    goal_check,
    pareto_front,
    runs_from_rows,
    summarise_task,
)

# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_is_deterministic_by_seed_and_brackets_the_mean() -> None:
    xs = [0.2, 0.4, 0.5, 0.9, 1.0]
    a = bootstrap_interval(xs, seed=3)
    assert a == bootstrap_interval(xs, seed=3)
    # 10 000 resamples of 5 values: the quantiles land on the same attainable means;
    # with 30 resamples the seed shows
    assert bootstrap_interval(xs, resamples=30, seed=3) != bootstrap_interval(
        xs, resamples=30, seed=4
    )
    assert a.n == 5 and a.mean == pytest.approx(0.6)
    assert min(xs) <= a.lo < a.mean < a.hi <= max(xs)


def test_bootstrap_of_one_value_or_equal_values_is_a_point_and_of_none_is_empty() -> None:
    assert bootstrap_interval([0.7]) == (0.7, 0.7, 0.7, 1)
    assert bootstrap_interval([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0, 3)
    assert bootstrap_interval([]) == (None, None, None, 0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval([1.0], level=1.0)


def test_bootstrap_interval_covers_the_true_mean_about_as_often_as_it_says() -> None:
    # 20 samples of 30 normal draws: a 95 % interval should miss the true mean rarely
    rng = np.random.default_rng(0)
    covered = 0
    for k in range(200):
        iv = bootstrap_interval(rng.normal(1.0, 1.0, size=30), resamples=2000, seed=k)
        assert iv.lo is not None and iv.hi is not None
        covered += iv.lo <= 1.0 <= iv.hi
    assert 0.88 <= covered / 200 <= 0.99  # percentile bootstrap runs a little narrow at n=30


def test_bootstrap_width_shrinks_with_more_data() -> None:
    rng = np.random.default_rng(1)
    small = bootstrap_interval(rng.normal(size=10), seed=0)
    large = bootstrap_interval(rng.normal(size=1000), seed=0)
    assert (large.hi - large.lo) < (small.hi - small.lo) / 5  # type: ignore[operator]


# --------------------------------------------------------------------------- Pareto


def test_pareto_names_who_dominates_whom() -> None:
    pts = {
        "tight": (0.0, 0.2),
        "mid": (10.0, 0.6),
        "loose": (100.0, 0.9),
        "worse": (50.0, 0.5),  # more harm than mid, less success
        "tie": (10.0, 0.6),  # equal to mid: neither dominates
        "free": (0.0, 0.9),  # dominates mid, loose, worse, tie, and tight
    }
    doms = dominated_by(pts)
    assert doms["free"] == []
    assert sorted(doms["worse"]) == ["free", "mid", "tie"]
    assert "tie" not in doms["mid"] and "mid" not in doms["tie"]
    assert doms["tight"] == ["free"]
    assert pareto_front(pts) == ["free"]
    assert pareto_front({k: pts[k] for k in ("tight", "mid", "loose", "worse")}) == [
        "tight",
        "mid",
        "loose",
    ]


# --------------------------------------------------------------------------- goal


def _entry(success: float, harm: float, final_harm: float) -> dict[str, object]:
    def iv(v: float) -> dict[str, object]:
        return {"mean": v, "lo": v, "hi": v, "n": 2, "values": [v, v]}

    return {
        "final_success": iv(success),
        "cumulative_training_harm": iv(harm),
        "final_harm_per_episode": iv(final_harm),
    }


ROLES = {
    "candidates": ["competence", "competence-lag"],
    "frontier": ["static-0", "static-1"],
    "loose": "static-1",
    "baseline": "sac-lag",
    "cost_limit": 1.0,
}


def _arms(**candidate: tuple[float, float, float]) -> dict[str, dict[str, object]]:
    arms = {
        "static-0": _entry(0.3, 0.0, 0.0),
        "static-1": _entry(0.9, 1000.0, 2.0),
        "sac-lag": _entry(0.8, 400.0, 1.0),
        "competence-lag": _entry(0.1, 0.0, 0.0),  # fails success: never the one that passes
    }
    arms.update({name: _entry(*v) for name, v in candidate.items()})
    return arms


def test_goal_passes_with_every_clause_and_reports_the_numbers() -> None:
    goal = goal_check(_arms(competence=(0.86, 250.0, 0.5)), **ROLES)  # type: ignore[arg-type]
    assert goal["met"] is True and goal["missing"] == [] and goal["best_static"] == "static-1"
    c = goal["candidates"]["competence"]
    assert c["met"] is True
    assert c["clauses"]["success_vs_best_static"]["needed"] == ">= " + repr(0.95 * 0.9)
    assert c["clauses"]["harm_vs_loose"]["value"] == 250.0
    assert c["per_seed"]["final_success"] == [0.86, 0.86]
    assert goal["candidates"]["competence-lag"]["met"] is False


@pytest.mark.parametrize(
    ("values", "failing"),
    [
        ((0.85, 100.0, 0.5), "success_vs_best_static"),  # 0.85 < 0.855
        ((0.9, 251.0, 0.5), "harm_vs_loose"),  # > 25 % of 1000
        ((0.9, 250.0, 0.5), None),  # at the bound: passes
        ((0.9, 200.0, 1.5), "final_harm_vs_cost_limit"),
    ],
)
def test_goal_fails_on_each_clause(values: tuple[float, float, float], failing: str | None) -> None:
    goal = goal_check(_arms(competence=values), **ROLES)  # type: ignore[arg-type]
    clauses = goal["candidates"]["competence"]["clauses"]
    assert [k for k, c in clauses.items() if not c["ok"]] == ([failing] if failing else [])
    assert goal["met"] is (failing is None)


def test_goal_fails_when_the_lagrangian_baseline_has_less_harm() -> None:
    arms = _arms(competence=(0.9, 200.0, 0.5))
    arms["sac-lag"] = _entry(0.8, 150.0, 1.0)
    goal = goal_check(arms, **ROLES)  # type: ignore[arg-type]
    assert not goal["candidates"]["competence"]["clauses"]["harm_vs_baseline"]["ok"]
    assert goal["met"] is False


def test_goal_is_undecided_when_an_arm_is_missing() -> None:
    arms = _arms(competence=(0.9, 200.0, 0.5))
    del arms["sac-lag"]
    goal = goal_check(arms, **ROLES)  # type: ignore[arg-type]
    assert goal["met"] is None and goal["missing"] == ["sac-lag"]


# --------------------------------------------------------------------------- rows -> summary


def _rows(arm: str, seed: int, success: list[float], harm: list[float], final: float) -> list[dict]:
    rows = []
    for k, (s, h) in enumerate(zip(success, harm, strict=True)):
        step = 100 * (k + 1)
        rows += [
            {"task": "reach", "arm": arm, "seed": seed, "step": step, "metric": m, "value": v}
            for m, v in (("success_rate", s), ("cumulative_training_harm", h), ("lambda", ""))
        ]
    last = 100 * len(success)
    for m, v in (("success_rate", final), ("harm_per_episode", 0.5), ("width", 1.0)):
        rows.append(
            {
                "task": "reach",
                "arm": arm,
                "seed": seed,
                "step": last,
                "metric": f"final_{m}",
                "value": v,
            }
        )
    return rows


def test_summary_from_rows_recomputes_every_value() -> None:
    rows = (
        _rows("a", 0, [0.1, 0.5, 0.9], [5, 10, 20], 1.0)
        + _rows("a", 1, [0.2, 0.7, 0.8], [4, 8, 12], 0.8)
        + _rows("b", 0, [0.0, 0.1, 0.2], [0, 0, 0], 0.2)
    )
    runs = runs_from_rows(rows)
    assert set(runs) == {("reach", "a", 0), ("reach", "a", 1), ("reach", "b", 0)}
    assert runs[("reach", "a", 0)].curves["success_rate"][1] == (200, 0.5)
    assert "lambda" not in runs[("reach", "a", 0)].curves  # empty values are skipped
    per = summarise_task({(a, s): r for (_, a, s), r in runs.items()}, resamples=500)
    a = per["a"]
    assert a["seeds"] == [0, 1] and a["final_success"]["values"] == [1.0, 0.8]
    assert a["final_success"]["mean"] == pytest.approx(0.9)
    assert a["cumulative_training_harm"]["values"] == [20.0, 12.0]
    # the mark is 80 % of the best arm's mean final success (0.9): 0.72
    assert a["steps_to_mark"]["threshold"] == pytest.approx(0.72)
    assert a["steps_to_mark"]["values"] == [300, 300] and a["steps_to_mark"]["reached"] == 2
    assert (
        per["b"]["steps_to_mark"]["values"] == [None] and per["b"]["steps_to_mark"]["mean"] is None
    )
    assert per["b"]["final_width"]["mean"] == 1.0


def test_first_step_at() -> None:
    curve = [(100, 0.1), (200, 0.8), (300, 0.9)]
    assert first_step_at(curve, 0.8) == 200
    assert first_step_at(curve, 0.95) is None
    assert first_step_at(curve, None) is None
    assert RunRecord({}, {}).final == {}
