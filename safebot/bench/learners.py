"""``safebot bench learners``: each task's shipped recipe on several seeds, judged on fresh episodes.

Every (task, seed) is an ordinary run directory under ``--out`` (``<label>/seed<k>``),
trained with the task's ``[train]`` and ``[scheduler]`` as shipped and then
evaluated on 50 fresh episodes (seeds 50 000 up, held out from every training
evaluation) with its best model. A restart resumes unfinished runs and reads
finished ones back, so the grid can run across sittings.

``summary.json`` is ``{"<label>": {"<seed>": {"success", "episodes", "steps",
"wall_s", "which"}}}`` (the label is the task file's name with ``-`` for ``_``:
``reach_ppo`` -> ``reach-ppo``); ``report.json`` adds each task's goal, whether
every seed meets it, and under ``runs`` the command, code commit and wall time
that measured it. Both files hold every task ever written to their folder: a
sitting replaces the entries of its own tasks and keeps the others (:func:`merge_into`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safebot.bench.train import timed_train
from safebot.config import SpecError
from safebot.io import atomic_write
from safebot.resources import code_label

if TYPE_CHECKING:
    from safebot.bench.executors import Executor

#: goals of the learner issue: held-out success on each seed at least this
#: (Push and Press: a fraction of their careful scripted controller's width-0 success)
ABSOLUTE_GOALS: Mapping[str, float] = {"reach": 0.9, "reach-ppo": 0.8}
SCRIPTED_FRACTION = 0.8


@dataclass(frozen=True)
class LearnerRun:
    """One (task, seed) of the grid (picklable for the executors)."""

    task: str
    seed: int
    run_dir: str
    steps: int | None = None
    final_episodes: int = 50


def label(task: str) -> str:
    """The summary's key of a task: its file name, ``_`` as ``-`` (``reach_ppo`` -> ``reach-ppo``)."""
    return Path(task).stem.replace("_", "-")


def run_learner(run: LearnerRun) -> dict[str, Any]:
    """Train (or resume, or read back) one seed of one task's recipe and evaluate its best model."""
    from safebot.spec import load_task
    from safebot.train import RunOptions, evaluate_run

    run_dir = Path(run.run_dir)
    done = timed_train(run_dir, load_task(run.task), RunOptions(steps=run.steps, seed=run.seed))
    kept = run_dir / "bench_final_eval.json"  # a finished run is evaluated once, not per restart
    final = json.loads(kept.read_text()) if kept.is_file() else {}
    if final.get("episodes") != run.final_episodes:
        final = evaluate_run(run_dir, "best", episodes=run.final_episodes)
        atomic_write(kept, json.dumps(final, indent=2))
    steps = int(json.loads((run_dir / "summary.json").read_text())["step"])
    return {
        "success": final["success_rate"],
        "episodes": final["episodes"],
        "steps": steps,
        "wall_s": round(done["wall_s"], 1),
        "which": final["which"],
        "harm_per_episode": final["harm_per_episode"],
        "model_step": final["model_step"],
    }


def goal_of(task: str, scripted_dir: Path) -> dict[str, Any] | None:
    """The success each seed must reach, and where it comes from (None: the task has no goal)."""
    key = label(task)
    if key in ABSOLUTE_GOALS:
        return {"success": ABSOLUTE_GOALS[key], "source": "issue 13"}
    path = scripted_dir / f"scripted_{key}.json"
    if not path.is_file():
        return None
    table = json.loads(path.read_text())
    for controller in ("careful", "naive"):
        width0 = next(row for row in table[controller] if row["width"] == 0.0)["success_rate"]
        if width0 > 0:
            break
    # A careful controller that never succeeds at width 0 (Press: its guarded descent does
    # not finish within the episode at the start speed bound, docs/tasks.md) would make the
    # goal 0, met by anything: the naive controller's width-0 success is the reference then.
    return {
        "success": round(SCRIPTED_FRACTION * width0, 4),
        "source": f"{SCRIPTED_FRACTION:.0%} of the {controller} scripted controller's width-0 "
        f"success {width0:.0%} ({path.name})"
        + ("" if controller == "careful" else "; the careful one's is 0 %"),
    }


def bench_learners(
    out: Path,
    *,
    tasks: tuple[str, ...],
    seeds: tuple[int, ...],
    workers: int = 1,
    steps: int | None = None,
    final_episodes: int = 50,
    scripted_dir: Path = Path("docs/results"),
    results: Path | None = None,
    command: str = "",
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Run the grid under ``out``; write ``summary.json`` and ``report.json`` there and in ``results``.

    Runs finish in any order; each finished one is added to both files at once,
    so an interrupted grid leaves everything measured so far. ``results`` (for
    example ``docs/results/learners``) gets the two small files only, not the
    run directories with their replay buffers. In both folders the entries of
    other tasks, written by other sittings, are kept (:func:`merge_into`); a
    folder whose files are not readable JSON objects stops the grid before any
    training, naming the file, instead of being overwritten.
    """
    from safebot.bench.executors import make_executor

    folders = (out, results) if results is not None else (out,)
    previous = {folder: _read_results(folder) for folder in folders}
    out.mkdir(parents=True, exist_ok=True)
    runs = [
        LearnerRun(task, seed, str(out / label(task) / f"seed{seed}"), steps, final_episodes)
        for task in tasks
        for seed in seeds
    ]
    summary: dict[str, dict[str, Any]] = {label(t): {} for t in tasks}
    failed: dict[str, str] = {}
    t0 = time.perf_counter()
    commit = code_label()  # the code the runs of this sitting start with
    report: dict[str, Any] = {}
    pool = executor if executor is not None else make_executor("local", workers=workers)
    for run, result in pool.map_unordered(run_learner, runs):
        name = f"{label(run.task)}/seed{run.seed}"
        if isinstance(result, BaseException):
            failed[name] = f"{type(result).__name__}: {result}"
        else:
            summary[label(run.task)][str(run.seed)] = result
            print(f"{name}: success {result['success']:.0%} on {result['episodes']} fresh "
                  f"episodes, {result['steps']} steps, {result['wall_s']} s", flush=True)  # fmt: skip
        wall = time.perf_counter() - t0
        report = _report(summary, tasks, failed, scripted_dir, command, wall, commit)
        for folder in folders:
            old_summary, old_report = previous[folder]
            merged_summary, merged_report = merge_into(old_summary, old_report, summary, report)
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / "summary.json", json.dumps(merged_summary, indent=2))
            atomic_write(folder / "report.json", json.dumps(merged_report, indent=2))
    return report


def _read_results(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``folder``'s ``summary.json`` and ``report.json`` (empty where absent)."""
    read: list[dict[str, Any]] = []
    for name in ("summary.json", "report.json"):
        path = folder / name
        if not path.exists():
            read.append({})
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise SpecError(
                f"{path}: not readable JSON ({err}); move it away to start afresh"
            ) from None
        if not isinstance(data, dict):
            raise SpecError(f"{path}: expected a JSON object, got {type(data).__name__}")
        read.append(data)
    return read[0], read[1]


def merge_into(
    old_summary: Mapping[str, Any],
    old_report: Mapping[str, Any],
    summary: Mapping[str, Any],
    report: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A results folder's files with this sitting's tasks replaced and every other task kept.

    ``summary``/``report`` are this sitting's (its tasks only). A task of this
    sitting replaces the old entry whole (seeds of an older sitting are not
    mixed with new code); goals, failures and the ``runs`` record (command,
    code commit, wall time) follow the same rule. Other keys of the old report
    (notes) are kept.
    """
    mine = set(summary)
    merged_summary = {k: v for k, v in old_summary.items() if k not in mine} | dict(summary)
    merged = dict(old_report)
    for key in ("goals", "runs"):
        kept = {k: v for k, v in dict(old_report.get(key) or {}).items() if k not in mine}
        merged[key] = kept | dict(report.get(key) or {})
    old_failed = dict(old_report.get("failed") or {})
    merged["failed"] = {k: v for k, v in old_failed.items() if k.split("/")[0] not in mine} | dict(
        report.get("failed") or {}
    )
    merged["cpus"] = report.get("cpus", merged.get("cpus"))
    merged["summary"] = merged_summary
    return merged_summary, merged


def _report(
    summary: dict[str, dict[str, Any]],
    tasks: tuple[str, ...],
    failed: dict[str, str],
    scripted_dir: Path,
    command: str,
    wall_s: float,
    commit: str | None,
) -> dict[str, Any]:
    goals: dict[str, Any] = {}
    for task in tasks:
        goal = goal_of(task, scripted_dir)
        seeds = summary[label(task)]
        if goal is not None:
            below = {s: r["success"] for s, r in seeds.items() if r["success"] < goal["success"]}
            goal = {**goal, "met_on_every_seed": bool(seeds) and not below, "below": below}
        goals[label(task)] = goal
    runs = {
        label(task): {"command": command, "code_commit": commit, "wall_s": round(wall_s, 1)}
        for task in tasks
    }
    return {
        "runs": runs,
        "cpus": os.cpu_count(),
        "goals": goals,
        "failed": failed,
        "summary": summary,
    }


__all__ = [
    "ABSOLUTE_GOALS",
    "SCRIPTED_FRACTION",
    "LearnerRun",
    "bench_learners",
    "goal_of",
    "label",
    "merge_into",
    "run_learner",
]
