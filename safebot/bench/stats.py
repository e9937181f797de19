"""The headline summary from ``results.csv``: bootstrap intervals, the Pareto frontier, the goal.

Everything here is a pure function of the long-format rows
``(task, arm, seed, step, metric, value)`` a sweep writes, so anyone holding
``results.csv`` recomputes ``summary.json`` with :func:`summarise_results`
(NumPy only; no SciPy at run time).

Per run the summary reads four numbers:

============================  ==================================================
``final_success``             success rate of the final evaluation (the best
                              model on ``final_episodes`` fresh episodes)
``final_harm_per_episode``    harm events per episode in that evaluation
``cumulative_training_harm``  ``info['cost']`` summed over all training steps
``steps_to_mark``             first evaluation step whose success reaches
                              ``mark`` x the best arm's mean final success
                              (``None`` if never, or if the best arm's is 0)
============================  ==================================================

Example:
    >>> bootstrap_interval([1.0, 2.0, 3.0], seed=0).mean
    2.0
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

#: the per-run numbers of :func:`run_values`, in ``summary.json`` order
RUN_VALUES = (
    "final_success",
    "final_harm_per_episode",
    "cumulative_training_harm",
    "steps_to_mark",
    "final_width",
)


class Interval(NamedTuple):
    """Mean over seeds and its percentile-bootstrap interval (``None`` everywhere for no values)."""

    mean: float | None
    lo: float | None
    hi: float | None
    n: int


def bootstrap_interval(
    values: Iterable[float], *, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> Interval:
    """Mean and two-sided percentile-bootstrap interval of the mean.

    ``resamples`` means of ``n`` values drawn with replacement; the interval is
    their ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles. The same
    ``seed`` gives the same interval. One value (or identical values) gives a
    zero-width interval: with five seeds the bootstrap is optimistic, which the
    per-seed values in ``summary.json`` let a reader judge.

    Raises:
        ValueError: ``level`` outside (0, 1) or ``resamples`` < 1.
    """
    if not 0.0 < level < 1.0 or resamples < 1:
        raise ValueError(f"need 0 < level < 1 and resamples >= 1, got {level}, {resamples}")
    xs = np.asarray([float(v) for v in values], dtype=np.float64)
    n = len(xs)
    if n == 0:
        return Interval(None, None, None, 0)
    mean = math.fsum(xs) / n
    rng = np.random.default_rng(seed)
    means = xs[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    lo, hi = np.quantile(means, [(1.0 - level) / 2, (1.0 + level) / 2])
    # float rounding of the resampled means must not put the mean outside its interval
    return Interval(mean, min(float(lo), mean), max(float(hi), mean), n)


def dominated_by(points: Mapping[str, tuple[float, float]]) -> dict[str, list[str]]:
    """Per point ``(harm, success)``, the points that dominate it (empty: on the frontier).

    ``b`` dominates ``a`` when it has no more harm and no less success, and is
    strictly better in one of the two.
    """
    out: dict[str, list[str]] = {}
    for a, (ha, sa) in points.items():
        out[a] = [
            b
            for b, (hb, sb) in points.items()
            if b != a and hb <= ha and sb >= sa and (hb < ha or sb > sa)
        ]
    return out


def pareto_front(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """The non-dominated points, by increasing harm."""
    doms = dominated_by(points)
    return sorted((p for p, d in doms.items() if not d), key=lambda p: points[p])


# --------------------------------------------------------------------------- rows -> runs


class RunRecord(NamedTuple):
    """One run's rows: ``curves[metric]`` as ``(step, value)`` in step order, and the finals."""

    curves: dict[str, list[tuple[int, float]]]
    final: dict[str, float]


def runs_from_rows(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, int], RunRecord]:
    """Group ``results.csv`` rows (dicts with its columns) by ``(task, arm, seed)``.

    Metrics named ``final_*`` are the final evaluation; every other metric is a curve.
    Empty values (a metric a run does not have) are skipped.
    """
    out: dict[tuple[str, str, int], RunRecord] = {}
    for r in rows:
        if r["value"] in ("", None):
            continue
        key = (str(r["task"]), str(r["arm"]), int(r["seed"]))
        rec = out.setdefault(key, RunRecord({}, {}))
        metric, value = str(r["metric"]), float(r["value"])
        if metric.startswith("final_"):
            rec.final[metric.removeprefix("final_")] = value
        else:
            rec.curves.setdefault(metric, []).append((int(r["step"]), value))
    for rec in out.values():
        for curve in rec.curves.values():
            curve.sort()
    return out


def first_step_at(curve: Sequence[tuple[int, float]], threshold: float | None) -> int | None:
    """The first step whose value reaches ``threshold`` (``None`` if never or no threshold)."""
    if threshold is None:
        return None
    return next((step for step, v in curve if v >= threshold), None)


def run_values(rec: RunRecord, threshold: float | None) -> dict[str, float | int | None]:
    """The per-run numbers of the summary (:data:`RUN_VALUES`)."""
    harm = rec.curves.get("cumulative_training_harm", [])
    return {
        "final_success": rec.final.get("success_rate"),
        "final_harm_per_episode": rec.final.get("harm_per_episode"),
        "cumulative_training_harm": harm[-1][1] if harm else None,
        "steps_to_mark": first_step_at(rec.curves.get("success_rate", []), threshold),
        "final_width": rec.final.get("width"),
    }


# --------------------------------------------------------------------------- the summary


def _mean(values: Iterable[float | int | None]) -> float | None:
    xs = [float(v) for v in values if v is not None]
    return math.fsum(xs) / len(xs) if xs else None


def summarise_task(
    runs: Mapping[tuple[str, int], RunRecord],
    *,
    mark: float = 0.8,
    resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Per arm of one task: seeds, and per value its mean, bootstrap interval and per-seed values.

    ``runs`` maps ``(arm, seed)`` to the run. ``steps_to_mark`` is over the seeds
    that reached the mark (``reached`` of ``n``); its threshold is ``mark`` times
    the best arm's mean final success, recorded as ``threshold``.
    """
    arms = list(dict.fromkeys(arm for arm, _ in runs))
    finals = {
        arm: _mean(r.final.get("success_rate") for (a, _), r in runs.items() if a == arm)
        for arm in arms
    }
    best = max((v for v in finals.values() if v is not None), default=None)
    threshold = mark * best if best else None
    out: dict[str, dict[str, Any]] = {}
    for arm in arms:
        seeds = sorted(s for a, s in runs if a == arm)
        per_seed = [run_values(runs[(arm, s)], threshold) for s in seeds]
        entry: dict[str, Any] = {"seeds": seeds}
        for name in RUN_VALUES:
            vals = [v[name] for v in per_seed]
            present = [float(v) for v in vals if v is not None]
            iv = bootstrap_interval(present, resamples=resamples, seed=seed)
            entry[name] = {**iv._asdict(), "values": vals}
        entry["steps_to_mark"].update(
            reached=sum(v is not None for v in entry["steps_to_mark"]["values"]),
            threshold=threshold,
        )
        out[arm] = entry
    return out


def _clause(value: float | None, limit: float | None, *, at_most: bool) -> dict[str, Any]:
    ok = None if value is None or limit is None else (value <= limit if at_most else value >= limit)
    return {"value": value, "needed": ("<= " if at_most else ">= ") + repr(limit), "ok": ok}


def goal_check(
    per_arm: Mapping[str, Mapping[str, Any]],
    *,
    candidates: Sequence[str],
    frontier: Sequence[str],
    loose: str,
    baseline: str,
    cost_limit: float,
    success_fraction: float = 0.95,
    harm_fraction: float = 0.25,
) -> dict[str, Any]:
    """The issue's goal for one task, on means over seeds, clause by clause.

    A candidate meets it when its final success is at least ``success_fraction``
    of the best ``frontier`` arm's, its cumulative training harm at most
    ``harm_fraction`` of ``loose``'s and at most ``baseline``'s, and its final
    harm per episode at most ``cost_limit``. The goal holds when one candidate
    meets it. Arms the task lacks are listed under ``missing`` and make the
    goal ``None`` (not decided).
    """
    need = [*candidates, *frontier, loose, baseline]
    missing = sorted({a for a in need if a not in per_arm})
    statics = [a for a in frontier if a in per_arm]

    def mean(arm: str, name: str) -> float | None:
        return per_arm[arm][name]["mean"] if arm in per_arm else None

    best_static = max(statics, key=lambda a: mean(a, "final_success") or 0.0, default=None)
    best_s = None if best_static is None else mean(best_static, "final_success")
    loose_h, base_h = (
        mean(loose, "cumulative_training_harm"),
        mean(baseline, "cumulative_training_harm"),
    )
    out: dict[str, Any] = {"best_static": best_static, "cost_limit": cost_limit, "candidates": {}}
    for cand in (c for c in candidates if c in per_arm):
        e = per_arm[cand]
        clauses = {
            "success_vs_best_static": _clause(
                mean(cand, "final_success"),
                None if best_s is None else success_fraction * best_s,
                at_most=False,
            ),
            "harm_vs_loose": _clause(
                mean(cand, "cumulative_training_harm"),
                None if loose_h is None else harm_fraction * loose_h,
                at_most=True,
            ),
            "harm_vs_baseline": _clause(
                mean(cand, "cumulative_training_harm"), base_h, at_most=True
            ),
            "final_harm_vs_cost_limit": _clause(
                mean(cand, "final_harm_per_episode"), cost_limit, at_most=True
            ),
        }
        oks = [c["ok"] for c in clauses.values()]
        out["candidates"][cand] = {
            "clauses": clauses,
            "met": None if None in oks else all(oks),
            "per_seed": {
                name: e[name]["values"]
                for name in ("final_success", "cumulative_training_harm", "final_harm_per_episode")
            },
        }
    results = [c["met"] for c in out["candidates"].values()]
    out["missing"] = missing
    out["met"] = None if missing or None in results else any(results)
    return out


__all__ = [
    "RUN_VALUES",
    "Interval",
    "RunRecord",
    "bootstrap_interval",
    "dominated_by",
    "first_step_at",
    "goal_check",
    "pareto_front",
    "run_values",
    "runs_from_rows",
    "summarise_task",
]
