"""What a run is asked to do (:class:`RunOptions`) and the task spec that results (:func:`resolve_spec`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from safebot.config import parse_model
from safebot.modes import (
    LEGACY_SCHEDULERS,
    Algo,
    Backend,
    RewardConstraint,
    RunMode,
    SchedulerChoice,
    SchedulerKind,
    ShieldMode,
    decode_run_mode,
)
from safebot.schedulers import CompetenceConfig, LinearConfig, PIConfig, StaticConfig
from safebot.spec import TaskSpec

#: every ``--scheduler`` spelling, legacy ``none``/``penalty`` included (see :mod:`safebot.modes`)
SCHEDULER_CHOICES = tuple(c.value for c in SchedulerChoice)
ALGOS = tuple(a.value for a in Algo)


class RunError(Exception):
    """A run cannot start or resume; the message says why (the CLI exits 2)."""


@dataclass(frozen=True)
class RunOptions:
    """What the CLI (or a script) asks of one run; ``None`` means the task's default.

    ``scheduler``, ``shield`` and ``constraint`` take the enums of
    :mod:`safebot.modes` or their string values; ``scheduler`` also takes the
    legacy ``"none"`` (shield off) and ``"penalty"`` (shield off, reward
    penalty). :meth:`mode` decodes them. ``constraint=None`` takes the task's
    ``[train] constraint`` (unless a legacy scheduler name implies one).
    """

    algo: Algo | str | None = None
    backend: Backend | str | None = None
    steps: int | None = None
    scheduler: SchedulerChoice | SchedulerKind | str | None = None
    width: float | None = None
    seed: int | None = None
    n_envs: int | None = None
    eval_every: int | None = None
    eval_episodes: int | None = None
    checkpoint_every: int | None = None
    demos: int | None = None
    cost_penalty: float = 1.0
    shield: ShieldMode | str | None = None
    constraint: RewardConstraint | str | None = None

    def mode(self, default_constraint: RewardConstraint | str | None = None) -> RunMode:
        """The decoded shield / constraint / scheduler choice.

        Args:
            default_constraint: the constraint when none is asked for (the task's
                ``[train] constraint``); a legacy ``--scheduler none|penalty`` keeps its own.

        Raises:
            RunError: an unknown or contradictory value (the message names it).
        """
        constraint = self.constraint
        if constraint is None and str(self.scheduler) not in LEGACY_SCHEDULERS:
            constraint = default_constraint
        try:
            mode = decode_run_mode(self.scheduler, self.shield, constraint)
        except ValueError as err:
            raise RunError(str(err)) from None
        if not mode.shielded and mode.scheduler not in (None, SchedulerKind.STATIC):
            raise RunError(
                f"--scheduler {mode.scheduler} needs the shield: an unshielded run has no "
                "scheduler (it reports at the caps, width 1)"
            )
        return mode

    def validate(self) -> None:
        """Raises RunError naming the first bad option."""
        if self.algo is not None and self.algo not in ALGOS:
            raise RunError(f"unknown algorithm {self.algo!r}; choose one of {', '.join(ALGOS)}")
        if self.backend is not None and self.backend not in set(Backend):
            raise RunError(f"unknown backend {self.backend!r}; choose one of torch, jax")
        self.mode()
        for name in ("steps", "n_envs", "eval_every", "eval_episodes", "checkpoint_every"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise RunError(f"--{name.replace('_', '-')} must be positive, got {v}")
        if self.demos is not None and self.demos < 0:
            raise RunError(f"--demos must be >= 0, got {self.demos}")
        if self.seed is not None and self.seed < 0:
            raise RunError(f"--seed must be >= 0, got {self.seed}")
        if self.width is not None and not (0.0 <= self.width <= 1.0):
            raise RunError(f"--width must be in [0, 1], got {self.width}")


_NO_DEMOS = {
    "demo_episodes": 0,
    "bc_weight": 0.0,
    "bc_pretrain": 0,
    "bc_steps": 0,
    "critic_warmup": 0,
}


def _demo_keys(spec: TaskSpec, opts: RunOptions) -> dict[str, Any]:
    """The ``[train]`` keys ``--demos`` (or PPO, which cannot use demonstrations) changes."""
    if opts.algo == Algo.PPO and spec.train.demo_episodes > 0:
        # demonstrations feed an off-policy replay buffer; PPO runs without them
        print(
            f"note: --algo ppo runs without the {spec.train.demo_episodes} scripted "
            "demonstrations of [train] (they feed SAC's replay buffer)",
            file=sys.stderr,
        )
        return dict(_NO_DEMOS)
    if opts.demos == 0:
        keys: dict[str, Any] = dict(_NO_DEMOS)
        first_episode = spec.robot.max_episode_steps
        if spec.train.her and spec.train.learning_starts < first_episode:
            # without demonstrations HER has nothing to sample before the first episode ends
            print(
                f"note: --demos 0 raises learning_starts from {spec.train.learning_starts} "
                f"to {first_episode} (HER samples finished episodes)",
                file=sys.stderr,
            )
            keys["learning_starts"] = first_episode
        return keys
    if opts.demos is not None:
        return {"demo_episodes": opts.demos}
    return {}


def _scheduler_config(spec: TaskSpec, opts: RunOptions, total_steps: int) -> Any:
    """The ``[scheduler]`` table the run uses (an unshielded run: static, at the caps by default)."""
    mode = opts.mode(spec.train.constraint)
    if not mode.shielded or mode.scheduler is SchedulerKind.STATIC:
        default = 0.0 if mode.shielded else 1.0
        return StaticConfig(width=opts.width if opts.width is not None else default)
    if mode.scheduler is SchedulerKind.LINEAR:
        return LinearConfig(steps=total_steps)
    if mode.scheduler is SchedulerKind.PI:
        return PIConfig()
    if mode.scheduler is SchedulerKind.COMPETENCE and not isinstance(
        spec.scheduler, CompetenceConfig
    ):
        return CompetenceConfig()
    if mode.scheduler is None and opts.width is not None:
        return StaticConfig(width=opts.width)
    return spec.scheduler


def resolve_spec(spec: TaskSpec, opts: RunOptions) -> TaskSpec:
    """Apply the run options to the task's ``[train]`` and ``[scheduler]``; the result is what runs."""
    opts.validate()
    overrides = {
        "algo": None if opts.algo is None else str(opts.algo),
        "backend": None if opts.backend is None else str(opts.backend),
        "total_steps": opts.steps,
        "seed": opts.seed,
        "n_envs": opts.n_envs,
        "eval_every": opts.eval_every,
        "eval_episodes": opts.eval_episodes,
        "checkpoint_every": opts.checkpoint_every,
        # config.toml records the constraint that runs, whoever chose it
        "constraint": opts.mode(spec.train.constraint).constraint.value,
    }
    train = spec.train.model_copy(
        update=_demo_keys(spec, opts) | {k: v for k, v in overrides.items() if v is not None}
    )
    data = spec.model_dump(mode="json")
    data["train"] = train.model_dump(mode="json")
    data["scheduler"] = _scheduler_config(spec, opts, train.total_steps).model_dump(mode="json")
    return parse_model(data, TaskSpec, spec.source).model_copy(update={"source": spec.source})


__all__ = ["ALGOS", "SCHEDULER_CHOICES", "RunError", "RunOptions", "resolve_spec"]
