"""SB3 callbacks: envelope updates from held-out evaluations, atomic checkpoints, a progress bar,
scheduled changes of the world (experiments).

safebot extends the stock learners only through callbacks (no SAC/PPO subclass).
"""

from __future__ import annotations

import copy
import csv
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from safebot.io import atomic_path, atomic_write
from safebot.schedulers import Scheduler
from safebot.shield import Shield
from safebot.train.best import BestModel
from safebot.train.evaluation import EvalResult, evaluate
from safebot.train.lagrangian import Lagrange
from safebot.train.rundir import METRIC_FIELDS, RunDir

EVAL_SEEDS = range(10_000, 50_000)
"""Episode seeds of training evaluations; ``safebot eval`` and the benches' fresh
episodes start at 50 000, so no training evaluation ever saw them."""


def evaluation_seed(run_seed: int, index: int, episodes: int) -> int:
    """The first episode seed of a run's ``index``-th evaluation (``step // eval_every``).

    Every evaluation draws new episodes, as SB3's ``EvalCallback`` does by
    stepping one env on: with one fixed set, the scheduler would judge 30
    evaluations on the same 20 goals, and the best model would be picked on
    them (Reach: 100 % on the fixed 20 for 12 evaluations in a row, 84 % on
    50 fresh). The seed depends only on the step, so a resumed run evaluates
    on the episodes it would have, and it stays inside :data:`EVAL_SEEDS`.
    """
    span = len(EVAL_SEEDS) - episodes
    return EVAL_SEEDS.start + (run_seed * 1000 + index * episodes) % span


class EnvelopeCallback(BaseCallback):
    """Evaluate every ``eval_every`` steps, update the scheduler, push the width everywhere, log.

    The scheduler sees only held-out evaluation episodes (separate env, seeds
    from :func:`evaluation_seed`: new episodes at every evaluation), never the
    training reward (docs/design.md, rule 4); beside them, the harm per training
    episode since the previous evaluation (``EvalStats.train_harm_per_episode``),
    which a competence scheduler may read to hold or tighten, never to widen.

    Args:
        lagrange: the learned multiplier of a Lagrangian run: logged as the
            ``lambda`` column and saved with the callback state (every checkpoint).
        fixed_lambda: the ``lambda`` column of a run without one (the fixed
            penalty, or 0).
        best: keeps the best evaluated model (:mod:`safebot.train.best`).
    """

    def __init__(
        self,
        eval_env: Shield,
        scheduler: Scheduler | None,
        *,
        eval_every: int,
        episodes: int,
        run_seed: int,
        metrics_csv: Path,
        fixed_width: float | dict[str, float] = 0.0,
        lagrange: Lagrange | None = None,
        fixed_lambda: float = 0.0,
        best: BestModel | None = None,
    ) -> None:
        super().__init__(verbose=0)
        self.eval_env = eval_env
        self.scheduler = scheduler
        self.eval_every = eval_every
        self.episodes = episodes
        self.run_seed = run_seed
        self.metrics_csv = metrics_csv
        self.fixed_width = fixed_width
        self.lagrange = lagrange
        self.fixed_lambda = fixed_lambda
        self.best = best
        self.next_eval = eval_every
        self.train_cost = 0.0
        self.train_steps = 0
        self.train_interventions = 0
        # since the previous evaluation: harm of the training steps, training episodes ended
        self.harm_since = 0.0
        self.episodes_since = 0
        self.last: dict[str, Any] = {}
        self._t0 = time.perf_counter()
        self.wall_offset = 0.0

    @property
    def width(self) -> float | dict[str, float]:
        return self.scheduler.width if self.scheduler is not None else self.fixed_width

    @property
    def lambda_(self) -> float:
        """The multiplier of harm in the training reward now."""
        return self.lagrange.value if self.lagrange is not None else self.fixed_lambda

    def _on_training_start(self) -> None:
        self._push_width()

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            harm = float(info.get("cost", 0.0))
            self.train_cost += harm
            self.harm_since += harm
            self.train_interventions += bool(info.get("shield/intervened", False))
            self.train_steps += 1
        self.episodes_since += int(np.count_nonzero(self.locals.get("dones", ())))
        if self.num_timesteps >= self.next_eval:
            self.next_eval += self.eval_every
            self.run_evaluation()
        return True

    def run_evaluation(self) -> EvalResult:
        model = self.model
        norm = model.get_vec_normalize_env()

        def predict(obs: Any) -> np.ndarray:
            if norm is not None:
                obs = norm.normalize_obs(obs)
            action, _ = model.predict(obs, deterministic=True)
            return action

        evaluated_at = copy.deepcopy(self.width)
        self.eval_env.set_width(evaluated_at)
        result = evaluate(
            predict,
            self.eval_env,
            episodes=self.episodes,
            seed=evaluation_seed(
                self.run_seed, self.num_timesteps // self.eval_every, self.episodes
            ),
            step=self.num_timesteps,
        )
        if self.best is not None:
            self.best.consider(model, result, evaluated_at, self.num_timesteps)
        train_harm = self.harm_since / self.episodes_since if self.episodes_since else None
        self.harm_since, self.episodes_since = 0.0, 0
        reason = "fixed"
        if self.scheduler is not None:
            self.scheduler.update(replace(result.stats, train_harm_per_episode=train_harm))
            hist = self.scheduler.history
            reason = hist[-1][2] if hist else ""
        self._push_width()
        self._log(result, reason)
        return result

    def _push_width(self) -> None:
        width = self.width
        self.training_env.env_method("set_width", width)
        self.eval_env.set_width(width)

    def _log(self, result: EvalResult, reason: str) -> None:
        s = result.stats
        width = self.width
        mean_w = float(np.mean(list(width.values()))) if isinstance(width, dict) else float(width)
        row = {
            "step": self.num_timesteps,
            "width": mean_w,
            "success_rate": s.success_rate,
            "mean_return": result.mean_return,
            "cost_rate": s.cost_rate,
            "harm_per_episode": s.harm_per_episode,
            "intervention_rate": s.intervention_rate,
            "mean_correction": s.mean_correction,
            "train_cost": self.train_cost,
            "train_steps": self.train_steps,
            "lambda": self.lambda_,
            "reason": reason,
            "wall_s": round(self.wall_offset + time.perf_counter() - self._t0, 2),
        }
        self.last = row
        new = not self.metrics_csv.exists()
        with self.metrics_csv.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        for k in (
            "width",
            "success_rate",
            "cost_rate",
            "intervention_rate",
            "mean_correction",
            "mean_return",
        ):
            self.logger.record(f"envelope/{k}", row[k])
        self.logger.record("envelope/train_cost", self.train_cost)
        self.logger.record("lagrange/lambda", self.lambda_)
        if isinstance(width, dict):
            for kind, w in width.items():
                self.logger.record(f"envelope/width_{kind}", w)
        self.logger.dump(self.num_timesteps)

    def state_dict(self) -> dict[str, Any]:
        return {
            "next_eval": self.next_eval,
            "train_cost": self.train_cost,
            "train_steps": self.train_steps,
            "train_interventions": self.train_interventions,
            "harm_since": self.harm_since,
            "episodes_since": self.episodes_since,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "lagrange": self.lagrange.state_dict() if self.lagrange is not None else None,
            "wall_s": self.wall_offset + time.perf_counter() - self._t0,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next_eval = int(state["next_eval"])
        self.train_cost = float(state["train_cost"])
        self.train_steps = int(state["train_steps"])
        self.train_interventions = int(state.get("train_interventions", 0))
        self.harm_since = float(state.get("harm_since", 0.0))
        self.episodes_since = int(state.get("episodes_since", 0))
        self.wall_offset = float(state.get("wall_s", 0.0))
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.lagrange is not None and state.get("lagrange") is not None:
            self.lagrange.load_state_dict(state["lagrange"])


class CheckpointCallback(BaseCallback):
    """Atomic checkpoints every ``every`` steps.

    Each file is written atomically (:mod:`safebot.io`) and ``ckpt/latest.json``
    (the only thing ``--resume`` trusts) is replaced last, so a ``kill -9`` at
    any moment leaves the previous complete checkpoint listed.
    """

    def __init__(
        self, run_dir: Path | RunDir, every: int, envelope_cb: EnvelopeCallback, save_buffer: bool
    ) -> None:
        super().__init__(verbose=0)
        self.run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.dir = self.run.ckpt
        self.every = every
        self.envelope_cb = envelope_cb
        self.save_buffer = save_buffer
        self.next_save = every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_save:
            self.next_save = (self.num_timesteps // self.every + 1) * self.every
            self.save()
        return True

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        step = self.num_timesteps
        model: Any = self.model
        entry: dict[str, Any] = {"step": step}
        with atomic_path(self.run.checkpoint_file("model", step)) as tmp:
            model.save(tmp)
        entry["model"] = self.run.checkpoint_file("model", step).name
        if self.save_buffer and hasattr(model, "save_replay_buffer"):
            with atomic_path(self.run.checkpoint_file("replay", step)) as tmp:
                model.save_replay_buffer(tmp)
            entry["replay"] = self.run.checkpoint_file("replay", step).name
        norm = model.get_vec_normalize_env()
        if norm is not None:
            with atomic_path(self.run.checkpoint_file("vecnormalize", step)) as tmp:
                norm.save(str(tmp))
            entry["vecnormalize"] = self.run.checkpoint_file("vecnormalize", step).name
        state = {"callback": self.envelope_cb.state_dict(), "checkpoint": self.next_save}
        atomic_write(self.run.checkpoint_file("state", step), json.dumps(state))
        entry["state"] = self.run.checkpoint_file("state", step).name
        atomic_write(self.run.latest, json.dumps(entry))
        self.run.drop_old_checkpoints(keep=2)


class WorldChange(BaseCallback):
    """Change the world of every training env and of the evaluation env at scheduled steps.

    ``changes`` maps a step to ``(method, args)``: a method of the task env (SB3's
    ``env_method`` finds it through the wrapper stack, the evaluation env's
    ``get_wrapper_attr`` likewise) called once ``num_timesteps`` reaches the step.
    Both sides change together because the scheduler judges the evaluation episodes:
    a world that changed only under the learner would leave the width where it was.

    Each method is a setter (its last call is the whole state it sets), so on training
    start, a resumed run included, the latest change of each method at or before the
    current step is applied again and a resume sees the world the run had left. The
    run's own callbacks come first (:func:`~safebot.train.train` appends extra ones), so
    an evaluation at a change's step still sees the world before it. Episodes already
    under way keep what they drew at their reset (a resumed run's first ones too).

    Example:
        ``WorldChange({20000: ("set_perception_scale", (2.0,)),
        30000: ("set_perception_scale", (1.0,))})`` doubles the perception error
        between steps 20 000 and 30 000 (:meth:`ArmTaskEnv.set_perception_scale`).

    Args:
        changes: ``{step: (method name, positional args)}``; steps >= 0.
        eval_env: the run's evaluation env; :func:`~safebot.train.train` sets it.
    """

    def __init__(
        self,
        changes: Mapping[int, tuple[str, Sequence[Any]]],
        eval_env: gym.Env[Any, Any] | None = None,
    ) -> None:
        super().__init__(verbose=0)
        for step, change in changes.items():
            if int(step) < 0 or len(change) != 2 or not isinstance(change[0], str):
                raise ValueError(
                    f"WorldChange: {step!r}: {change!r} is not step >= 0: (method name, args)"
                )
        self.changes = [
            (int(step), name, tuple(args)) for step, (name, args) in sorted(changes.items())
        ]
        self.eval_env = eval_env
        #: ``(num_timesteps, method, args)`` of every change made, in order
        self.applied: list[tuple[int, str, tuple[Any, ...]]] = []
        self._next = 0

    def _on_training_start(self) -> None:
        if self.eval_env is None:
            raise ValueError(
                "WorldChange has no evaluation env: pass eval_env, or hand it to "
                "safebot.train.train(callbacks=...), which sets the run's"
            )
        due = [c for c in self.changes if c[0] <= self.num_timesteps]
        self._next = len(due)
        latest = {name: (step, name, args) for step, name, args in due}
        for change in sorted(latest.values(), key=lambda c: c[0]):
            self._apply(change[1], change[2])

    def _on_step(self) -> bool:
        while self._next < len(self.changes) and self.num_timesteps >= self.changes[self._next][0]:
            _, name, args = self.changes[self._next]
            self._next += 1
            self._apply(name, args)
        return True

    def _apply(self, name: str, args: tuple[Any, ...]) -> None:
        assert self.eval_env is not None
        self.training_env.env_method(name, *args)
        self.eval_env.get_wrapper_attr(name)(*args)
        self.applied.append((self.num_timesteps, name, args))


class ProgressCallback(BaseCallback):
    """A rich progress bar with the current width, evaluation success and cost rate."""

    def __init__(self, total: int, envelope_cb: EnvelopeCallback) -> None:
        super().__init__(verbose=0)
        self.total = total
        self.envelope_cb = envelope_cb
        self._progress: Any = None

    def _on_training_start(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
        )
        self._progress.start()
        self._task = self._progress.add_task(
            "train", total=self.total, completed=self.num_timesteps, status=""
        )

    def _on_step(self) -> bool:
        if self.n_calls % 50 == 0 and self._progress is not None:
            last = self.envelope_cb.last
            status = (
                f"width {last['width']:.2f}  success {last['success_rate']:.0%}  cost {last['cost_rate']:.3f}"
                if last
                else "width -  (first evaluation pending)"
            )
            self._progress.update(self._task, completed=self.num_timesteps, status=status)
        return True

    def _on_training_end(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=self.num_timesteps)
            self._progress.stop()


__all__ = ["CheckpointCallback", "EnvelopeCallback", "ProgressCallback", "WorldChange"]
