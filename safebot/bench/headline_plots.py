"""The headline sweep's figures, per task, drawn from ``results.csv`` rows and ``summary.json``.

* ``pareto_<task>.png``: final success against cumulative training harm (log
  axis; a run with no harm is drawn at the axis floor, marked "0"). The
  ``[goal] frontier`` arms (the static widths) are joined as the frontier;
  every other arm is a point with its 95 % intervals on both axes.
* ``curves_<task>.png``: held-out success, harm per evaluation episode and
  cumulative training harm against training steps (mean over seeds, band
  min-max).
* ``width_<task>.png``: envelope width and the Lagrange multiplier against steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safebot.bench.stats import runs_from_rows

if TYPE_CHECKING:
    from safebot.bench.headline import HeadlineSpec

_COLOURS = (
    "tab:gray",
    "tab:brown",
    "tab:blue",
    "tab:cyan",
    "tab:orange",
    "tab:purple",
    "tab:olive",
    "tab:green",
    "tab:red",
    "tab:pink",
)
_MARKERS = ("X", "P", "s", "s", "s", "^", "v", "o", "D", "*")


def _styles(arms: Sequence[str]) -> dict[str, tuple[str, str]]:
    # by position in the spec, so one arm keeps its colour across the three figures
    return {
        a: (_COLOURS[i % len(_COLOURS)], _MARKERS[i % len(_MARKERS)]) for i, a in enumerate(arms)
    }


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _floor(per_arm: Mapping[str, Mapping[str, Any]]) -> float:
    # the log axis's floor for zero harm: a decade below the smallest positive value
    lows = [
        v
        for e in per_arm.values()
        for v in (e["cumulative_training_harm"]["lo"], e["cumulative_training_harm"]["mean"])
        if v is not None and v > 0
    ]
    return 10.0 ** math.floor(math.log10(min(lows))) / 10.0 if lows else 0.1


def _point(iv: Mapping[str, Any], floor: float) -> tuple[float, list[list[float]]]:
    m = max(iv["mean"], floor)
    lo, hi = max(iv["lo"], floor), max(iv["hi"], floor)
    return m, [[m - lo], [hi - m]]


def plot_pareto(path: Path, task: str, per_arm: Mapping[str, Any], frontier: Sequence[str]) -> Path:
    """Final success against cumulative training harm: static frontier line, other arms points."""
    plt = _pyplot()
    style = _styles(list(per_arm))
    floor = _floor(per_arm)
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    present = [a for a, e in per_arm.items() if e["final_success"]["mean"] is not None]
    line = sorted(
        (a for a in frontier if a in present),
        key=lambda a: per_arm[a]["cumulative_training_harm"]["mean"],
    )
    if line:
        xs = [max(per_arm[a]["cumulative_training_harm"]["mean"], floor) for a in line]
        ys = [per_arm[a]["final_success"]["mean"] for a in line]
        ax.plot(xs, ys, "--", color="black", alpha=0.5, label="static frontier")
    for arm in present:
        e = per_arm[arm]
        x, xerr = _point(e["cumulative_training_harm"], floor)
        s = e["final_success"]
        yerr = [[s["mean"] - s["lo"]], [s["hi"] - s["mean"]]]
        colour, marker = style[arm]
        ax.errorbar(
            [x], [s["mean"]], xerr=xerr, yerr=yerr, fmt=marker, color=colour, capsize=3,
            markersize=8, markerfacecolor="none" if arm in frontier else colour, label=arm,
        )  # fmt: skip
    ax.set_xscale("log")
    ax.axvline(floor, color="gray", linewidth=0.5)
    ax.annotate("0", (floor, 0.0), textcoords="offset points", xytext=(2, 2), fontsize=8)
    ax.set_xlabel("cumulative training harm (events, log; 0 drawn at the left line)")
    ax.set_ylabel("final success (best model, fresh episodes)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"{task}: mean and 95 % bootstrap interval over seeds")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _band(
    curves: Iterable[Sequence[tuple[int, float]]],
) -> tuple[list[int], list[float], list[float], list[float]]:
    by_step: dict[int, list[float]] = {}
    for curve in curves:
        for step, v in curve:
            by_step.setdefault(step, []).append(v)
    steps = sorted(by_step)
    mean = [math.fsum(by_step[s]) / len(by_step[s]) for s in steps]
    return steps, mean, [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps]


def plot_curves(
    path: Path,
    task: str,
    rows: Iterable[Mapping[str, Any]],
    arms: Sequence[str],
    metrics: Sequence[tuple[str, str]],
) -> Path:
    """One panel per ``(metric, label)`` against steps: mean over seeds, band min-max."""
    plt = _pyplot()
    runs = {k: r for k, r in runs_from_rows(rows).items() if k[0] == task}
    style = _styles(arms)
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(4.6 * len(metrics) + 1.8, 3.6), squeeze=False
    )
    for ax, (metric, label) in zip(axes[0], metrics, strict=True):
        for arm in arms:
            curves = [r.curves.get(metric, []) for (_, a, _), r in runs.items() if a == arm]
            if not any(curves):
                continue
            steps, mean, lo, hi = _band(curves)
            colour, marker = style[arm]
            ax.plot(steps, mean, marker=marker, color=colour, markersize=4, label=arm)
            ax.fill_between(steps, lo, hi, color=colour, alpha=0.12, linewidth=0)
        if metric == "cumulative_training_harm":
            ax.set_yscale("symlog", linthresh=10.0)  # shielded runs near 0, unshielded 1000s
        ax.set_title(f"{task}: {label}")
        ax.set_xlabel("training steps")
        ax.grid(alpha=0.3)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="center right", fontsize=7)
    fig.tight_layout(rect=(0.0, 0.0, 1.0 - 1.6 / fig.get_figwidth(), 1.0))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_task(
    out: Path,
    task: str,
    rows: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    spec: HeadlineSpec,
) -> list[Path]:
    """The three figures of one task, in ``out``."""
    arms = list(spec.arms)
    frontier = spec.goal.frontier if spec.goal is not None else []
    return [
        plot_pareto(out / f"pareto_{task}.png", task, summary["results"][task], frontier),
        plot_curves(
            out / f"curves_{task}.png",
            task,
            rows,
            arms,
            [
                ("success_rate", "held-out success"),
                ("harm_per_episode", "held-out harm per episode"),
                ("cumulative_training_harm", "cumulative training harm (symlog)"),
            ],
        ),
        plot_curves(
            out / f"width_{task}.png",
            task,
            rows,
            arms,
            [("width", "envelope width"), ("lambda", "Lagrange multiplier")],
        ),
    ]


__all__ = ["plot_curves", "plot_pareto", "plot_task"]
