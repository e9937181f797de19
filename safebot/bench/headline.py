"""The headline sweep: tasks x arms x seeds from a spec file (``bench/headline.toml``).

An *arm* is data: a shield mode, a scheduler (with a width when static) and a
reward-side constraint, which map field for field onto
:class:`safebot.train.RunOptions`. The spec names the arms, the per-task
budgets, the seeds and the roles the goal check gives arms; no arm name is a
case in code. Each run is :func:`safebot.bench.envelope.run_one` (train,
resume from its last checkpoint, or read back when finished) followed by the
final evaluation of its best model on ``final_episodes`` fresh episodes
(:func:`safebot.train.evaluate_run`, kept in the run's ``final_eval.json``).

Outputs in the output directory: ``results.csv`` (long format ``task, arm,
seed, step, metric, value``), ``summary.json`` computed from ``results.csv``
alone (:mod:`safebot.bench.stats`), per task ``pareto_<task>.png``,
``curves_<task>.png`` and ``width_<task>.png``, ``sweep.json`` (the budgets a
restart must share) and ``runs/<task>/<arm>/seed<k>``.

Example:
    >>> spec = load_spec("bench/headline.toml").select(tasks=["reach"], seeds=2)  # doctest: +SKIP
    >>> run_headline(spec, Path("runs/headline"), make_executor("local"))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, model_validator

from safebot.bench.envelope import BenchScheduler, RunOutcome, RunSpec, SweepError, run_one
from safebot.bench.executors import Executor
from safebot.bench.stats import goal_check, runs_from_rows, summarise_task
from safebot.config import Frozen, SpecError, parse_model, read_toml
from safebot.io import atomic_write
from safebot.modes import RewardConstraint, SchedulerKind, ShieldMode
from safebot.resources import code_commit

PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]

# --------------------------------------------------------------------------- the spec


class ArmSpec(Frozen):
    """One arm: how the shield and the reward treat harm (the fields of ``RunOptions``)."""

    shield: ShieldMode = ShieldMode.ON
    scheduler: SchedulerKind | None = Field(
        None, description="how the width moves; omit for an unshielded arm (static at the caps)"
    )
    width: Fraction | None = Field(None, description="the fixed width of a static arm")
    constraint: RewardConstraint = RewardConstraint.NONE

    @model_validator(mode="after")
    def _consistent(self) -> ArmSpec:
        if self.shield is ShieldMode.ON and self.scheduler is None:
            raise ValueError("a shielded arm needs a scheduler")
        if self.shield is ShieldMode.OFF and self.scheduler is not None:
            raise ValueError("an unshielded arm has no scheduler (it runs at the caps)")
        if (self.width is not None) != (self.scheduler is SchedulerKind.STATIC):
            raise ValueError("width is given exactly when the scheduler is static")
        return self

    def bench(self) -> BenchScheduler:
        """What :func:`safebot.bench.envelope.run_one` hands to ``RunOptions``."""
        return BenchScheduler(self.shield, self.constraint, self.scheduler, self.width)


class TaskBudget(Frozen):
    """The per-run budget of one task (every arm and seed of it shares it)."""

    steps: PositiveInt
    eval_every: PositiveInt
    eval_episodes: PositiveInt
    checkpoint_every: PositiveInt
    train: dict[str, Any] = Field(
        default_factory=dict, description="[train] keys forced on every run (tests: tiny nets)"
    )

    @model_validator(mode="after")
    def _fits(self) -> TaskBudget:
        from safebot.spec import TrainSection

        if self.eval_every > self.steps:
            raise ValueError(f"eval_every {self.eval_every} > steps {self.steps}: no evaluation")
        unknown = sorted(set(self.train) - set(TrainSection.model_fields))
        if unknown:
            raise ValueError(f"unknown [train] key(s) {', '.join(unknown)}")
        return self


class GoalSpec(Frozen):
    """Which arms play which role in the goal check (:func:`safebot.bench.stats.goal_check`)."""

    candidates: list[str] = Field(min_length=1)
    frontier: list[str] = Field(min_length=1, description="the static arms of the Pareto plot")
    loose: str
    baseline: str
    success_fraction: Fraction = 0.95
    harm_fraction: Fraction = 0.25

    def arms(self) -> list[str]:
        return [*self.candidates, *self.frontier, self.loose, self.baseline]


class HeadlineSpec(Frozen):
    """A sweep spec file: seeds, final evaluation, tasks with budgets, arms, the goal's roles."""

    seeds: PositiveInt = Field(description="seeds 0 .. seeds-1 of every task x arm")
    final_episodes: PositiveInt = 50
    success_mark: Fraction = 0.8
    bootstrap_resamples: PositiveInt = 10_000
    bootstrap_seed: Annotated[int, Field(ge=0)] = 0
    tasks: dict[str, TaskBudget] = Field(min_length=1)
    arms: dict[str, ArmSpec] = Field(min_length=1)
    goal: GoalSpec | None = None
    source: str = Field("<dict>", exclude=True)

    def select(
        self,
        *,
        tasks: Sequence[str] | None = None,
        arms: Sequence[str] | None = None,
        seeds: int | None = None,
        steps: int | None = None,
    ) -> HeadlineSpec:
        """A smaller grid for tries and tests: a subset of tasks and arms, fewer seeds or steps.

        Raises:
            SweepError: a name the spec does not have, or more seeds than it has.
        """
        for what, asked, have in (("task", tasks, self.tasks), ("arm", arms, self.arms)):
            unknown = [x for x in asked or () if x not in have]
            if unknown:
                raise SweepError(
                    f"{self.source}: unknown {what}(s) {', '.join(unknown)}; "
                    f"the spec has {', '.join(have)}"
                )
        if seeds is not None and not 0 < seeds <= self.seeds:
            raise SweepError(f"--seeds {seeds}: the spec has {self.seeds} seed(s)")
        budgets = {t: b for t, b in self.tasks.items() if tasks is None or t in tasks}
        if steps is not None:
            budgets = {t: _with_steps(b, steps) for t, b in budgets.items()}
        return self.model_copy(
            update={
                "tasks": budgets,
                "arms": {a: s for a, s in self.arms.items() if arms is None or a in arms},
                "seeds": seeds or self.seeds,
            }
        )


def _with_steps(budget: TaskBudget, steps: int) -> TaskBudget:
    # --steps shrinks a try; its evaluations and checkpoints shrink with it
    return budget.model_copy(
        update={
            "steps": steps,
            "eval_every": min(budget.eval_every, steps),
            "checkpoint_every": min(budget.checkpoint_every, steps),
        }
    )


def load_spec(path: str | Path) -> HeadlineSpec:
    """Read and check a sweep spec file.

    Raises:
        SpecError: a malformed file, an unknown key, a bad value, an unknown
            task, or a goal role naming an arm the spec lacks; the message
            names the file and the key path.
    """
    from safebot.spec import load_task

    source = str(path)
    spec = parse_model(read_toml(path), HeadlineSpec, source)
    errors = []
    for task in spec.tasks:
        try:
            load_task(task)
        except SpecError:
            errors.append(f"{source}: [tasks.{task}] unknown task (not a shipped name or file)")
    if spec.goal is not None:
        for role in ("candidates", "frontier", "loose", "baseline"):
            names = getattr(spec.goal, role)
            for name in [names] if isinstance(names, str) else names:
                if name not in spec.arms:
                    errors.append(
                        f"{source}: [goal.{role}] unknown arm {name!r}; "
                        f"the arms are {', '.join(spec.arms)}"
                    )
    if errors:
        raise SpecError("\n".join(errors))
    return spec.model_copy(update={"source": source})


# --------------------------------------------------------------------------- one run


FINAL_EVAL = "final_eval.json"


@dataclass(frozen=True)
class ArmRun:
    """One run of the grid and its final evaluation size; picklable (worker / Ray task)."""

    run: RunSpec
    final_episodes: int


@dataclass(frozen=True)
class ArmOutcome:
    """A finished run: its files as text (mirrored on the driver) and whether it trained now."""

    job: ArmRun
    metrics_csv: str
    summary_json: str
    final_json: str
    trained: bool
    wall_s: float
    code: str | None = None  # the commit the run started with ([run] code of its config.toml)

    @property
    def final(self) -> dict[str, Any]:
        return dict(json.loads(self.final_json))


def run_arm(job: ArmRun) -> ArmOutcome:
    """Train (or resume, or read back) one run, then evaluate its best model once.

    Module level so both executors pickle it. The final evaluation is written
    atomically to ``final_eval.json``; a restart that finds it does not redo it.
    """
    from safebot.train import evaluate_run

    t0 = time.perf_counter()
    outcome: RunOutcome = run_one(job.run)
    path = Path(job.run.run_dir) / FINAL_EVAL
    evaluated = False
    if not path.is_file():
        result = evaluate_run(job.run.run_dir, "best", episodes=job.final_episodes)
        result.pop("run")  # an absolute path: differs between machines and output folders
        atomic_write(path, json.dumps(result, indent=2) + "\n")
        evaluated = True
    return ArmOutcome(
        job,
        outcome.metrics_csv,
        outcome.summary_json,
        path.read_text(),
        outcome.trained or evaluated,
        time.perf_counter() - t0,
        read_code(job.run.run_dir),
    )


def read_done(job: ArmRun) -> ArmOutcome | None:
    """A run whose training and final evaluation are both on disk, or ``None``."""
    d = Path(job.run.run_dir)
    files = [d / "metrics.csv", d / "summary.json", d / FINAL_EVAL]
    if not all(f.is_file() for f in files):
        return None
    metrics, summary, final = (f.read_text() for f in files)
    return ArmOutcome(job, metrics, summary, final, False, 0.0, read_code(d))


def _mirror(o: ArmOutcome) -> None:
    # on a multi-machine Ray cluster the run directory is on a worker: keep what the
    # driver aggregates and what tells a restart the run is done
    d = Path(o.job.run.run_dir)
    d.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("metrics.csv", o.metrics_csv),
        ("summary.json", o.summary_json),
        (FINAL_EVAL, o.final_json),
        (CODE_FILE, o.code or ""),
    ):
        if text and not (d / name).is_file():
            atomic_write(d / name, text)


CODE_FILE = "code.txt"  # the driver's copy of a run's [run] code (a Ray worker holds the run)


def read_code(run_dir: str | Path) -> str | None:
    """The commit ``run_dir`` started with: ``[run] code`` of its ``config.toml``, else the
    driver's copy; ``None`` for a run started before runs recorded it."""
    d = Path(run_dir)
    try:
        code = read_toml(d / "config.toml").get("run", {}).get("code")
    except SpecError:  # no config.toml (a Ray run held by a worker) or a corrupt one
        code = None
    if code is None and (d / CODE_FILE).is_file():
        code = (d / CODE_FILE).read_text().strip() or None
    return str(code) if code is not None else None


def jobs(spec: HeadlineSpec, out: Path) -> list[ArmRun]:
    """Every run of the grid in table order (task, arm, seed)."""
    root = out.resolve() / "runs"
    return [
        ArmRun(
            RunSpec(
                task=task,
                scheduler=arm,
                seed=seed,
                steps=budget.steps,
                run_dir=str(root / Path(task).stem / arm / f"seed{seed}"),
                eval_every=budget.eval_every,
                eval_episodes=budget.eval_episodes,
                checkpoint_every=budget.checkpoint_every,
                train=tuple(sorted(budget.train.items())),
                arm=arm_spec.bench(),
            ),
            spec.final_episodes,
        )
        for task, budget in spec.tasks.items()
        for arm, arm_spec in spec.arms.items()
        for seed in range(spec.seeds)
    ]


# --------------------------------------------------------------------------- results.csv

#: results.csv metric name -> metrics.csv column, at every evaluation
CURVES = {
    "success_rate": "success_rate",
    "harm_per_episode": "harm_per_episode",
    "cumulative_training_harm": "train_cost",
    "width": "width",
    "lambda": "lambda",
    "cost_rate": "cost_rate",
    "mean_return": "mean_return",
}  # not wall_s: results.csv holds numbers that reproduce, on any executor
#: final_eval.json keys written as ``final_<key>`` at the run's last step
FINALS = ("success_rate", "harm_per_episode", "mean_return", "episodes", "model_step")
HEADER = ("task", "arm", "seed", "step", "metric", "value")


def result_rows(o: ArmOutcome) -> list[tuple[str, str, int, int, str, Any]]:
    """One run's long-format rows: every curve metric at every evaluation, then the finals."""
    run = o.job.run
    head = (run.task_name, run.scheduler, run.seed)
    rows = list(csv.DictReader(o.metrics_csv.splitlines()))
    out: list[tuple[str, str, int, int, str, Any]] = []
    for r in rows:
        for metric, column in CURVES.items():
            out.append((*head, int(r["step"]), metric, r.get(column, "")))
    final = o.final
    last = int(rows[-1]["step"]) if rows else 0
    for key in FINALS:
        out.append((*head, last, f"final_{key}", final.get(key, "")))
    out.append((*head, last, "final_width", final.get("final_width", "")))
    return out


def write_results(path: Path, outcomes: Iterable[ArmOutcome]) -> None:
    """``results.csv``: :data:`HEADER`, then every run's :func:`result_rows`."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(HEADER)
    for o in outcomes:
        writer.writerows(tuple("" if v is None else v for v in row) for row in result_rows(o))
    atomic_write(path, buf.getvalue())


def read_results(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- summary


def summarise_results(rows: Iterable[Mapping[str, Any]], spec: HeadlineSpec) -> dict[str, Any]:
    """Per task: per arm the summary (:func:`safebot.bench.stats.summarise_task`) and the goal."""
    from safebot.spec import load_task

    runs = runs_from_rows(rows)
    results: dict[str, Any] = {}
    goals: dict[str, Any] = {}
    for task in dict.fromkeys(t for t, _, _ in runs):
        mine = {(a, s): r for (t, a, s), r in runs.items() if t == task}
        per_arm = summarise_task(
            mine,
            mark=spec.success_mark,
            resamples=spec.bootstrap_resamples,
            seed=spec.bootstrap_seed,
        )
        results[task] = per_arm
        if spec.goal is not None:
            g = spec.goal
            goals[task] = goal_check(
                per_arm,
                candidates=g.candidates,
                frontier=g.frontier,
                loose=g.loose,
                baseline=g.baseline,
                cost_limit=load_task(task).train.cost_limit,
                success_fraction=g.success_fraction,
                harm_fraction=g.harm_fraction,
            )
    return {"results": results, "goal": goals}


def _cell(stat: Mapping[str, Any], fmt: str) -> str:
    """``mean [lo, hi]`` of one summary statistic, or ``–`` when no seed has a value."""
    if stat.get("mean") is None:
        return "–"
    cell = format(stat["mean"], fmt)
    if stat.get("n", 0) > 1 and stat.get("lo") is not None:
        cell += f" [{format(stat['lo'], fmt)}, {format(stat['hi'], fmt)}]"
    return cell


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """``summary.md``: per task the arms' table (means and 95 % intervals) and the goal check."""
    lines = [
        f"# Headline sweep: {summary.get('spec', '')}",
        "",
        f"Command: `{summary.get('command', '')}`; code {summary.get('code', {}).get('commit')}. "
        f"Cells: mean [{summary.get('interval', '95 % interval')}].",
    ]
    for task, per_arm in summary["results"].items():
        lines += [
            "",
            f"## {task}",
            "",
            "| arm | seeds | final success | final harm / episode | cumulative training harm "
            "| steps to mark (reached) | final width |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for arm, e in per_arm.items():
            mark = e["steps_to_mark"]
            lines.append(
                f"| {arm} | {len(e['seeds'])} | {_cell(e['final_success'], '.2f')} | "
                f"{_cell(e['final_harm_per_episode'], '.2f')} | "
                f"{_cell(e['cumulative_training_harm'], '.0f')} | "
                f"{_cell(mark, '.0f')} ({mark.get('reached', 0)}/{len(e['seeds'])}) | "
                f"{_cell(e['final_width'], '.2f')} |"
            )
        goal = summary.get("goal", {}).get(task)
        if goal is None:
            continue
        verdict = {True: "met", False: "not met", None: "not decided"}[goal["met"]]
        lines += ["", f"Goal: **{verdict}**" + (f" (missing arms: {', '.join(goal['missing'])})"
                                               if goal["missing"] else "") + "."]  # fmt: skip
        for cand, c in goal["candidates"].items():
            lines += ["", f"| {cand} | needed | measured | |", "| --- | --- | --- | --- |"]
            for name, clause in c["clauses"].items():
                ok = {True: "ok", False: "**no**", None: "–"}[clause["ok"]]
                value = clause["value"]
                shown = "–" if value is None else f"{value:.4g}"
                op, _, limit = str(clause["needed"]).partition(" ")
                needed = f"{op} {float(limit):.4g}" if limit not in ("", "None") else "–"
                lines.append(f"| {name} | {needed} | {shown} | {ok} |")
    return "\n".join(lines) + "\n"


def runs_code(outcomes: Sequence[ArmOutcome]) -> dict[str, int]:
    """How many finished runs each code commit started (``[run] code`` of each run's
    ``config.toml``; ``"unrecorded"`` for runs started before runs recorded it)."""
    tally: dict[str, int] = {}
    for o in outcomes:
        key = o.code or "unrecorded"
        tally[key] = tally.get(key, 0) + 1
    return dict(sorted(tally.items()))


def timing(outcomes: Sequence[ArmOutcome], trained: int, wall_s: float) -> dict[str, Any]:
    """Wall time of this invocation, runs per hour, and each run's env steps per second."""
    per_run: dict[str, Any] = {}
    for o in outcomes:
        rows = list(csv.DictReader(o.metrics_csv.splitlines()))
        run_wall = float(rows[-1]["wall_s"]) if rows and rows[-1].get("wall_s") else None
        steps = int(rows[-1]["step"]) if rows else 0
        per_run[o.job.run.label] = {
            "train_wall_s": run_wall,
            "env_steps_per_s": round(steps / run_wall, 1) if run_wall else None,
        }
    hours = wall_s / 3600.0
    return {
        "wall_s": round(wall_s, 1),
        "runs_trained": trained,
        "runs_per_hour": round(trained / hours, 2) if trained and hours > 0 else None,
        "train_wall_s_total": round(sum(r["train_wall_s"] or 0.0 for r in per_run.values()), 1),
        "runs": per_run,
    }


# --------------------------------------------------------------------------- the sweep


@dataclass
class HeadlineResult:
    """Where the outputs went, the finished runs (table order), the failures, the summary."""

    out: Path
    outcomes: list[ArmOutcome]
    failed: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def _described(spec: HeadlineSpec) -> dict[str, Any]:
    """What ``summary.json`` says of the grid: tasks, arms, seeds, budgets, the interval."""
    return {
        "grid": {"tasks": list(spec.tasks), "arms": list(spec.arms), "seeds": spec.seeds},
        "arms": {a: s.model_dump(mode="json") for a, s in spec.arms.items()},
        "budgets": _budgets(spec),
        "interval": (
            f"95 % percentile bootstrap of the mean over seeds ({spec.bootstrap_resamples} "
            f"resamples, seed {spec.bootstrap_seed})"
        ),
    }


def _budgets(spec: HeadlineSpec) -> dict[str, Any]:
    common = {"final_episodes": spec.final_episodes}
    return {t: {**b.model_dump(mode="json"), **common} for t, b in spec.tasks.items()}


def check_budgets(spec: HeadlineSpec, out: Path) -> None:
    """Record each task's budget in ``sweep.json``; refuse a task whose recorded budget differs.

    Raises:
        SweepError: ``out`` holds runs of a task at another budget (they would be mixed).
    """
    path = out / "sweep.json"
    old: dict[str, Any] = json.loads(path.read_text()).get("budgets", {}) if path.is_file() else {}
    new = json.loads(json.dumps(_budgets(spec)))
    for task, budget in new.items():
        if task in old and old[task] != budget:
            raise SweepError(
                f"{out} holds {task} runs at another budget ({old[task]}), not {budget}: "
                "use another --out"
            )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps({"budgets": {**old, **new}}, indent=2) + "\n")


def run_headline(
    spec: HeadlineSpec,
    out: Path,
    executor: Executor,
    *,
    on_result: Callable[[ArmOutcome], None] | None = None,
    on_failure: Callable[[str, str], None] | None = None,
    train: bool = True,
) -> HeadlineResult:
    """Run (or finish) every run of ``spec`` on ``executor``, then write every output.

    Finished runs are read back; a run that raises is listed in ``failed`` and
    the others go on. ``results.csv`` and ``summary.json`` are rewritten after
    every finished run, so a grid stopped part-way (the 2-core grid takes
    several sittings) always holds what it has measured; the plots follow at
    the end. ``train=False`` trains nothing: it writes every output from the
    runs finished so far (``safebot bench envelope --report``).

    Raises:
        SweepError: ``out`` holds a task at another budget.
    """
    t0 = time.perf_counter()
    check_budgets(spec, out)
    grid = jobs(spec, out)
    done = {j.run.key: o for j in grid if (o := read_done(j)) is not None}
    todo = [j for j in grid if j.run.key not in done] if train else []
    failed: dict[str, str] = {}
    trained = 0

    def finished() -> list[ArmOutcome]:
        return [done[j.run.key] for j in grid if j.run.key in done]

    for job, result in executor.map_unordered(run_arm, todo):
        if isinstance(result, BaseException):
            failed[job.run.label] = f"{type(result).__name__}: {result}"
            if on_failure is not None:
                on_failure(job.run.label, failed[job.run.label])
            continue
        _mirror(result)
        done[job.run.key] = result
        trained += result.trained
        write_outputs(spec, out, finished(), failed, trained, time.perf_counter() - t0, plots=False)
        if on_result is not None:
            on_result(result)
    return write_outputs(spec, out, finished(), failed, trained, time.perf_counter() - t0)


def write_outputs(
    spec: HeadlineSpec,
    out: Path,
    outcomes: Sequence[ArmOutcome],
    failed: Mapping[str, str],
    trained: int,
    wall_s: float,
    *,
    plots: bool = True,
) -> HeadlineResult:
    """``results.csv``, then ``summary.json`` recomputed from it, then (``plots``) the plots."""
    from safebot.bench.headline_plots import plot_task

    files = [out / "results.csv", out / "summary.json"]
    write_results(files[0], outcomes)
    rows = read_results(files[0])
    summary = summarise_results(rows, spec)
    summary = {
        "spec": spec.source,
        "command": "safebot " + " ".join(sys.argv[1:]),
        "code": code_commit() | {"runs": runs_code(outcomes)},
        **_described(spec),
        **summary,
        "timing": timing(outcomes, trained, wall_s),
        "failed": dict(failed),
    }
    atomic_write(files[1], json.dumps(summary, indent=2) + "\n")
    files.append(out / "summary.md")
    atomic_write(files[-1], summary_markdown(summary))
    if plots:
        for task in summary["results"]:
            files += plot_task(out, task, rows, summary, spec)
    return HeadlineResult(out, list(outcomes), dict(failed), summary, files)


# --------------------------------------------------------------------------- merging reports


def merge_rows(
    sources: Sequence[Sequence[Mapping[str, str]]],
) -> tuple[list[dict[str, str]], list[set[tuple[str, str]]]]:
    """``results.csv`` rows of several reports, a later one replacing every (task, arm)
    pair it holds; and per source the pairs kept from it."""
    owner: dict[tuple[str, str], int] = {}
    for i, rows in enumerate(sources):
        for r in rows:
            owner[(r["task"], r["arm"])] = i
    merged = [dict(r) for i, rows in enumerate(sources) for r in rows
              if owner[(r["task"], r["arm"])] == i]  # fmt: skip
    kept = [{pair for pair, i in owner.items() if i == k} for k in range(len(sources))]
    return merged, kept


def merge_reports(spec: HeadlineSpec, sources: Sequence[Path], out: Path) -> HeadlineResult:
    """One report from the outputs of several (``results.csv`` and ``summary.json`` in
    each source directory): later sources replace the (task, arm) pairs they hold, as
    when some arms were rerun with a changed scheduler while the others stand.

    ``summary.json`` is recomputed from the merged rows; ``merged_from`` names each
    source's command, code and the pairs kept from it, and the timing keeps the runs
    kept.

    Raises:
        SpecError: a source without ``results.csv`` / ``summary.json``, or an arm the
            spec does not name.
    """
    from safebot.bench.headline_plots import plot_task

    if not sources:
        raise SpecError("merge: no source report directories")
    tables: list[list[dict[str, str]]] = []
    summaries: list[dict[str, Any]] = []
    for src in sources:
        try:
            tables.append(read_results(src / "results.csv"))
            summaries.append(json.loads((src / "summary.json").read_text()))
        except (OSError, ValueError) as err:
            raise SpecError(f"merge: {src}: not a finished report ({err})") from None
    rows, kept = merge_rows(tables)
    unknown = sorted({r["arm"] for r in rows} - set(spec.arms))
    if unknown:
        raise SpecError(f"merge: arm(s) {', '.join(unknown)} not in {spec.source}")
    order = {a: i for i, a in enumerate(spec.arms)}
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    rows.sort(key=lambda r: (tasks.index(r["task"]), order[r["arm"]]))  # stable: seeds, steps
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "results.csv", out / "summary.json", out / "summary.md"]
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=HEADER)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(files[0], buf.getvalue())
    runs: dict[str, Any] = {}
    merged_from = []
    for src, summary, pairs in zip(sources, summaries, kept, strict=True):
        mine = {
            label: t
            for label, t in summary.get("timing", {}).get("runs", {}).items()
            if tuple(label.split("/")[:2]) in pairs
        }
        runs |= mine
        merged_from.append({
            "dir": str(src),
            "command": summary.get("command"),
            "code": summary.get("code"),
            "pairs": sorted(f"{t}/{a}" for t, a in pairs),
            "runs": len(mine),
        })  # fmt: skip
    result = summarise_results(read_results(files[0]), spec)
    summary = {
        "spec": spec.source,
        "command": "safebot " + " ".join(sys.argv[1:]),
        "code": code_commit(),
        "merged_from": merged_from,
        **_described(spec),
        **result,
        "timing": {
            "train_wall_s_total": round(
                sum(r.get("train_wall_s") or 0.0 for r in runs.values()), 1
            ),
            "runs": dict(sorted(runs.items())),
        },
        "failed": {},
    }
    atomic_write(files[1], json.dumps(summary, indent=2) + "\n")
    atomic_write(files[2], summary_markdown(summary))
    for task in summary["results"]:
        files += plot_task(out, task, rows, summary, spec)
    return HeadlineResult(out, [], {}, summary, files)


__all__ = [
    "CODE_FILE",
    "CURVES",
    "FINALS",
    "ArmOutcome",
    "ArmRun",
    "ArmSpec",
    "GoalSpec",
    "HeadlineResult",
    "HeadlineSpec",
    "TaskBudget",
    "check_budgets",
    "jobs",
    "load_spec",
    "merge_reports",
    "merge_rows",
    "read_code",
    "read_done",
    "read_results",
    "result_rows",
    "run_arm",
    "run_headline",
    "runs_code",
    "summarise_results",
    "summary_markdown",
    "timing",
    "write_outputs",
    "write_results",
]
