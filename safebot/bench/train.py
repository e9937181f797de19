"""``safebot bench train``: the project's SAC recipe against plain SB3-torch SAC+HER, side by side.

Both arms are whole ``safebot train`` runs of the same task on the same shielded
env, scheduler, evaluation schedule, budget and seed, so "env steps per second"
includes everything a user waits for (env and shield, updates, held-out
evaluations, checkpoints). They differ only in the learner:

* ``safebot``: the task's ``[train]`` recipe as shipped (Reach: SBX's JAX SAC,
  four gradient steps per four env steps in one jitted call, and
  :class:`~safebot.train.buffers.HarmHerReplayBuffer`);
* ``sb3``: the recipe the project trained before, plain SB3: torch SAC, one
  gradient step after every env step, SB3's ``HerReplayBuffer`` copying every
  info dict (it has to, for the shaped reward).

The two run at once, one process and one thread each (the local executor), so
a busy machine slows both alike and the ratio is measured side by side. Each arm
is an ordinary run directory under ``--out``: a restart resumes unfinished ones
and reads finished ones back. The arms then get the same final evaluation (50
fresh episodes of the best model, :func:`safebot.train.evaluate_run`).
"""

from __future__ import annotations

import csv
import functools
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safebot.io import atomic_write
from safebot.resources import code_label

#: the plain-SB3 baseline's learner keys, over the task's ``[train]``
BASELINE_KEYS: Mapping[str, Any] = {"backend": "torch", "train_freq": 1, "gradient_steps": 1}

#: the arms: name -> (``[train]`` keys over the task's, SB3's stock HER buffer)
ARMS: Mapping[str, tuple[Mapping[str, Any], bool]] = {
    "safebot": ({}, False),
    "sb3": (BASELINE_KEYS, True),
}


@dataclass(frozen=True)
class ArmRun:
    """One arm's run (picklable for the executors)."""

    task: str
    arm: str
    steps: int
    seed: int
    run_dir: str
    eval_every: int | None = None
    eval_episodes: int | None = None
    final_episodes: int = 50


@dataclass
class TrainBenchResult:
    report: dict[str, Any]
    files: list[Path] = field(default_factory=list)


def arm_spec(task: str, arm: str) -> Any:
    """The task's spec with the arm's ``[train]`` keys (ValueError for an unknown arm)."""
    from safebot.config import parse_model
    from safebot.spec import TaskSpec, load_task

    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose from {', '.join(ARMS)}")
    spec = load_task(task)
    data = spec.model_dump(mode="json")
    data["train"].update(ARMS[arm][0])
    return parse_model(data, TaskSpec, spec.source).model_copy(update={"source": spec.source})


def success_curve(metrics_csv: Path) -> list[tuple[int, float]]:
    """``(step, held-out success rate)`` of every evaluation in a run's ``metrics.csv``."""
    with metrics_csv.open(newline="") as f:
        return [(int(row["step"]), float(row["success_rate"])) for row in csv.DictReader(f)]


def steps_to(curve: list[tuple[int, float]], level: float) -> int | None:
    """The first evaluated step whose success rate is at least ``level`` (None: never)."""
    return next((step for step, success in curve if success >= level), None)


def timed_train(run_dir: Path, spec: Any, opts: Any, model_factory: Any = None) -> dict[str, float]:
    """Train ``spec`` into ``run_dir`` (resume it, or leave a finished run alone); its timing.

    The wall time of every sitting that trained is summed in
    ``run_dir/bench_timing.json``, so a run resumed across sittings reports the
    time it trained, not the time since its last restart.
    """
    from safebot.train import make_model, train

    timing = run_dir / "bench_timing.json"
    done = json.loads(timing.read_text()) if timing.is_file() else {"wall_s": 0.0, "sittings": 0}
    if (run_dir / "summary.json").is_file():
        return done
    resume = (run_dir / "config.toml").is_file()
    t0 = time.perf_counter()
    train(
        spec,
        opts,
        out=run_dir,
        resume=resume,
        force=not resume,
        progress=False,
        model_factory=model_factory or make_model,
    )
    done = {"wall_s": done["wall_s"] + time.perf_counter() - t0, "sittings": done["sittings"] + 1}
    atomic_write(timing, json.dumps(done))
    return done


def run_arm(run: ArmRun) -> dict[str, Any]:
    """Train (or resume, or read back) one arm; its throughput, curve and final evaluation."""
    from safebot.train import RunOptions, evaluate_run, make_model

    run_dir = Path(run.run_dir)
    opts = RunOptions(
        steps=run.steps, seed=run.seed, eval_every=run.eval_every, eval_episodes=run.eval_episodes
    )
    factory = functools.partial(make_model, stock_her=ARMS[run.arm][1])
    done = timed_train(run_dir, arm_spec(run.task, run.arm), opts, factory)
    summary = json.loads((run_dir / "summary.json").read_text())
    steps = int(summary["step"])
    curve = success_curve(run_dir / "metrics.csv")
    final = evaluate_run(run_dir, "best", episodes=run.final_episodes)
    return {
        "arm": run.arm,
        "run_dir": str(run_dir),
        "steps": steps,
        "wall_s": round(done["wall_s"], 2),
        "sittings": done["sittings"],
        "env_steps_per_s": round(steps / done["wall_s"], 2) if done["wall_s"] > 0 else None,
        "steps_to_90": steps_to(curve, 0.9),
        "curve": curve,
        "final": final,
        "train": dict(ARMS[run.arm][0]),
        "stock_her": ARMS[run.arm][1],
    }


def bench_train(
    out: Path,
    *,
    task: str = "reach",
    steps: int = 30_000,
    seed: int = 0,
    eval_every: int | None = None,
    eval_episodes: int | None = None,
    final_episodes: int = 50,
    command: str = "",
) -> TrainBenchResult:
    """Run both arms at once under ``out`` and write ``out/bench_train.json``.

    Raises:
        RuntimeError: an arm failed (its message names the arm and the error).
    """
    from safebot.bench.executors import make_executor

    out.mkdir(parents=True, exist_ok=True)
    runs = [
        ArmRun(task, arm, steps, seed, str(out / arm), eval_every, eval_episodes, final_episodes)
        for arm in ARMS
    ]
    load = os.getloadavg()[0]
    commit = code_label()  # the code the arms start with, not the code at the end
    t0 = time.perf_counter()
    arms: dict[str, Any] = {}
    for item, result in make_executor("local", workers=len(runs)).map_unordered(run_arm, runs):
        if isinstance(result, BaseException):
            raise RuntimeError(f"bench train: arm {item.arm} failed: {result}") from result
        arms[item.arm] = result
    ours, base = arms["safebot"], arms["sb3"]
    report = {
        "task": task,
        "steps": steps,
        "seed": seed,
        "command": command,
        "code_commit": commit,
        "cpus": os.cpu_count(),
        "load_at_start": round(load, 2),
        "wall_s": round(time.perf_counter() - t0, 1),
        "ratio_env_steps_per_s": _ratio(ours["env_steps_per_s"], base["env_steps_per_s"]),
        "steps_to_90": {"safebot": ours["steps_to_90"], "sb3": base["steps_to_90"]},
        "arms": arms,
    }
    path = out / "bench_train.json"
    atomic_write(path, json.dumps(report, indent=2))
    return TrainBenchResult(report, [path])


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


__all__ = [
    "ARMS",
    "BASELINE_KEYS",
    "ArmRun",
    "TrainBenchResult",
    "arm_spec",
    "bench_train",
    "run_arm",
    "steps_to",
    "success_curve",
    "timed_train",
]
