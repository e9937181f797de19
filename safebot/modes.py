"""How a run treats safety: shield on/off, reward constraint, and which scheduler moves the width.

Three independent choices, each an enum:

* :class:`ShieldMode` — whether actions pass through the shield (``off``: the
  unshielded baselines; they still report costs and margins, at the caps).
* :class:`RewardConstraint` — what the reward adds for harm (``info['cost']``):
  ``none``; ``penalty`` (``r - cost_penalty * cost``, a fixed Lagrange
  multiplier, the baseline); or ``lagrangian`` (``r - lambda * cost`` with
  ``lambda >= 0`` learned by dual ascent on the training episodes' harm against
  ``[train] cost_limit``, :mod:`safebot.train.lagrangian`).
* :class:`SchedulerKind` — how the width moves (the ``kind`` of a
  ``[scheduler]`` table in a task file).

:class:`PolicyChoice` is which saved model of a run ``eval``, ``render`` and
``export`` use: the best held-out-evaluated one or the last.

The command line used to spell the two unshielded baselines as scheduler
names: ``--scheduler none`` (shield off) and ``--scheduler penalty`` (shield
off, reward penalty). Those spellings still work; :func:`decode_run_mode` is the
one place that turns them, and every other combination of ``--scheduler``,
``--shield`` and ``--constraint``, into a :class:`RunMode`.

This module imports nothing heavy, so the CLI can type its options by these
enums without loading the training stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "LEGACY_SCHEDULERS",
    "Algo",
    "PolicyChoice",
    "RewardConstraint",
    "RunMode",
    "SchedulerChoice",
    "SchedulerKind",
    "ShieldMode",
    "decode_run_mode",
]


class Algo(StrEnum):
    """The SB3 learner."""

    SAC = "sac"
    PPO = "ppo"


class Backend(StrEnum):
    """SAC's implementation: SB3's (torch) or SBX's (JAX); PPO is always SB3's."""

    TORCH = "torch"
    JAX = "jax"


class ShieldMode(StrEnum):
    """Whether the shield projects actions (``off`` passes them through but still reports)."""

    ON = "on"
    OFF = "off"


class RewardConstraint(StrEnum):
    """What the training reward adds for the physics cost (``info['cost']``)."""

    NONE = "none"
    PENALTY = "penalty"
    LAGRANGIAN = "lagrangian"


class PolicyChoice(StrEnum):
    """Which saved model of a run to load: the best held-out evaluation's, or the last."""

    BEST = "best"
    LAST = "last"


class SchedulerKind(StrEnum):
    """How the envelope width moves; the values are the ``kind`` of ``[scheduler]`` tables."""

    STATIC = "static"
    LINEAR = "linear"
    COMPETENCE = "competence"
    PI = "pi"


#: legacy ``--scheduler`` spellings of the unshielded baselines -> (shield, constraint)
LEGACY_SCHEDULERS: dict[str, tuple[ShieldMode, RewardConstraint]] = {
    "none": (ShieldMode.OFF, RewardConstraint.NONE),
    "penalty": (ShieldMode.OFF, RewardConstraint.PENALTY),
}


class SchedulerChoice(StrEnum):
    """What ``--scheduler`` accepts: every :class:`SchedulerKind` and the two legacy spellings.

    ``none`` means ``--shield off`` and ``penalty`` means ``--shield off
    --constraint penalty`` (both at width 1, the caps); see :func:`decode_run_mode`.
    """

    STATIC = "static"
    LINEAR = "linear"
    COMPETENCE = "competence"
    PI = "pi"
    NONE = "none"
    PENALTY = "penalty"


@dataclass(frozen=True)
class RunMode:
    """The decoded safety set-up of a run.

    Attributes:
        scheduler: the scheduler asked for; ``None`` keeps the task's ``[scheduler]``.
        shield: shield on or off.
        constraint: the reward constraint.
    """

    scheduler: SchedulerKind | None = None
    shield: ShieldMode = ShieldMode.ON
    constraint: RewardConstraint = RewardConstraint.NONE

    @property
    def shielded(self) -> bool:
        return self.shield is ShieldMode.ON

    @property
    def legacy_name(self) -> str | None:
        """``none``/``penalty`` for the two unshielded baselines the old CLI named, else ``None``."""
        if self.shielded:
            return None
        for name, mode in LEGACY_SCHEDULERS.items():
            if mode == (self.shield, self.constraint):
                return name
        return None


def _member(
    enum: type[StrEnum], value: str | StrEnum, what: str, extra: tuple[str, ...] = ()
) -> str:
    text = str(value)  # a StrEnum member is its value
    allowed = (*(m.value for m in enum), *extra)
    if text not in allowed:
        raise ValueError(f"unknown {what} {text!r}; choose one of {', '.join(allowed)}")
    return text


def decode_run_mode(
    scheduler: str | None = None,
    shield: str | None = None,
    constraint: str | None = None,
) -> RunMode:
    """Turn the ``--scheduler``/``--shield``/``--constraint`` spellings into a :class:`RunMode`.

    ``scheduler`` may be a :class:`SchedulerKind` value or a legacy name
    (:data:`LEGACY_SCHEDULERS`); a legacy name sets the shield and the
    constraint, and may be combined only with values that agree with it.

    Raises:
        ValueError: an unknown value, or a legacy name contradicted by ``shield``
            or ``constraint`` (the message names both).

    Example:
        >>> decode_run_mode("penalty")
        RunMode(scheduler=None, shield=<ShieldMode.OFF: 'off'>, constraint=<RewardConstraint.PENALTY: 'penalty'>)
    """
    kind: SchedulerKind | None = None
    legacy: tuple[ShieldMode, RewardConstraint] | None = None
    if scheduler is not None:
        name = _member(SchedulerKind, scheduler, "scheduler", tuple(LEGACY_SCHEDULERS))
        if name in LEGACY_SCHEDULERS:
            legacy = LEGACY_SCHEDULERS[name]
        else:
            kind = SchedulerKind(name)
    sh = None if shield is None else ShieldMode(_member(ShieldMode, shield, "shield mode"))
    con = (
        None
        if constraint is None
        else RewardConstraint(_member(RewardConstraint, constraint, "reward constraint"))
    )
    if legacy is not None:
        for asked, implied, flag in ((sh, legacy[0], "shield"), (con, legacy[1], "constraint")):
            if asked is not None and asked is not implied:
                raise ValueError(
                    f"--scheduler {scheduler} means --{flag} {implied}, not --{flag} {asked}"
                )
        return RunMode(None, *legacy)
    return RunMode(kind, sh or ShieldMode.ON, con or RewardConstraint.NONE)
