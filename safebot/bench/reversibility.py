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
"""

from __future__ import annotations

import argparse
import csv
import json
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
from safebot.train import evaluate

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
    stale, one (no per-episode ``[uncertainty]``), and a 2 cm keep-out cap, the size of the
    obstacle's shift."""
    spec = load_task("reach")
    ko = spec.limits.keepout
    assert ko is not None
    limits = spec.limits.model_copy(update={"keepout": ko.model_copy(update={"cap": 0.02})})
    return spec.model_copy(update={"uncertainty": UncertaintySection(), "limits": limits})


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("docs/results/reversibility"))
    parser.add_argument("--evaluations", type=int, default=30)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--perturb", type=int, nargs=2, default=(12, 20), metavar=("FROM", "TO"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
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
