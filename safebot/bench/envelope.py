"""Envelope-expansion benchmark: tasks x schedulers x seeds, on a local pool or on Ray.

Each run is one :func:`safebot.train.train` call in its own directory
``OUT/runs/<task>/<scheduler>/seed<k>``; its held-out evaluation rows
(``metrics.csv``) are the learning curves, and five totals summarise it:

=================  ===========================================================
``train_cost``     cumulative physics cost (damage events) during training
``final_success``  held-out success rate of the last evaluation
``final_return``   mean held-out return of the last evaluation
``steps_to_80``    first evaluation step with success >= 80 % (``None`` if never)
``final_width``    envelope width at the end (mean over limit kinds)
=================  ===========================================================

The sweep writes ``results.csv`` (long format: task, scheduler, seed, step,
metric, value; curves and totals), ``summary.json`` (per task x scheduler: mean
and 95 % Student-t interval over seeds of every total, plus the goal check),
``summary.md`` and PNG plots. A killed sweep restarts where it stopped: a run
with a ``summary.json`` is finished and is not retrained, a run with a
``config.toml`` resumes from its last checkpoint.

Scheduler names of the benchmark (:data:`SCHEDULERS`) map onto ``train``'s
shield mode, reward constraint and scheduler (:mod:`safebot.modes`): ``none``
(shield off), ``penalty`` (shield off, ``r - cost_penalty * cost``),
``static-tight`` (static, width 0), ``static-loose`` (static, width 1),
``linear``, ``pi`` and ``competence``.

The intervals need no SciPy (a plain install has none): :func:`t_quantile`
computes Student-t quantiles in closed form.

Example:
    >>> cfg = SweepConfig(tasks=("reach",), schedulers=("static-tight", "competence"),
    ...                   seeds=(0, 1), steps=4000, out=Path("bench/envelope"))
    >>> result = sweep(cfg, make_executor("local", workers=2))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from safebot.bench.executors import Executor, LocalExecutor
from safebot.modes import RewardConstraint, SchedulerKind, ShieldMode


class BenchScheduler(NamedTuple):
    """What a benchmark scheduler name asks of :func:`safebot.train.train`."""

    shield: ShieldMode
    constraint: RewardConstraint
    scheduler: SchedulerKind | None  # None: unshielded, fixed at the caps
    width: float | None  # fixed width of a static scheduler


_OFF, _ON = ShieldMode.OFF, ShieldMode.ON
_NONE, _PENALTY = RewardConstraint.NONE, RewardConstraint.PENALTY
# benchmark name -> the run it trains (the names are the columns of every output)
SCHEDULERS: dict[str, BenchScheduler] = {
    "none": BenchScheduler(_OFF, _NONE, None, None),
    "penalty": BenchScheduler(_OFF, _PENALTY, None, None),
    "static-tight": BenchScheduler(_ON, _NONE, SchedulerKind.STATIC, 0.0),
    "static-loose": BenchScheduler(_ON, _NONE, SchedulerKind.STATIC, 1.0),
    "linear": BenchScheduler(_ON, _NONE, SchedulerKind.LINEAR, None),
    "pi": BenchScheduler(_ON, _NONE, SchedulerKind.PI, None),
    "competence": BenchScheduler(_ON, _NONE, SchedulerKind.COMPETENCE, None),
}
# the learning-curve columns of metrics.csv that go into results.csv
CURVE_METRICS = (
    "width",
    "success_rate",
    "mean_return",
    "cost_rate",
    "intervention_rate",
    "mean_correction",
    "train_cost",
)
TOTALS = ("train_cost", "final_success", "final_return", "steps_to_80", "final_width")
TOTAL_LABELS = {
    "final_success": "final success",
    "final_return": "final return",
    "train_cost": "training cost",
    "steps_to_80": "steps to 80 %",
    "final_width": "final width",
}
SUCCESS_MARK = 0.8
# Learner settings forced on every task of the sweep. Empty: every shipped task has
# its own tuned [train] section (Push and Press learn from scripted demonstrations,
# with 256x256 nets), and the sweep compares schedulers on each task's own learner.
BENCH_TRAIN: dict[str, Any] = {}
# The goal of the issue: competence reaches >= 95 % of static-loose's final
# success with <= 25 % of its cumulative training cost, and beats static-tight.
GOAL_SUCCESS_FRACTION = 0.95
GOAL_COST_FRACTION = 0.25


class SweepError(ValueError):
    """The sweep cannot start (bad grid, an output directory of another budget)."""


# --------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid; picklable, so it travels to a worker process or a Ray task."""

    task: str
    scheduler: str
    seed: int
    steps: int
    run_dir: str
    eval_every: int | None = None
    eval_episodes: int | None = None
    checkpoint_every: int | None = None
    cost_penalty: float = 1.0
    train: tuple[tuple[str, Any], ...] = ()
    # what the run trains; None: the benchmark name ``scheduler`` in SCHEDULERS (a sweep
    # spec's arms carry their own, safebot.bench.headline)
    arm: BenchScheduler | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.task, self.scheduler, self.seed)

    @property
    def task_name(self) -> str:
        """``reach`` for ``reach`` and for ``path/to/reach.toml``: the name in every output."""
        return Path(self.task).stem

    @property
    def label(self) -> str:
        return f"{self.task_name}/{self.scheduler}/seed{self.seed}"


class RunTotals(NamedTuple):
    """The per-run numbers the summary aggregates (see the module docstring)."""

    train_cost: float
    final_success: float
    final_return: float
    steps_to_80: int | None
    final_width: float


@dataclass(frozen=True)
class RunOutcome:
    """What a worker sends back: the run's files as text (mirrored on the driver) and its totals."""

    spec: RunSpec
    metrics_csv: str
    summary_json: str
    totals: RunTotals
    trained: bool  # False: the run was already finished and was only read back
    wall_s: float

    @property
    def curves(self) -> list[dict[str, float]]:
        return parse_metrics(self.metrics_csv)


def parse_metrics(text: str) -> list[dict[str, float]]:
    """The numeric columns of a ``metrics.csv`` (the ``reason`` text is dropped)."""
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        rows.append({k: float(v) for k, v in r.items() if k != "reason" and v not in ("", None)})
    return rows


def run_totals(rows: Sequence[Mapping[str, float]], mark: float = SUCCESS_MARK) -> RunTotals:
    """Totals of one run from its evaluation rows (in step order; the last row is the final eval).

    Raises:
        ValueError: no rows (the run never evaluated).
    """
    if not rows:
        raise ValueError("a run without evaluation rows has no totals")
    last = rows[-1]
    reached = next((int(r["step"]) for r in rows if r["success_rate"] >= mark), None)
    return RunTotals(
        train_cost=float(last["train_cost"]),
        final_success=float(last["success_rate"]),
        final_return=float(last["mean_return"]),
        steps_to_80=reached,
        final_width=float(last["width"]),
    )


def task_spec_for(run: RunSpec) -> Any:
    """The task spec a run trains: the shipped (or given) task with the sweep's learner settings."""
    from safebot.spec import load_task

    spec = load_task(run.task)
    if run.train:
        spec = spec.model_copy(update={"train": spec.train.model_copy(update=dict(run.train))})
    return spec


def run_one(run: RunSpec) -> RunOutcome:
    """Train one run (or resume it, or read it back when finished) and return its outcome.

    Module-level so both executors can pickle it. Training is single-threaded:
    ``train`` sets torch to the task's ``torch_threads`` (1) and the executors
    pin BLAS/numba before anything is imported.
    """
    from safebot.train import RunOptions, train

    run_dir = Path(run.run_dir)
    t0 = time.perf_counter()
    trained = False
    if not (run_dir / "summary.json").is_file():
        bench = run.arm if run.arm is not None else SCHEDULERS[run.scheduler]
        opts = RunOptions(
            steps=run.steps,
            scheduler=bench.scheduler,
            shield=bench.shield,
            constraint=bench.constraint,
            width=bench.width,
            seed=run.seed,
            eval_every=run.eval_every,
            eval_episodes=run.eval_episodes,
            checkpoint_every=run.checkpoint_every,
            cost_penalty=run.cost_penalty,
        )
        resume = (run_dir / "config.toml").is_file()
        train(
            task_spec_for(run), opts, out=run_dir, resume=resume, force=not resume, progress=False
        )
        trained = True
    outcome = read_finished(run)
    if outcome is None:
        raise RuntimeError(f"{run_dir}: training ended without summary.json and metrics.csv")
    return replace(outcome, trained=trained, wall_s=time.perf_counter() - t0)


def read_finished(run: RunSpec) -> RunOutcome | None:
    """The outcome of a finished run from its files, or ``None`` when it has not finished."""
    run_dir = Path(run.run_dir)
    if not (run_dir / "summary.json").is_file() or not (run_dir / "metrics.csv").is_file():
        return None
    metrics = (run_dir / "metrics.csv").read_text()
    return RunOutcome(
        spec=run,
        metrics_csv=metrics,
        summary_json=(run_dir / "summary.json").read_text(),
        totals=run_totals(parse_metrics(metrics)),
        trained=False,
        wall_s=0.0,
    )


# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class SweepConfig:
    """The grid and the per-run budget of a sweep (``None``: the task's ``[train]`` default)."""

    tasks: tuple[str, ...]
    schedulers: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    out: Path
    eval_every: int | None = None
    eval_episodes: int | None = None
    checkpoint_every: int | None = None
    cost_penalty: float = 1.0
    train: tuple[tuple[str, Any], ...] = tuple(BENCH_TRAIN.items())

    def validate(self) -> None:
        from safebot.config import SpecError
        from safebot.spec import load_task

        if not self.tasks or not self.schedulers or not self.seeds:
            raise SweepError("the grid is empty: give at least one task, scheduler and seed")
        unknown = [s for s in self.schedulers if s not in SCHEDULERS]
        if unknown:
            raise SweepError(
                f"unknown scheduler(s) {', '.join(unknown)}; choose from {', '.join(SCHEDULERS)}"
            )
        for name, seq in (("task", self.tasks), ("scheduler", self.schedulers)):
            if len(set(seq)) != len(seq):
                raise SweepError(f"a {name} is listed twice: {', '.join(seq)}")
        if any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise SweepError(f"seeds must be distinct and >= 0, got {list(self.seeds)}")
        for name in ("steps", "eval_every", "eval_episodes", "checkpoint_every"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise SweepError(f"--{name.replace('_', '-')} must be positive, got {v}")
        for task in self.tasks:
            try:
                load_task(task)
            except SpecError as err:
                raise SweepError(str(err)) from None

    def budget(self) -> dict[str, Any]:
        """What every run of the sweep shares; a restart must use the same."""
        return {
            "steps": self.steps,
            "eval_every": self.eval_every,
            "eval_episodes": self.eval_episodes,
            "checkpoint_every": self.checkpoint_every,
            "cost_penalty": self.cost_penalty,
            "train": {k: v for k, v in self.train},
        }

    def runs(self) -> list[RunSpec]:
        """Every run, in table order (task, scheduler, seed)."""
        out = self.out.resolve()
        return [
            RunSpec(
                task=task,
                scheduler=sched,
                seed=seed,
                steps=self.steps,
                run_dir=str(out / "runs" / Path(task).stem / sched / f"seed{seed}"),
                eval_every=self.eval_every,
                eval_episodes=self.eval_episodes,
                checkpoint_every=self.checkpoint_every,
                cost_penalty=self.cost_penalty,
                train=self.train,
            )
            for task in self.tasks
            for sched in self.schedulers
            for seed in self.seeds
        ]


@dataclass
class SweepResult:
    """Where the outputs went, the per-run outcomes (table order) and the runs that failed."""

    out: Path
    outcomes: list[RunOutcome]
    failed: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------- statistics


class Interval(NamedTuple):
    """Mean over seeds and its 95 % Student-t interval (``lo``/``hi`` are ``None`` for one seed)."""

    mean: float | None
    lo: float | None
    hi: float | None
    n: int


def _t_central(theta: float, df: int) -> float:
    """P(|T| < sqrt(df) tan(theta)) for Student's t with integer ``df``.

    The finite series of Abramowitz & Stegun 26.7.3 (odd ``df``) and 26.7.4
    (even ``df``) in theta = atan(t / sqrt(df)).
    """
    s, c = math.sin(theta), math.cos(theta)
    if df % 2 == 0:  # sin(theta) * (1 + 1/2 c^2 + 1*3/(2*4) c^4 + ... up to c^(df-2))
        total, term = 0.0, 1.0
        for j in range(df // 2):
            total += term
            term *= (2 * j + 1) / (2 * j + 2) * c * c
        return s * total
    # odd: 2/pi * (theta + sin(theta) * (c + 2/3 c^3 + ... up to c^(df-2)))
    total, term = 0.0, c
    for j in range((df - 1) // 2):
        total += term
        term *= (2 * j + 2) / (2 * j + 3) * c * c
    return 2.0 / math.pi * (theta + s * total)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` (integer >= 1) degrees of freedom.

    Bisection on the closed-form CDF to double precision; agrees with
    ``scipy.stats.t.ppf`` to ~1e-12 (tested), without needing SciPy.

    Raises:
        ValueError: ``p`` outside (0, 1) or ``df`` < 1.
    """
    if not 0.0 < p < 1.0 or int(df) != df or df < 1:
        raise ValueError(f"t_quantile needs 0 < p < 1 and an integer df >= 1, got p={p}, df={df}")
    if p == 0.5:
        return 0.0
    central = abs(2.0 * p - 1.0)  # P(|T| < t) for the upper tail's t
    lo, hi = 0.0, math.pi / 2
    for _ in range(100):  # theta in [0, pi/2); halving 100 times is below one ulp
        mid = 0.5 * (lo + hi)
        if _t_central(mid, int(df)) < central:
            lo = mid
        else:
            hi = mid
    t = math.sqrt(df) * math.tan(0.5 * (lo + hi))
    return t if p > 0.5 else -t


def mean_interval(values: Iterable[float], level: float = 0.95) -> Interval:
    """Mean and two-sided Student-t confidence interval of the mean.

    With 2-3 seeds the interval is wide (t = 12.7 for two seeds): that is the
    honest uncertainty of so few seeds, not a bug.
    """
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return Interval(None, None, None, 0)
    mean = math.fsum(xs) / n
    if n == 1:
        return Interval(mean, None, None, 1)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def summarise(outcomes: Sequence[RunOutcome]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per task x scheduler: seeds, and for every total its mean, 95 % interval and values.

    ``steps_to_80`` is averaged over the seeds that reached 80 % (``reached`` of
    ``n`` did); its mean is ``None`` when none did.
    """
    groups: dict[tuple[str, str], list[RunOutcome]] = {}
    for o in outcomes:
        groups.setdefault((o.spec.task_name, o.spec.scheduler), []).append(o)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (task, sched), runs in groups.items():
        runs = sorted(runs, key=lambda o: o.spec.seed)
        entry: dict[str, Any] = {"seeds": [o.spec.seed for o in runs]}
        for name in TOTALS:
            vals = [getattr(o.totals, name) for o in runs]
            present = [v for v in vals if v is not None]
            iv = mean_interval(present)
            entry[name] = {**iv._asdict(), "values": vals}
            if name == "steps_to_80":
                entry[name]["reached"] = len(present)
                entry[name]["n"] = len(vals)
        out.setdefault(task, {})[sched] = entry
    return out


def goal_check(per_sched: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The issue's goal on seed means for one task; ``None`` without competence and both statics."""
    need = ("competence", "static-loose", "static-tight")
    if any(s not in per_sched for s in need):
        return None
    comp, loose, tight = (per_sched[s] for s in need)

    def mean(entry: Mapping[str, Any], name: str) -> float:
        return float(entry[name]["mean"])

    succ_c, succ_l, succ_t = (mean(e, "final_success") for e in (comp, loose, tight))
    cost_c, cost_l = mean(comp, "train_cost"), mean(loose, "train_cost")
    success_ok = succ_c >= GOAL_SUCCESS_FRACTION * succ_l
    cost_ok = cost_c <= GOAL_COST_FRACTION * cost_l
    beats_tight = succ_c > succ_t
    return {
        "success_vs_loose": succ_c / succ_l if succ_l > 0 else None,
        "cost_vs_loose": cost_c / cost_l if cost_l > 0 else None,
        "success_ok": success_ok,
        "cost_ok": cost_ok,
        "beats_tight": beats_tight,
        "met": success_ok and cost_ok and beats_tight,
        "note": "on means over seeds; see the intervals before calling a difference real",
    }


# --------------------------------------------------------------------------- outputs


def results_rows(outcomes: Sequence[RunOutcome]) -> list[tuple[str, str, int, int, str, Any]]:
    """Long-format rows: every curve metric at every evaluation, then the run's totals.

    Totals carry the run's final step; ``steps_to_80`` of a run that never
    reached 80 % has an empty value.
    """
    rows: list[tuple[str, str, int, int, str, Any]] = []
    for o in outcomes:
        s = o.spec
        curves = o.curves
        for r in curves:
            for m in CURVE_METRICS:
                rows.append((s.task_name, s.scheduler, s.seed, int(r["step"]), m, r[m]))
        final_step = int(curves[-1]["step"])
        for name in TOTALS:
            v = getattr(o.totals, name)
            rows.append((s.task_name, s.scheduler, s.seed, final_step, f"total_{name}", v))
    return rows


def write_results_csv(path: Path, outcomes: Sequence[RunOutcome]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("task", "scheduler", "seed", "step", "metric", "value"))
        for row in results_rows(outcomes):
            w.writerow(("" if v is None else (repr(v) if isinstance(v, float) else v)) for v in row)


def _fmt(iv: Mapping[str, Any], digits: int) -> str:
    if iv["mean"] is None:
        return "—"
    text = f"{iv['mean']:.{digits}f}"
    if iv["lo"] is not None:
        text += f" [{iv['lo']:.{digits}f}, {iv['hi']:.{digits}f}]"
    return text


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """One table per task (mean [95 % interval] over seeds) and the goal check."""
    lines = []
    budget = summary["budget"]
    lines.append(f"Budget per run: {budget['steps']} training steps.")
    for task, ls in summary.get("learner", {}).items():
        lines.append(
            f"{task}: {ls['algo'].upper()}{'+HER' if ls['her'] else ''}, nets {ls['net_arch']}, "
            f"learning starts {ls['learning_starts']}, batch {ls['batch_size']}, "
            f"{ls['gradient_steps']} gradient step(s) every {ls['train_freq']} env step(s), "
            f"{ls['n_envs']} env(s); held-out evaluation every {ls['eval_every']} steps "
            f"on {ls['eval_episodes']} episodes."
        )
    lines.append("Cells: mean [95 % t-interval] over seeds.")
    for task, per in summary["results"].items():
        lines += [
            "",
            f"### {task}",
            "",
            "| scheduler | seeds | final success | final return | training cost "
            "| steps to 80 % (reached) | final width |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for sched, e in per.items():
            reach = e["steps_to_80"]
            lines.append(
                f"| {sched} | {len(e['seeds'])} | {_fmt(e['final_success'], 2)} "
                f"| {_fmt(e['final_return'], 1)} | {_fmt(e['train_cost'], 1)} "
                f"| {_fmt(reach, 0)} ({reach['reached']}/{reach['n']}) "
                f"| {_fmt(e['final_width'], 2)} |"
            )
        goal = summary["goal"].get(task)
        if goal is not None:
            sv = goal["success_vs_loose"]
            cv = goal["cost_vs_loose"]
            lines += [
                "",
                f"Goal (competence vs static-loose / static-tight, on means): "
                f"success {'n/a' if sv is None else f'{sv:.0%}'} of loose "
                f"(needs >= {GOAL_SUCCESS_FRACTION:.0%}: {'yes' if goal['success_ok'] else 'no'}), "
                f"training cost {'n/a' if cv is None else f'{cv:.0%}'} of loose "
                f"(needs <= {GOAL_COST_FRACTION:.0%}: {'yes' if goal['cost_ok'] else 'no'}), "
                f"beats static-tight: {'yes' if goal['beats_tight'] else 'no'} "
                f"=> **goal {'met' if goal['met'] else 'not met'}**.",
            ]
    if summary.get("failed"):
        lines += ["", "Failed runs: " + ", ".join(sorted(summary["failed"]))]
    return "\n".join(lines) + "\n"


# colour, marker, line style per scheduler: schedulers that coincide (competence
# stuck at width 0 is static-tight, seed for seed) stay visible on top of each other
_STYLE: dict[str, tuple[str, str, str]] = {
    "none": ("tab:gray", "X", ":"),
    "penalty": ("tab:brown", "P", ":"),
    "static-tight": ("tab:blue", "s", "--"),
    "static-loose": ("tab:orange", "D", "--"),
    "linear": ("tab:purple", "^", "-."),
    "pi": ("tab:olive", "v", "-."),
    "competence": ("tab:green", "o", "-"),
}


def _style(sched: str) -> tuple[str, str, str]:
    return _STYLE.get(sched, ("black", ".", "-"))


def _mean_curve(
    runs: Sequence[RunOutcome], metric: str
) -> tuple[list[float], list[float], list[float], list[float]]:
    # mean, min and max over seeds at every evaluation step any seed logged
    by_step: dict[float, list[float]] = {}
    for o in runs:
        for r in o.curves:
            by_step.setdefault(r["step"], []).append(r[metric])
    steps = sorted(by_step)
    return (
        steps,
        [math.fsum(by_step[s]) / len(by_step[s]) for s in steps],
        [min(by_step[s]) for s in steps],
        [max(by_step[s]) for s in steps],
    )


def plot_curves(
    path: Path, outcomes: Sequence[RunOutcome], metrics: Sequence[tuple[str, str]], title: str
) -> Path:
    """Rows: tasks; columns: ``metrics`` ``(column, label)`` against steps; mean line, min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(o.spec.task_name for o in outcomes))
    fig, axes = plt.subplots(
        len(tasks),
        len(metrics),
        figsize=(4.6 * len(metrics) + 1.6, 3.2 * len(tasks) + 0.4),
        squeeze=False,
        sharex="row",
    )
    for i, task in enumerate(tasks):
        mine = [o for o in outcomes if o.spec.task_name == task]
        scheds = list(dict.fromkeys(o.spec.scheduler for o in mine))
        for j, (metric, label) in enumerate(metrics):
            ax = axes[i][j]
            for sched in scheds:
                runs = [o for o in mine if o.spec.scheduler == sched]
                steps, mean, lo, hi = _mean_curve(runs, metric)
                color, marker, line = _style(sched)
                ax.plot(
                    steps,
                    mean,
                    line,
                    marker=marker,
                    color=color,
                    label=sched,
                    markersize=5,
                    markerfacecolor="none",
                    alpha=0.9,
                )
                if len(runs) > 1:
                    ax.fill_between(steps, lo, hi, color=color, alpha=0.15, linewidth=0)
            if metric == "train_cost":
                ax.set_yscale("symlog", linthresh=10.0)  # shielded runs near 0, unshielded 1000s
            ax.set_title(f"{task}: {label}")
            ax.set_xlabel("training steps")
            ax.grid(alpha=0.3)
    fig.legend(*axes[0][-1].get_legend_handles_labels(), loc="center right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0.0, 0.0, 1.0 - 1.5 / fig.get_figwidth(), 1.0))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _err(iv: Mapping[str, Any], low: float, high: float) -> list[list[float]]:
    # drawn clipped to what the quantity can be (t-intervals of 2-3 seeds overshoot
    # [0, 1] and go below zero); summary.json keeps them unclipped
    if iv["lo"] is None:
        return [[0.0], [0.0]]
    m = iv["mean"]
    return [[m - max(iv["lo"], low)], [min(iv["hi"], high) - m]]


def plot_tradeoff(path: Path, summary: Mapping[str, Any]) -> Path:
    """Final success against cumulative training cost, one point per scheduler, 95 % error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_task = summary["results"]
    fig, axes = plt.subplots(
        1, len(per_task), figsize=(5.6 * len(per_task) + 1.6, 4.4), squeeze=False
    )
    for ax, (task, per) in zip(axes[0], per_task.items(), strict=True):
        for sched, e in per.items():
            c, s = e["train_cost"], e["final_success"]

            ax.errorbar(
                [c["mean"]],
                [s["mean"]],
                xerr=_err(c, 0.0, math.inf),
                yerr=_err(s, 0.0, 1.0),
                fmt=_style(sched)[1],
                markersize=8,
                markerfacecolor="none",
                capsize=4,
                color=_style(sched)[0],
                label=sched,
            )
        ax.set_xscale("symlog", linthresh=10.0)  # costs span 0 to thousands
        ax.set_xlim(left=-1.0)
        ax.set_xlabel("cumulative training cost (damage events, symlog)")
        ax.set_ylabel("final held-out success")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(f"{task}: mean and 95 % interval over seeds")
        ax.grid(alpha=0.3)
    fig.legend(*axes[0][-1].get_legend_handles_labels(), loc="center right", fontsize=8)
    fig.tight_layout(rect=(0.0, 0.0, 1.0 - 1.5 / fig.get_figwidth(), 1.0))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learner_settings(cfg: SweepConfig) -> dict[str, dict[str, Any]]:
    """Per task, the learner and evaluation settings its runs used (task defaults resolved)."""
    out: dict[str, dict[str, Any]] = {}
    for run in cfg.runs():
        if run.task_name in out:
            continue
        t = task_spec_for(run).train
        out[run.task_name] = {
            "algo": t.algo,
            "her": t.her and t.algo == "sac",
            "net_arch": list(t.net_arch),
            "learning_starts": t.learning_starts,
            "batch_size": t.batch_size,
            "train_freq": t.train_freq,
            "gradient_steps": t.gradient_steps,
            "n_envs": t.n_envs,
            "eval_every": cfg.eval_every or t.eval_every,
            "eval_episodes": cfg.eval_episodes or t.eval_episodes,
        }
    return out


def write_outputs(
    cfg: SweepConfig, outcomes: Sequence[RunOutcome], failed: Mapping[str, str]
) -> tuple[dict[str, Any], list[Path]]:
    """``results.csv``, ``summary.json``, ``summary.md`` and the plots, in ``cfg.out``."""
    out = cfg.out
    results = summarise(outcomes)
    summary: dict[str, Any] = {
        "grid": {
            "tasks": list(cfg.tasks),
            "schedulers": list(cfg.schedulers),
            "seeds": list(cfg.seeds),
        },
        "budget": cfg.budget(),
        "learner": learner_settings(cfg),
        "interval": "95 % Student-t interval of the mean over seeds (lo/hi null for one seed)",
        "results": results,
        "goal": {task: goal_check(per) for task, per in results.items()},
        # training wall time of each run as train() logged it (summed over resumes)
        "run_wall_s": {o.spec.label: o.curves[-1].get("wall_s") for o in outcomes},
        "failed": dict(failed),
    }
    files = [out / "results.csv", out / "summary.json", out / "summary.md"]
    write_results_csv(files[0], outcomes)
    files[1].write_text(json.dumps(summary, indent=2) + "\n")
    files[2].write_text(summary_markdown(summary))
    if outcomes:
        files.append(
            plot_curves(
                out / "envelope_width.png",
                outcomes,
                [("width", "envelope width")],
                "envelope width (mean over seeds, band: min-max)",
            )
        )
        files.append(
            plot_curves(
                out / "envelope_curves.png",
                outcomes,
                [
                    ("success_rate", "held-out success"),
                    ("train_cost", "cumulative training cost (symlog)"),
                    ("cost_rate", "held-out cost per step"),
                ],
                "learning curves (mean over seeds, band: min-max)",
            )
        )
        files.append(plot_tradeoff(out / "envelope_tradeoff.png", summary))
    return summary, files


# --------------------------------------------------------------------------- the sweep


def _mirror(outcome: RunOutcome) -> None:
    # on a multi-machine Ray cluster the run directory is on a worker; keep the
    # two files the driver needs to aggregate and to skip the run on a restart
    run_dir = Path(outcome.spec.run_dir)
    if (run_dir / "summary.json").is_file():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.csv").write_text(outcome.metrics_csv)
    (run_dir / "summary.json").write_text(outcome.summary_json)


def _check_budget(cfg: SweepConfig) -> None:
    path = cfg.out / "sweep.json"
    budget = json.loads(json.dumps(cfg.budget()))  # as it reads back
    if path.is_file():
        old = json.loads(path.read_text()).get("budget")
        if old != budget:
            raise SweepError(
                f"{cfg.out} holds a sweep with another budget ({old}); its finished runs "
                f"would be mixed with runs of {budget}. Use another --out."
            )
    cfg.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"budget": budget}, indent=2) + "\n")


def _describe(o: RunOutcome) -> str:
    t = o.totals
    how = f"{o.wall_s:.0f} s" if o.trained else "already done"
    return (
        f"{o.spec.label}: success {t.final_success:.0%}, training cost {t.train_cost:.0f}, "
        f"width {t.final_width:.2f} ({how})"
    )


def sweep(
    cfg: SweepConfig,
    executor: Executor | None = None,
    *,
    progress: bool = True,
    on_result: Callable[[RunOutcome], None] | None = None,
) -> SweepResult:
    """Run (or finish) every run of the grid on ``executor`` and write the outputs.

    Finished runs are read back, not retrained. A run that raises is reported in
    ``SweepResult.failed`` (and ``summary.json``) while the others go on.

    Raises:
        SweepError: an invalid grid, or ``cfg.out`` holding a sweep of another budget.
    """
    cfg.validate()
    _check_budget(cfg)
    executor = executor if executor is not None else LocalExecutor()
    runs = cfg.runs()
    done: dict[tuple[str, str, int], RunOutcome] = {}
    for run in runs:
        finished = read_finished(run)
        if finished is not None:
            done[run.key] = finished
    todo = [r for r in runs if r.key not in done]
    failed: dict[str, str] = {}

    bar: Any = None
    if progress:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        bar = Progress(
            TextColumn(f"[bold]envelope sweep ({executor.name} x{executor.workers})"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[last]}"),
        )
        bar.start()
        last = f"{len(done)} run(s) already finished" if done else "first runs training..."
        task_id = bar.add_task("runs", total=len(runs), completed=len(done), last=last)
    try:
        for run, result in executor.map_unordered(run_one, todo):
            if isinstance(result, BaseException):
                failed[run.label] = f"{type(result).__name__}: {result}"
                msg = f"[red]{run.label} failed: {failed[run.label][:80]}"
            else:
                _mirror(result)
                done[run.key] = result
                msg = _describe(result)
                if on_result is not None:
                    on_result(result)
            if bar is not None:
                bar.update(task_id, advance=1, last=msg)
    finally:
        if bar is not None:
            bar.stop()
    outcomes = [done[r.key] for r in runs if r.key in done]
    summary, files = write_outputs(cfg, outcomes, failed)
    return SweepResult(cfg.out, outcomes, failed, summary, files)


__all__ = [
    "BENCH_TRAIN",
    "CURVE_METRICS",
    "SCHEDULERS",
    "TOTALS",
    "BenchScheduler",
    "Interval",
    "RunOutcome",
    "RunSpec",
    "RunTotals",
    "SweepConfig",
    "SweepError",
    "SweepResult",
    "goal_check",
    "mean_interval",
    "parse_metrics",
    "read_finished",
    "results_rows",
    "run_one",
    "run_totals",
    "summarise",
    "sweep",
    "t_quantile",
    "write_outputs",
]
