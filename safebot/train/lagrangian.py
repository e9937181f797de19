"""The Lagrangian constraint: ``r - lambda * harm``, with ``lambda >= 0`` learned by dual ascent.

The constrained problem is "maximise return subject to mean episode harm <=
``[train] cost_limit``". Its Lagrangian relaxation trains the policy on
``r - lambda * c`` (``c = info['cost']``, the harm of one step) while the
multiplier follows projected gradient ascent on the dual,

    lambda <- max(0, lambda + lagrangian_lr * (mean episode harm - cost_limit)),

the update of OmniSafe's ``Lagrange`` class (``loss = -lambda * (Jc - limit)``,
one optimiser step, clamp to ``[0, inf)``) used by its SAC-Lag and PPO-Lag,
written here with plain gradient steps instead of a torch optimiser so that
one update is one line of arithmetic. ``lambda`` rises while the training
episodes are more harmful than allowed and decays to 0 once they are not.

When lambda moves: once per SB3 rollout (PPO: ``n_steps`` per env; SAC:
``train_freq`` steps) in which at least one training episode ended, from the
mean harm of the episodes that ended since the previous update. For PPO that is
OmniSafe's once-per-epoch update; for SAC (one step per rollout) it is once per
finished episode.

Which lambda a transition is penalised with: always the *current* one.

* SAC: the replay buffer stores each transition's harm beside its reward and
  subtracts ``lambda * harm`` when a batch is sampled, for real transitions and
  for HER's relabelled ones alike (HER recomputes the task reward of a
  relabelled transition from ``compute_reward``; the harm of the step it was
  taken from does not depend on the goal, so it is the stored one). A
  transition stored a million steps ago is penalised at today's price, which is
  what the dual problem asks for, instead of the price at storage time.
* PPO: the rollout is collected with the unpenalised reward; at the end of the
  rollout lambda is updated first and the rollout's rewards, returns and
  advantages are recomputed with the new lambda before the policy update
  (OmniSafe's order in PPO-Lag).

The env's own reward therefore never carries lambda (the training env's
``ShapedReward`` adds only the fixed terms: ``correction_penalty``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from safebot.train.buffers import HarmStore, info_column


class Lagrange:
    """The multiplier and its dual-ascent update.

    Args:
        cost_limit: the allowed mean harm per episode (>= 0).
        lr: the dual ascent step size (> 0).
        init: lambda at the start (>= 0).

    Example:
        >>> lag = Lagrange(cost_limit=1.0, lr=0.5, init=0.0)
        >>> lag.update(3.0)  # 2 above the limit
        1.0
        >>> lag.update(0.0)  # 1 below: back to 0.5
        0.5
    """

    def __init__(self, cost_limit: float, lr: float, init: float = 0.0) -> None:
        for name, v, ok in (
            ("cost_limit", cost_limit, cost_limit >= 0),
            ("lr", lr, lr > 0),
            ("init", init, init >= 0),
        ):
            if not (np.isfinite(v) and ok):
                raise ValueError(f"Lagrange {name} = {v} is out of range")
        self.cost_limit = float(cost_limit)
        self.lr = float(lr)
        self.value = float(init)
        self.updates = 0
        self.last_harm = float("nan")

    def update(self, mean_episode_harm: float) -> float:
        """One projected gradient step on the dual; returns the new lambda.

        Raises:
            ValueError: ``mean_episode_harm`` is negative or not finite (a broken
                cost signal must not silently drive lambda).
        """
        harm = float(mean_episode_harm)
        if not np.isfinite(harm) or harm < 0:
            raise ValueError(f"mean episode harm must be finite and >= 0, got {harm}")
        self.value = max(0.0, self.value + self.lr * (harm - self.cost_limit))
        self.updates += 1
        self.last_harm = harm
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {
            "lambda": self.value,
            "updates": self.updates,
            "last_harm": self.last_harm,
            "cost_limit": self.cost_limit,
            "lr": self.lr,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore lambda (the limit and step size stay the run's configuration)."""
        value = float(state["lambda"])
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"saved lambda {value} is not a finite number >= 0")
        self.value = value
        self.updates = int(state.get("updates", 0))
        self.last_harm = float(state.get("last_harm", float("nan")))


class LagrangeCallback(BaseCallback):
    """Sum each training episode's harm, update lambda once per rollout, apply it.

    SAC: lambda is handed to the replay buffer, which prices every sampled
    transition with it. PPO: the finished rollout's rewards are re-penalised
    with the new lambda and its returns and advantages recomputed, before the
    policy update reads them.
    """

    def __init__(self, lagrange: Lagrange) -> None:
        super().__init__(verbose=0)
        self.lagrange = lagrange
        self._running: np.ndarray | None = None
        self._finished: list[float] = []
        self._rollout_harm: np.ndarray | None = None

    def _on_training_start(self) -> None:
        n = self.training_env.num_envs
        self._running = np.zeros(n, dtype=np.float64)
        if self._is_on_policy():
            self._rollout_harm = np.zeros_like(self._rollout_buffer().rewards)
        self._apply_to_buffer()

    def _is_on_policy(self) -> bool:
        return hasattr(self.model, "rollout_buffer")

    def _rollout_buffer(self) -> Any:
        return self.model.rollout_buffer  # type: ignore[attr-defined]

    def _on_step(self) -> bool:
        assert self._running is not None
        harm = info_column(self.locals["infos"], "cost")
        if self._rollout_harm is not None:
            # on_step runs before the rollout buffer adds this step, at index ``pos``
            self._rollout_harm[self._rollout_buffer().pos] = harm
        self._running += harm
        for i, done in enumerate(self.locals["dones"]):
            if done:
                self._finished.append(float(self._running[i]))
                self._running[i] = 0.0
        return True

    def _on_rollout_end(self) -> None:
        if self._finished:
            self.lagrange.update(float(np.mean(self._finished)))
            self.logger.record("lagrange/episode_harm", self.lagrange.last_harm)
            self._finished.clear()
        self.logger.record("lagrange/lambda", self.lagrange.value)
        if self._rollout_harm is not None:
            self._penalise_rollout()
        else:
            self._apply_to_buffer()

    def _apply_to_buffer(self) -> None:
        buffer = getattr(self.model, "replay_buffer", None)
        if isinstance(buffer, HarmStore):
            buffer.lagrangian_lambda = self.lagrange.value

    def _penalise_rollout(self) -> None:
        assert self._rollout_harm is not None
        buf = self._rollout_buffer()
        buf.rewards -= self.lagrange.value * self._rollout_harm
        buf.compute_returns_and_advantage(
            last_values=self.locals["values"], dones=self.locals["dones"]
        )
        self._rollout_harm[:] = 0.0


__all__ = [
    "Lagrange",
    "LagrangeCallback",
]
