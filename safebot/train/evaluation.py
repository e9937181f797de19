"""Held-out evaluation: deterministic episodes on a separate env, summarised for the scheduler.

The scheduler judges competence only on these episodes, never on the training
reward (docs/design.md, rule 4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from safebot.schedulers import EvalStats
from safebot.shield import Shield


@dataclass
class EvalResult:
    """One evaluation's numbers (the scheduler sees :attr:`stats`)."""

    stats: EvalStats
    mean_return: float
    episodes: list[dict[str, float]] = field(default_factory=list)


def evaluate(
    predict: Callable[[Any], np.ndarray], env: Shield, *, episodes: int, seed: int, step: int = 0
) -> EvalResult:
    """Run ``episodes`` deterministic episodes on ``env`` with seeds ``seed, seed+1, ...``."""
    successes, returns, costs, steps, inter, corr = [], [], 0.0, 0, 0, 0.0
    binding: dict[str, int] = {}
    margins: dict[str, float] = {}
    actions = []
    per_episode = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done = False
        ret = 0.0
        ep_cost = 0.0
        info: dict[str, Any] = {}
        while not done:
            action = predict(obs)
            actions.append(np.asarray(action, dtype=np.float64))
            obs, r, term, trunc, info = env.step(action)
            done = term or trunc
            ret += float(r)
            ep_cost += info["cost"]
            steps += 1
            inter += bool(info["shield/intervened"])
            c = info["shield/correction"]
            corr += 0.0 if not np.isfinite(c) else c
            for k in info["shield/active"]:
                binding[k] = binding.get(k, 0) + 1
            for key, v in info.items():
                if key.startswith("shield/margin/"):
                    kind = key.removeprefix("shield/margin/")
                    margins[kind] = min(margins.get(kind, np.inf), float(v))
        successes.append(bool(info.get("is_success", False)))
        returns.append(ret)
        costs += ep_cost
        per_episode.append({"success": float(successes[-1]), "return": ret, "cost": ep_cost})
    act = np.array(actions)
    stats = EvalStats(
        step=int(step),
        episodes=episodes,
        success_rate=float(np.mean(successes)),
        cost_rate=costs / max(steps, 1),
        harm_per_episode=costs / max(episodes, 1),
        intervention_rate=inter / max(steps, 1),
        mean_correction=corr / max(steps, 1),
        min_margin=_normalised_margins(env, margins),
        binding={k: v / max(steps, 1) for k, v in binding.items()},
        action_std=float(act.std()) if act.size else 0.0,
    )
    return EvalResult(stats, float(np.mean(returns)), per_episode)


def evaluate_run(
    run_dir: str | Path, which: Any = "best", *, episodes: int = 50, seed: int = 50_000
) -> dict[str, Any]:
    """A trained run's ``which`` model on ``episodes`` fresh episodes (seeds ``seed, seed+1, ...``).

    The model runs at the width it was selected at (the best evaluation's, or the
    run's final width), and unshielded when the run trained unshielded (``[run]
    shield = "off"``: a baseline is judged as it trained, not behind the shield at
    the caps); training evaluations draw seeds in 10 000-49 999 (``EVAL_SEEDS``), so the
    default 50 000 is held out from every one of them. ``safebot eval`` prints this.

    Raises:
        RunError: no such run, or a damaged model.
    """
    from safebot.modes import decode_run_mode
    from safebot.train.model import load_policy
    from safebot.train.options import RunError
    from safebot.train.rundir import RunDir
    from safebot.train.wrappers import make_env

    selected = RunDir(run_dir).select(which)
    spec, model = load_policy(run_dir, selected.which)
    _, meta = RunDir(run_dir).load_config()
    try:  # runs written before the shield key carry only the legacy scheduler name
        mode = decode_run_mode(meta.get("scheduler"), meta.get("shield"), meta.get("constraint"))
    except ValueError as err:
        raise RunError(f"{run_dir}: [run] {err}") from None
    env = make_env(spec, width=selected.width, shielded=mode.shielded)
    result = evaluate(
        lambda o: model.predict(o, deterministic=True)[0], env, episodes=episodes, seed=seed
    )
    env.close()
    s = result.stats
    return {
        "run": str(run_dir),
        "episodes": episodes,
        "success_rate": s.success_rate,
        "harm_per_episode": s.harm_per_episode,
        "mean_return": result.mean_return,
        "cost_rate": s.cost_rate,
        "intervention_rate": s.intervention_rate,
        "mean_correction": s.mean_correction,
        "final_width": env.envelope.mean_width(),
        "shielded": mode.shielded,
        "which": selected.which.value,
        "model_step": selected.step,
    }


def _normalised_margins(env: Shield, margins: dict[str, float]) -> dict[str, float]:
    # margins in [0, 1] of each limit's start-to-cap range, as EvalStats documents
    out = {}
    for kind, m in margins.items():
        lim = env.envelope.limits.get(kind)
        span = float(np.max(np.abs(lim.cap - lim.start))) if lim is not None else 1.0
        out[kind] = m / span if span > 0 else m
    return out


__all__ = ["EvalResult", "evaluate", "evaluate_run"]
