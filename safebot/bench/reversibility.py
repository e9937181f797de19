"""Reversibility experiment: the envelope tightens when the world changes under it, then recovers.

A fixed, competent controller (no learning, so the scheduler is the only thing
that changes) runs Reach inside the shield. Every "evaluation" the competence
scheduler sees held-out episodes and moves the width. For a window of
evaluations the obstacle is *moved* toward the arm's path and made taller while
the keep-out map — what the shield and the controller believe — stays the old
one (a stale map, the everyday way the world drifts from the model). At a wide
envelope the keep-out margin (0.02 m at the cap) is thinner than the shift, so
the arm strikes the moved box: physics cost rises, the scheduler tightens, and
the wider margin of a tighter envelope absorbs the map error. When the obstacle
goes back, competence returns and the width recovers.

    python -m safebot.bench.reversibility --out docs/results/reversibility

Learner mode (issue 14, point 5) repeats it with a training agent: one run of
``safebot.train.train("reach", ...)`` with the task's shipped recipe (SBX SAC)
and competence scheduler, during which the ``[uncertainty]`` perception error
(the keep-out map's offset, N(0, 1.5 cm) per axis) is multiplied by ``--factor``
from ``--change-at`` to ``--restore-at`` in the training envs and the evaluation
env alike (:class:`~safebot.train.WorldChange`). The experiment asks whether the
width tightens while the map is worse, harm per evaluation episode stays bounded,
and the width recovers once the world does:

    python -m safebot.bench.reversibility --learner --steps 45000 \
        --change-at 20000 --restore-at 30000 --out docs/results/reversibility_learner

writes ``<out>/run/`` (the run directory; restarting the command resumes it from
its last checkpoint, and a finished run is only re-read), ``<out>/curves.csv``
(one row per evaluation: step, width, success, harm per episode, cost rate,
``perturbed``), ``<out>/summary.json`` (the settings, a before / during / after
table of mean and min width, mean success, mean and max harm per episode, and the
curves) and the figure ``--figure`` (default ``docs/img/reversibility_learner.png``).
An evaluation at a change's step runs before the change, so ``perturbed`` marks the
evaluations after the change up to and including the one at the restore step.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from safebot.envs import ArmTaskEnv, ReachEnv
from safebot.schedulers import Scheduler, make_scheduler
from safebot.scripted import reach_policy
from safebot.shield import Shield
from safebot.spec import TaskSpec, UncertaintySection, load_task
from safebot.train import RunDir, RunOptions, RunResult, WorldChange, evaluate, train

# the perturbation: obstacle centre shift (m) and new half-size while it lasts. 7 cm: since
# the keep-out guards the hand's whole width, the controller's own 6 cm clearance and the
# 2 cm cap margin absorb a stale map off by 2-4 cm (no contact at all, measured 2026-12-01)
SHIFT = np.array([-0.07, 0.0, 0.0])
GROW = np.array([0.0, 0.07, 0.07])
# m/s: the controller's own speed cap (a controller choice, not a cost: issue 12 removed the
# speed cost; 0.48 m/s is the 0.8 x 0.6 m/s the experiment was measured with)
CONTROLLER_SPEED = 0.48


class StaleMapReach(ReachEnv):
    """Reach whose keep-out map is frozen when the env is built.

    The physical obstacle may then move without the shield (or a controller that
    plans with :meth:`keepout_boxes`) knowing; costs still come from physics.
    """

    # goals with room for the hand beside the box, as the experiment was measured: the
    # only harm it should see is the one its moved obstacle causes
    goal_clearance = 0.05

    def keepout_boxes(self) -> list[tuple[np.ndarray, np.ndarray]]:
        frozen: list[tuple[np.ndarray, np.ndarray]] | None = getattr(self, "_frozen_map", None)
        if frozen is None:
            frozen = super().keepout_boxes()
            if frozen and np.any(frozen[0][0]):  # after the first kinematics pass
                self._frozen_map = frozen
        return [(c.copy(), h.copy()) for c, h in frozen]


def experiment_spec() -> TaskSpec:
    """``tasks/reach.toml`` as the experiment was measured: its only map error is its own,
    stale, one (no per-episode ``[uncertainty]``), a 2 cm keep-out cap, the size of the
    obstacle's shift, and a scheduler that widens at every passing evaluation
    (``patience = 1``, pinned here whatever Reach ships), so the width reaches the cap
    before the obstacle moves at evaluation 12; no training-harm brake (measured before
    Reach had one)."""
    spec = load_task("reach")
    ko = spec.limits.keepout
    assert ko is not None
    limits = spec.limits.model_copy(update={"keepout": ko.model_copy(update={"cap": 0.02})})
    scheduler = spec.scheduler.model_copy(
        update={"patience": 1, "max_train_harm": None, "spike_train_harm": None}
    )
    return spec.model_copy(
        update={"uncertainty": UncertaintySection(), "limits": limits, "scheduler": scheduler}
    )


def capped_policy(env: Shield) -> Callable[[Any], np.ndarray]:
    """The scripted Reach controller (planning with the env's map), capped at ``CONTROLLER_SPEED``."""
    inner = env.unwrapped
    assert isinstance(inner, ArmTaskEnv)
    v_max = CONTROLLER_SPEED

    def act(_: Any) -> np.ndarray:
        a = reach_policy(env)
        v = a * inner.action_scale
        speed = float(np.linalg.norm(v))
        return a * (v_max / speed) if speed > v_max else a

    return act


def set_obstacle(env: Shield, centre: np.ndarray, half: np.ndarray) -> None:
    """Move the physical obstacle geom (a :class:`StaleMapReach` map does not follow)."""
    inner = env.unwrapped
    assert isinstance(inner, ArmTaskEnv)
    g = mujoco.mj_name2id(inner.model, mujoco.mjtObj.mjOBJ_GEOM, "obstacle")
    inner.model.geom_pos[g] = centre
    inner.model.geom_size[g] = half
    mujoco.mj_forward(inner.model, inner.data)


def run(
    *,
    evaluations: int = 30,
    perturb: tuple[int, int] = (12, 20),
    episodes: int = 10,
    seed: int = 0,
    scheduler: Scheduler | None = None,
) -> list[dict[str, Any]]:
    """Run the experiment; one row per evaluation (width before and after, cost, success, perturbed)."""
    spec = experiment_spec()
    env = Shield(StaleMapReach(spec), observe_width=False)
    sched = (
        scheduler if scheduler is not None else make_scheduler(spec.scheduler, env.envelope.kinds)
    )
    inner = env.unwrapped
    assert isinstance(inner, ArmTaskEnv)
    env.reset(seed=seed)
    (c0, h0) = inner.keepout_boxes()[0]
    policy = capped_policy(env)
    rows = []
    for k in range(evaluations):
        perturbed = perturb[0] <= k < perturb[1]
        set_obstacle(env, c0 + SHIFT, h0 + GROW) if perturbed else set_obstacle(env, c0, h0)
        width = sched.width
        env.set_width(width)
        result = evaluate(policy, env, episodes=episodes, seed=seed + 1000 * k, step=k)
        sched.update(result.stats)
        hist = sched.history
        rows.append(
            {
                "evaluation": k,
                "perturbed": int(perturbed),
                "width": _mean(width),
                "next_width": _mean(sched.width),
                "success_rate": result.stats.success_rate,
                "cost_rate": result.stats.cost_rate,
                "reason": hist[-1][2] if hist else "",
            }
        )
    return rows


def _mean(w: Any) -> float:
    return float(np.mean(list(w.values()))) if isinstance(w, dict) else float(w)


def plot(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = np.array([r["evaluation"] for r in rows])
    fig, axes = plt.subplots(3, 1, figsize=(7, 6), sharex=True)
    on = [r["evaluation"] for r in rows if r["perturbed"]]
    for ax in axes:
        if on:
            ax.axvspan(
                min(on) - 0.5, max(on) + 0.5, color="orange", alpha=0.15, label="obstacle moved"
            )
        ax.grid(alpha=0.3)
    axes[0].step(k, [r["width"] for r in rows], where="mid", color="tab:blue")
    axes[0].set_ylabel("width")
    axes[0].set_ylim(-0.05, 1.05)
    axes[0].legend(loc="lower right")
    axes[1].plot(k, [r["cost_rate"] for r in rows], "o-", color="tab:red")
    axes[1].set_ylabel("eval cost / step")
    axes[2].plot(k, [r["success_rate"] for r in rows], "o-", color="tab:green")
    axes[2].set_ylabel("eval success")
    axes[2].set_ylim(-0.05, 1.05)
    axes[2].set_xlabel("evaluation")
    fig.suptitle("Reach: competence envelope around a moved obstacle")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: the learner mode's columns of ``metrics.csv`` kept in its curves (``perturbed`` is added)
CURVE_FIELDS = ("step", "width", "success_rate", "harm_per_episode", "cost_rate", "reason")


def learner_run(
    out: Path,
    opts: RunOptions,
    *,
    change_at: int,
    restore_at: int,
    factor: float = 2.0,
    progress: bool = True,
) -> RunResult:
    """Train Reach under ``opts`` in ``out/run`` (resumed when it was started before),
    the perception error times ``factor`` from step ``change_at`` to ``restore_at``."""
    if not 0 < change_at < restore_at:
        raise ValueError(f"need 0 < change_at < restore_at, got {change_at}, {restore_at}")
    if not math.isfinite(factor) or factor < 0.0:  # before the run, not at change_at
        raise ValueError(f"--factor must be finite and >= 0, got {factor}")
    change = WorldChange(
        {
            change_at: ("set_perception_scale", (factor,)),
            restore_at: ("set_perception_scale", (1.0,)),
        }
    )
    run = RunDir(out / "run")
    started = run.config.exists()
    # a folder without config.toml holds no checkpoint to resume: start it again
    return train(
        "reach",
        opts,
        out=run.root,
        resume=started,
        force=not started,
        progress=progress,
        callbacks=[change],
    )


def applied_step(step: int, n_envs: int) -> int:
    """The step a change scheduled at ``step`` is made at: ``num_timesteps`` grows by ``n_envs``."""
    return -(-step // n_envs) * n_envs


def changed_window(run: RunDir, change_at: int, restore_at: int) -> tuple[int, int]:
    """The steps the run made its change and its restore at (:func:`applied_step`)."""
    spec, _ = run.load_config()
    return applied_step(change_at, spec.train.n_envs), applied_step(restore_at, spec.train.n_envs)


def learner_curves(run: RunDir, window: tuple[int, int]) -> list[dict[str, Any]]:
    """One row per evaluation of ``metrics.csv``; ``perturbed`` (0 or 1) when it ran after
    the change and before the restore of ``window`` (:func:`changed_window`)."""
    on, off = window
    with run.metrics.open(newline="") as f:
        rows = list(csv.DictReader(f))
    curves = []
    for r in rows:
        row: dict[str, Any] = {k: float(r[k]) for k in CURVE_FIELDS if k not in ("step", "reason")}
        step = int(r["step"])
        curves.append(
            {"step": step, **row, "reason": r["reason"], "perturbed": int(on < step <= off)}
        )
    return curves


def phase_table(curves: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Per phase (before / during / after the changed window): evaluations, mean and min
    width, mean success, mean and max harm per episode (``None`` for an empty phase)."""
    during = [k for k, r in enumerate(curves) if r["perturbed"]]
    first, last = (during[0], during[-1]) if during else (len(curves), len(curves) - 1)
    parts = {
        "before": curves[:first],
        "during": curves[first : last + 1],
        "after": curves[last + 1 :],
    }
    table: dict[str, dict[str, float | int | None]] = {}
    for name, rows in parts.items():
        w = [r["width"] for r in rows]
        harm = [r["harm_per_episode"] for r in rows]
        table[name] = {
            "evaluations": len(rows),
            "mean_width": float(np.mean(w)) if rows else None,
            "min_width": float(np.min(w)) if rows else None,
            "mean_success": float(np.mean([r["success_rate"] for r in rows])) if rows else None,
            "mean_harm_per_episode": float(np.mean(harm)) if rows else None,
            "max_harm_per_episode": float(np.max(harm)) if rows else None,
        }
    return table


def plot_learner(
    curves: Sequence[dict[str, Any]], path: Path, window: tuple[int, int], factor: float
) -> Path:
    """Width, harm per evaluation episode and success against the training step, the
    changed window shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = np.array([r["step"] for r in curves])
    fig, axes = plt.subplots(3, 1, figsize=(7, 6), sharex=True)
    panels = (
        ("width", "width", "tab:blue"),
        ("harm_per_episode", "eval harm / episode", "tab:red"),
        ("success_rate", "eval success", "tab:green"),
    )
    for ax, (key, label, colour) in zip(axes, panels, strict=True):
        ax.axvspan(*window, color="orange", alpha=0.15, label=f"perception error x{factor:g}")
        # a width row is the width set after that evaluation: it holds until the next one
        style = "steps-post" if key == "width" else "default"
        ax.plot(step, [r[key] for r in curves], "o-", ms=3, color=colour, drawstyle=style)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.05, 1.05)
    axes[2].set_ylim(-0.05, 1.05)
    axes[0].legend(loc="lower right")
    axes[2].set_xlabel("training step")
    fig.suptitle("Reach, training: competence envelope around a worse perception error")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learner_main(args: argparse.Namespace) -> int:
    """``--learner``: the run (or its resume), then curves, phase table and figure."""
    out: Path = args.out
    opts = RunOptions(
        steps=args.steps,
        backend=args.backend,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        checkpoint_every=args.checkpoint_every,
    )
    learner_run(
        out,
        opts,
        change_at=args.change_at,
        restore_at=args.restore_at,
        factor=args.factor,
        progress=not args.quiet,
    )
    window = changed_window(RunDir(out / "run"), args.change_at, args.restore_at)
    curves = learner_curves(RunDir(out / "run"), window)
    table = phase_table(curves)
    with (out / "curves.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*CURVE_FIELDS, "perturbed"])
        w.writeheader()
        w.writerows(curves)
    settings = {
        "task": "reach",
        "steps": args.steps,
        "change_at": args.change_at,
        "restore_at": args.restore_at,
        "factor": args.factor,
    }
    summary = {"settings": settings, "phases": table, "curves": curves}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    png = plot_learner(curves, args.figure, window, args.factor)
    for name, row in table.items():
        cells = "  ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
        )
        print(f"{name:6s} {cells}")
    print(f"curves: {out / 'curves.csv'}  summary: {out / 'summary.json'}  plot: {png}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="default docs/results/reversibility[_learner]"
    )
    parser.add_argument("--evaluations", type=int, default=30)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--perturb", type=int, nargs=2, default=(12, 20), metavar=("FROM", "TO"))
    parser.add_argument("--seed", type=int, default=0)
    learner = parser.add_argument_group("learner mode (a training agent)")
    learner.add_argument(
        "--learner", action="store_true", help="train Reach instead of the fixed controller"
    )
    learner.add_argument("--steps", type=int, default=45000)
    learner.add_argument("--change-at", type=int, default=20000)
    learner.add_argument("--restore-at", type=int, default=30000)
    learner.add_argument("--factor", type=float, default=2.0, help="perception error multiplier")
    learner.add_argument("--figure", type=Path, default=Path("docs/img/reversibility_learner.png"))
    learner.add_argument("--quiet", action="store_true", help="no progress bar")
    for name in ("--eval-every", "--eval-episodes", "--checkpoint-every"):
        learner.add_argument(name, type=int, default=None, help="default: the task's [train]")
    learner.add_argument("--backend", choices=("torch", "jax"), default=None)
    args = parser.parse_args(argv)
    if args.learner:
        args.out = args.out or Path("docs/results/reversibility_learner")
        return learner_main(args)
    args.out = args.out or Path("docs/results/reversibility")
    rows = run(
        evaluations=args.evaluations,
        perturb=tuple(args.perturb),
        episodes=args.episodes,
        seed=args.seed,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "reversibility.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (args.out / "reversibility.json").write_text(json.dumps(rows, indent=1))
    png = plot(rows, args.out / "reversibility.png")
    for r in rows:
        print(
            f"{r['evaluation']:3d} {'*' if r['perturbed'] else ' '} width {r['width']:.2f} -> {r['next_width']:.2f}"
            f"  success {r['success_rate']:.0%}  cost {r['cost_rate']:.3f}  {r['reason']}"
        )
    print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
