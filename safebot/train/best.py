"""The best held-out-evaluated model, kept beside the last (as SB3's ``EvalCallback`` does).

Best means the highest held-out success rate; between equal success rates, the
lower mean harm per evaluation episode (the sum of ``info['cost']``) wins.
Success first because success is what the run is for and what the scheduler
widens on; harm breaks ties so that, of two equally competent policies, the
gentler one ships. A later evaluation must be strictly better to replace the
best, so of two identical scores the earlier model stays.

The best model is evaluated at the width the envelope had during that
evaluation, and it is that width (not the run's final one) ``eval``, ``render``
and ``export`` use with ``--which best``: a later widening was never evaluated
with this model.

Files: ``best/model_<step>.zip`` (and ``best/vecnormalize_<step>.pkl``), then
``best/best.json`` naming them, replaced last through :mod:`safebot.io`; files
of an older best are deleted only after that, so a ``kill -9`` at any moment
leaves ``best.json`` naming a complete model.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np

from safebot.io import atomic_path, atomic_write
from safebot.train.evaluation import EvalResult
from safebot.train.rundir import RunDir


def score(success_rate: float, mean_harm: float) -> tuple[float, float]:
    """The sort key of an evaluation: higher is better (success, then less harm)."""
    return (float(success_rate), -float(mean_harm))


def mean_episode_harm(result: EvalResult) -> float:
    """The mean of the evaluation episodes' summed ``info['cost']``."""
    costs = [ep["cost"] for ep in result.episodes]
    return float(np.mean(costs)) if costs else 0.0


class BestModel:
    """Saves the model of every evaluation that beats the best so far (read back on resume)."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        entry = run.best_entry()
        self.entry: dict[str, Any] | None = entry
        self.score = None if entry is None else score(entry["success_rate"], entry["mean_harm"])

    def consider(self, model: Any, result: EvalResult, width: Any, step: int) -> bool:
        """Save ``model`` as the best if ``result`` beats the best; returns whether it did."""
        harm = mean_episode_harm(result)
        new = score(result.stats.success_rate, harm)
        if self.score is not None and new <= self.score:
            return False
        run = self.run
        with atomic_path(run.best_file("model", step)) as tmp:
            model.save(tmp)
        entry: dict[str, Any] = {
            "step": int(step),
            "model": run.best_file("model", step).name,
            "success_rate": result.stats.success_rate,
            "mean_harm": harm,
            "cost_rate": result.stats.cost_rate,
            "episodes": result.stats.episodes,
            "width": copy.deepcopy(width),
        }
        norm = model.get_vec_normalize_env()
        if norm is not None:
            with atomic_path(run.best_file("vecnormalize", step)) as tmp:
                norm.save(str(tmp))
            entry["vecnormalize"] = run.best_file("vecnormalize", step).name
        atomic_write(run.best_index, json.dumps(entry, indent=2, default=float))
        keep = {entry["model"], entry.get("vecnormalize")}
        for old in run.best.glob("*_*.*"):
            if old.name not in keep and old != run.best_index:
                old.unlink(missing_ok=True)
        self.entry, self.score = entry, new
        return True


__all__ = ["BestModel", "mean_episode_harm", "score"]
