"""How the envelope width moves during training.

An envelope holds a width in ``[0, 1]`` per limit kind: 0 means the tight start
bounds, 1 the hard caps. A :class:`Scheduler` turns the statistics of one
*held-out evaluation* (:class:`EvalStats`) into the next width. Schedulers never
see the training reward and the agent never sees the scheduler (docs/design.md, rule
4), so competence cannot be gamed by reward shaping or by the policy.

Four schedulers ship:

* :class:`Static`: a fixed width (the "shield at the caps" or "always tight"
  baselines).
* :class:`Linear`: a time-based curriculum on training steps, blind to how the
  agent is doing.
* :class:`Competence`: widens after sustained held-out competence, tightens
  within one evaluation of a harm or failure spike, with hysteresis, a cooldown
  and a return to the last width that was shown to be safe. Optionally one width
  per limit kind. The state machine is described in ``docs/competence.md``.
* :class:`SafetyBudgetPI`: the Simmer-style PI controller on the width toward a
  target harm per episode (Gopalakrishnan et al. 2021; OmniSafe's ``SimmerPIDAgent``),
  the closed-loop baseline to compare against.

Every width a scheduler returns is clamped to ``[0, 1]`` (and a NaN becomes 0,
the tight end), so a scheduler bug can never ask for more than the hard caps;
the envelope clamps again (docs/design.md, rule 3).

Example:
    >>> sched = make_scheduler({"kind": "competence", "patience": 2}, limits=["ee_speed"])
    >>> good = EvalStats(step=1000, episodes=10, success_rate=0.9, cost_rate=0.0, harm_per_episode=0.0)
    >>> sched.update(good), sched.update(good)
    (0.0, 0.1)
"""

from __future__ import annotations

import abc
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from safebot.config import Frozen

__all__ = [
    "HISTORY_LEN",
    "SCHEDULER_KINDS",
    "Competence",
    "CompetenceConfig",
    "EvalStats",
    "Linear",
    "LinearConfig",
    "PIConfig",
    "SafetyBudgetPI",
    "Scheduler",
    "SchedulerConfig",
    "Static",
    "StaticConfig",
    "Width",
    "make_scheduler",
    "parse_scheduler_config",
]

Width: TypeAlias = float | dict[str, float]
"""One width for every limit kind, or one per limit kind (per-limit mode)."""

HISTORY_LEN = 1000
"""How many ``(step, width, reason)`` entries a scheduler keeps (oldest dropped)."""

# Two widths closer than this are the same width: keeps float noise from being
# read as a change (e.g. 0.1 + 0.2 vs 0.3) when picking targets or reverting.
_EPS = 1e-12


# --------------------------------------------------------------------------- stats


@dataclass(frozen=True)
class EvalStats:
    """What one held-out evaluation measured. Built by the training callback.

    Attributes:
        step: Training timesteps taken so far (the x-axis of every curve).
        episodes: Number of evaluation episodes behind the rates. An evaluation
            with no episodes carries no evidence: schedulers hold.
        success_rate: UnitFloat of evaluation episodes that reached the goal, in
            ``[0, 1]``.
        cost_rate: Harm per step over the evaluation episodes, in ``[0, 1]`` (the
            ``info["cost"]`` harm signal); logged, not read by the shipped schedulers.
        harm_per_episode: Mean harm per evaluation episode (``info["cost"]`` summed over
            the episode: steps with a harm event, docs/tasks.md), ``>= 0``: what the
            competence and PI thresholds read.
        failure_rate: UnitFloat of evaluation episodes that failed (were not
            successful), in ``[0, 1]``. ``None`` (the default) means
            ``1 - success_rate``; pass it explicitly when failure is defined
            differently (e.g. a safety termination).
        intervention_rate: UnitFloat of steps where the shield changed the action.
        mean_correction: Mean norm of the shield's correction ``||u - a||``.
        min_margin: Per limit kind, the smallest margin seen, normalised to
            ``[0, 1]`` of that limit's range (negative: the bound was crossed in
            physics). May be empty.
        binding: Per limit kind, the fraction of steps on which it was active
            (a row of ``A u <= b`` held with equality). May be empty.
        action_std: Standard deviation of the policy's actions (exploration
            left); logged, not used by the shipped schedulers.
        train_harm_per_episode: Mean harm of the *training* episodes that ended since
            the previous evaluation, ``None`` when none ended (or the caller does not
            track it). Never evidence of competence: :class:`Competence` reads it only
            to hold or tighten (``max_train_harm`` / ``spike_train_harm``).

    Non-finite values are read as their worst case by the schedulers (a NaN
    harm is a spike, a NaN success rate is a failure), never as a pass.
    """

    step: int
    episodes: int
    success_rate: float
    cost_rate: float
    harm_per_episode: float
    failure_rate: float | None = None
    intervention_rate: float = 0.0
    mean_correction: float = 0.0
    min_margin: Mapping[str, float] = field(default_factory=dict)
    binding: Mapping[str, float] = field(default_factory=dict)
    action_std: float = 0.0
    train_harm_per_episode: float | None = None


@dataclass(frozen=True)
class _Metrics:
    """EvalStats with non-finite values replaced by their worst case and rates in [0, 1]."""

    success: float
    harm: float
    failure: float
    intervention: float
    train_harm: float | None


def _rate(x: float | None, worst: float) -> float:
    if x is None or not math.isfinite(x):
        return worst
    return min(max(float(x), 0.0), 1.0)


def _harm(x: float | None) -> float:
    # harm per episode is unbounded above; NaN (no measurement) reads as the worst case
    if x is None or math.isnan(x):
        return math.inf
    return max(float(x), 0.0)


def _metrics(stats: EvalStats) -> _Metrics:
    success = _rate(stats.success_rate, worst=0.0)
    failure = 1.0 - success if stats.failure_rate is None else _rate(stats.failure_rate, 1.0)
    return _Metrics(
        success=success,
        harm=_harm(stats.harm_per_episode),
        failure=failure,
        intervention=_rate(stats.intervention_rate, worst=1.0),
        train_harm=(
            None if stats.train_harm_per_episode is None else _harm(stats.train_harm_per_episode)
        ),
    )


def _margin(stats: EvalStats, kind: str) -> float | None:
    """The reported margin of one limit kind; NaN reads as -inf (unsafe), missing as None."""
    if kind not in stats.min_margin:
        return None
    m = float(stats.min_margin[kind])
    return m if not math.isnan(m) else -math.inf


def _binding(stats: EvalStats, kind: str) -> float:
    b = float(stats.binding.get(kind, 0.0))
    return b if math.isfinite(b) else 0.0


# --------------------------------------------------------------------------- width helpers


def _clamp(x: float) -> float:
    # NaN goes to the tight end: a broken scheduler must fail safe, not wide.
    if math.isnan(x):
        return 0.0
    # Rounded so that repeated widen steps give 0.3, not 0.30000000000000004,
    # in logs, plots and equality checks; 1e-12 is far below any physical effect.
    return round(min(max(float(x), 0.0), 1.0), 12)


def _clamp_width(width: Width) -> Width:
    if isinstance(width, dict):
        return {k: _clamp(v) for k, v in width.items()}
    return _clamp(width)


def _copy(width: Width) -> Width:
    return dict(width) if isinstance(width, dict) else width


def _width_from_json(value: Any) -> Width:
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items()}
    return float(value)


# --------------------------------------------------------------------------- base class


class Scheduler(abc.ABC):
    """Decides the envelope width from held-out evaluation statistics.

    Subclasses implement :meth:`update` and return the value of
    :meth:`_commit`, which clamps the width to ``[0, 1]``, stores it and appends
    ``(step, width, reason)`` to :attr:`history`.

    Args:
        start_width: The width before the first evaluation.
        limits: The limit kinds this scheduler controls. Empty means "every
            limit of the envelope" and is only allowed for a scalar width.

    Raises:
        ValueError: ``limits`` repeats a kind or contains an empty name.
    """

    kind: ClassVar[str]
    """The config discriminator (``"static"``, ``"linear"``, ...), stored in the state."""

    def __init__(self, start_width: Width, *, limits: Sequence[str] = ()) -> None:
        if isinstance(limits, str):
            # A bare string would silently become one limit per character.
            raise TypeError(f"limits must be a sequence of limit kinds, got the string {limits!r}")
        self.limits: tuple[str, ...] = tuple(limits)
        if len(set(self.limits)) != len(self.limits):
            raise ValueError(f"limits repeat a kind: {self.limits}")
        if any(not k for k in self.limits):
            raise ValueError(f"limits contain an empty name: {self.limits}")
        self._width: Width = _clamp_width(start_width)
        self._history: deque[tuple[int, Width, str]] = deque(maxlen=HISTORY_LEN)

    @abc.abstractmethod
    def update(self, stats: EvalStats) -> Width:
        """Read one evaluation and return the width to train with next.

        Args:
            stats: The held-out evaluation just finished.

        Returns:
            The new width, each value in ``[0, 1]``: a float, or a dict keyed by
            :attr:`limits` in per-limit mode.
        """

    @property
    def width(self) -> Width:
        """The current width (a copy; each value in ``[0, 1]``)."""
        return _copy(self._width)

    @property
    def history(self) -> list[tuple[int, Width, str]]:
        """The last :data:`HISTORY_LEN` decisions as ``(step, width, reason)``, oldest first.

        ``reason`` is a short string: ``"widen"``, ``"tighten: harm spike"``,
        ``"hold: cooldown"``, ...
        """
        return [(s, _copy(w), r) for s, w, r in self._history]

    def _commit(self, step: int, width: Width, reason: str) -> Width:
        """Clamp, store and record a decision; the value :meth:`update` returns."""
        self._width = _clamp_width(width)
        self._history.append((int(step), _copy(self._width), reason))
        return self.width

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as JSON-serialisable builtins.

        The configuration is not part of the state: rebuild the scheduler from
        its config, then call :meth:`load_state_dict`.
        """
        return {
            "kind": self.kind,
            "width": _copy(self._width),
            "history": [[s, _copy(w), r] for s, w, r in self._history],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (possibly through JSON).

        Raises:
            ValueError: the state belongs to another scheduler kind, or its width
                does not match this scheduler's shape (scalar vs. per-limit keys).
        """
        if state.get("kind") != self.kind:
            raise ValueError(f"state is for a {state.get('kind')!r} scheduler, not {self.kind!r}")
        width = _width_from_json(state["width"])
        self._check_shape(width, what="state width")
        self._width = _clamp_width(width)
        self._history = deque(
            ((int(s), _clamp_width(_width_from_json(w)), str(r)) for s, w, r in state["history"]),
            maxlen=HISTORY_LEN,
        )

    def _check_shape(self, width: Width, *, what: str) -> None:
        if isinstance(self._width, dict):
            if not isinstance(width, dict) or set(width) != set(self._width):
                raise ValueError(f"{what} must be a dict over {sorted(self._width)}, got {width!r}")
        elif isinstance(width, dict):
            raise ValueError(f"{what} must be a float for a scalar scheduler, got {width!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(width={self._width!r}, limits={self.limits!r})"


# --------------------------------------------------------------------------- configs


UnitFloat = Annotated[float, Field(ge=0.0, le=1.0)]
StepSize = Annotated[float, Field(gt=0.0, le=1.0)]
_HARM_MAX = 1e6
Harm = Annotated[float, Field(ge=0.0, le=_HARM_MAX)]
"""Harm events per episode (``EvalStats.harm_per_episode``): not a fraction."""


_RENAMED = {
    "max_cost_rate": "max_harm",
    "spike_cost_rate": "spike_harm",
    "target_cost_rate": "target_harm",
}


class _SchedulerConfigBase(Frozen):
    # Widths and thresholds are fractions: NaN or inf in a config is a typo.
    # Attribute docstrings become field descriptions (JSON schema, --help).
    model_config = ConfigDict(allow_inf_nan=False, use_attribute_docstrings=True)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, v: Any) -> Any:
        # the thresholds read harm per episode since issue 12: say so rather than
        # "extra inputs are not permitted"
        if isinstance(v, Mapping):
            for old, new in _RENAMED.items():
                if old in v:
                    raise ValueError(
                        f"{old} was replaced by {new} (harm events per held-out episode, "
                        "not cost per step; docs/competence.md)"
                    )
        return v


class StaticConfig(_SchedulerConfigBase):
    """A fixed width: ``[scheduler] kind = "static"  width = 1.0``."""

    kind: Literal["static"] = "static"
    width: UnitFloat
    """The width for the whole run: 0 = start bounds, 1 = hard caps."""


class LinearConfig(_SchedulerConfigBase):
    """A time-based curriculum: the width moves linearly with training steps."""

    kind: Literal["linear"] = "linear"
    start_width: UnitFloat = 0.0
    """Width at step 0."""
    end_width: UnitFloat = 1.0
    """Width from ``steps`` on (may be below ``start_width`` for a tightening schedule)."""
    steps: int = Field(ge=1)
    """Training timesteps over which the width goes from start to end."""


class CompetenceConfig(_SchedulerConfigBase):
    """Settings of :class:`Competence`; see ``docs/competence.md``.

    An evaluation *passes* when it had episodes, ``success_rate >=
    success_threshold``, ``harm_per_episode <= max_harm`` and, where set,
    the training episodes since the previous evaluation had ``<= max_train_harm``,
    ``intervention_rate <= max_intervention_rate`` and every controlled margin
    ``>= min_margin``. It *spikes* when ``harm_per_episode >= spike_harm``, when
    (where set) the training episodes had ``>= spike_train_harm``, or, once some
    evaluation has passed, ``failure_rate >= spike_failure_rate``.
    Between the two it holds: that band is the hysteresis.
    """

    kind: Literal["competence"] = "competence"
    start_width: UnitFloat = 0.0
    """Width before the first evaluation (0 = the tight start bounds)."""
    widen_step: StepSize = 0.1
    """How much one widen adds (per limit kind in per-limit mode)."""
    tighten_step: StepSize = 0.25
    """How much a tighten removes when there is no lower last-safe width to go back to.
    Larger than ``widen_step`` on purpose: back off fast, advance slowly."""
    patience: int = Field(default=2, ge=1, le=1000)
    """Consecutive passing evaluations needed before a widen: one lucky
    evaluation is not competence."""
    success_threshold: UnitFloat = 0.8
    """Minimum held-out success rate for an evaluation to pass."""
    max_harm: Harm = 0.2
    """Maximum harm per held-out episode for an evaluation to pass: above it the width
    never widens."""
    spike_harm: Harm = 0.5
    """Harm per episode at or above which the width tightens at once. Must exceed
    ``max_harm``: the gap is the hysteresis band where it only holds."""
    spike_failure_rate: UnitFloat = 0.5
    """Failure rate at or above which the width tightens at once, but only after
    some evaluation has passed (early in training every episode fails and
    tightening below the start bounds is meaningless). Must exceed
    ``1 - success_threshold`` so that a pass can never be a spike."""
    max_intervention_rate: UnitFloat | None = None
    """If set, an evaluation passes only when the shield changed at most this
    fraction of actions: competence borrowed from the shield is not competence.
    ``None`` ignores interventions."""
    min_margin: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None
    """If set, the smallest normalised margin a pass may show on a controlled
    limit (0.0: no bound was crossed in physics). In per-limit mode it guards
    the limits *not* being widened instead. ``None`` ignores margins."""
    max_train_harm: Harm | None = None
    """If set, a widen also needs the training episodes that ended since the previous
    evaluation to have at most this harm per episode. Harm while learning is harm too;
    held-out passes stay the only evidence of competence, so this can only hold.
    ``None`` ignores training harm."""
    spike_train_harm: Harm | None = None
    """If set, training episodes since the previous evaluation with at least this harm
    per episode tighten at once, as a held-out harm spike does. Must exceed
    ``max_train_harm`` when both are set."""
    revert_to_last_safe: bool = True
    """On a spike go back to the last width at which an evaluation passed; when
    that is not lower than the current width, tighten by ``tighten_step``."""
    cooldown: int = Field(default=1, ge=0, le=1000)
    """Evaluations after a tighten that can neither widen nor count toward
    ``patience`` (they can still tighten)."""
    cooldown_backoff: Annotated[float, Field(ge=1.0, le=10.0)] = 2.0
    """Each further tighten before a widened width has passed multiplies the
    cooldown by this factor (1.0 disables): stops a widen/spike/revert limit
    cycle at an unsafe width from recurring every few evaluations."""
    per_limit: bool = False
    """One width per limit kind: a widen goes to the limit that binds most
    (``EvalStats.binding``); a spike reverts every limit widened since the last
    safe width, or tightens all of them."""

    @model_validator(mode="after")
    def _bands(self) -> CompetenceConfig:
        if self.spike_harm <= self.max_harm:
            raise ValueError(
                f"spike_harm ({self.spike_harm}) must be greater than "
                f"max_harm ({self.max_harm}): without a gap a harm hovering "
                "at one threshold would widen and tighten in turn"
            )
        if (
            self.spike_train_harm is not None
            and self.max_train_harm is not None
            and self.spike_train_harm <= self.max_train_harm
        ):
            raise ValueError(
                f"spike_train_harm ({self.spike_train_harm}) must be greater than "
                f"max_train_harm ({self.max_train_harm}): the gap is where it only holds"
            )
        if self.spike_failure_rate <= 1.0 - self.success_threshold:
            raise ValueError(
                f"spike_failure_rate ({self.spike_failure_rate}) must be greater than "
                f"1 - success_threshold ({1.0 - self.success_threshold:g}): otherwise "
                "a passing evaluation could also be a failure spike"
            )
        return self


class PIConfig(_SchedulerConfigBase):
    """Settings of :class:`SafetyBudgetPI`.

    The defaults are stable for any plant whose harm per episode grows by less than
    about 6 per unit of width (the linearised loop ``x' = (1 - a) x - b sum(x)``
    with ``a = g kp``, ``b = g ki`` needs ``0 < a < 2`` and ``0 < b < 4 - 2a``).
    """

    kind: Literal["pi"] = "pi"
    target_harm: Harm = 0.1
    """The harm per held-out episode the controller steers toward."""
    kp: Annotated[float, Field(ge=0.0, le=1000.0)] = 0.3
    """Proportional gain: width change per unit of harm-per-episode error."""
    ki: Annotated[float, Field(ge=0.0, le=1000.0)] = 0.03
    """Integral gain on the running sum of errors (one term per evaluation)."""
    start_width: UnitFloat = 0.0
    """Width before the first evaluation."""
    max_step: StepSize = 0.1
    """Largest change of width in one update, either way. The integral is also
    clamped so that ``ki * integral`` alone never exceeds it (anti-windup)."""


SchedulerConfig: TypeAlias = Annotated[
    StaticConfig | LinearConfig | CompetenceConfig | PIConfig,
    Field(discriminator="kind"),
]
"""Any scheduler config; the ``kind`` key picks the model (a TOML ``[scheduler]`` table)."""

_CONFIG_ADAPTER: TypeAdapter[StaticConfig | LinearConfig | CompetenceConfig | PIConfig] = (
    TypeAdapter(SchedulerConfig)
)

SCHEDULER_KINDS: Mapping[str, type[BaseModel]] = MappingProxyType(
    {
        "static": StaticConfig,
        "linear": LinearConfig,
        "competence": CompetenceConfig,
        "pi": PIConfig,
    }
)
"""The ``kind`` values a ``[scheduler]`` table accepts, each with its config model."""


def parse_scheduler_config(
    data: Mapping[str, Any],
) -> StaticConfig | LinearConfig | CompetenceConfig | PIConfig:
    """Validate a ``[scheduler]`` table into its config model.

    Raises:
        pydantic.ValidationError: missing or unknown ``kind``, unknown keys,
            out-of-range values.

    Example:
        >>> parse_scheduler_config({"kind": "competence", "widen_step": 0.2}).widen_step
        0.2
    """
    return _CONFIG_ADAPTER.validate_python(dict(data))


def make_scheduler(
    config: StaticConfig | LinearConfig | CompetenceConfig | PIConfig | Mapping[str, Any],
    limits: Sequence[str],
) -> Scheduler:
    """Build the scheduler a config describes.

    Args:
        config: A config model, or a mapping with a ``kind`` key (validated).
        limits: The limit kinds of the envelope the scheduler will drive.

    Raises:
        pydantic.ValidationError: ``config`` is a mapping that does not validate.
    """
    if not isinstance(config, BaseModel):
        config = parse_scheduler_config(config)
    if isinstance(config, StaticConfig):
        return Static(config.width, limits=limits)
    if isinstance(config, LinearConfig):
        return Linear(config.start_width, config.end_width, config.steps, limits=limits)
    if isinstance(config, CompetenceConfig):
        return Competence(config, limits=limits)
    if isinstance(config, PIConfig):
        return SafetyBudgetPI(config, limits=limits)
    raise TypeError(f"not a scheduler config: {type(config).__name__}")


# --------------------------------------------------------------------------- open loop


class Static(Scheduler):
    """A width that never moves.

    Args:
        width: The width for the whole run, in ``[0, 1]``.
        limits: See :class:`Scheduler`.

    Raises:
        pydantic.ValidationError: ``width`` outside ``[0, 1]``.
    """

    kind = "static"

    def __init__(self, width: float, *, limits: Sequence[str] = ()) -> None:
        self.config = StaticConfig(width=width)
        super().__init__(self.config.width, limits=limits)

    def update(self, stats: EvalStats) -> Width:
        return self._commit(stats.step, self.config.width, "static")


class Linear(Scheduler):
    """A time-based curriculum: the width interpolates linearly on ``stats.step``.

    ``width = start + (end - start) * clip(step / steps, 0, 1)``. It ignores
    every metric, which is the point: the baseline that shows what judging
    competence buys.

    Args:
        start_width: Width at step 0.
        end_width: Width from ``steps`` on.
        steps: Training timesteps of the ramp (at least 1).
        limits: See :class:`Scheduler`.

    Raises:
        pydantic.ValidationError: a width outside ``[0, 1]`` or ``steps < 1``.
    """

    kind = "linear"

    def __init__(
        self,
        start_width: float = 0.0,
        end_width: float = 1.0,
        steps: int = 1,
        *,
        limits: Sequence[str] = (),
    ) -> None:
        self.config = LinearConfig(start_width=start_width, end_width=end_width, steps=steps)
        super().__init__(self.config.start_width, limits=limits)

    def value(self, step: int) -> float:
        """The scheduled width at training step ``step``."""
        cfg = self.config
        frac = min(max(step / cfg.steps, 0.0), 1.0)
        return _clamp(cfg.start_width + (cfg.end_width - cfg.start_width) * frac)

    def update(self, stats: EvalStats) -> Width:
        return self._commit(stats.step, self.value(stats.step), "linear")


# --------------------------------------------------------------------------- competence


class Competence(Scheduler):
    """Widens on sustained held-out competence, tightens at once on a spike.

    Each :meth:`update` does exactly one of:

    1. **tighten** (``"tighten: harm spike"`` / ``"tighten: failure spike"``):
       the evaluation spiked. Go back to the last width at which an evaluation
       passed, or, when that is not lower (or unknown), tighten by
       ``tighten_step`` and forget the discredited last-safe width. Reset the
       streak and start a cooldown.
    2. **hold** (``"hold: <why>"``): no episodes, a metric in the band between
       pass and spike, the cooldown, a streak shorter than ``patience``, the
       caps reached, or (per-limit) an unsafe margin on another limit.
    3. **widen** (``"widen"`` / ``"widen: <kinds>"``): ``patience`` consecutive
       passes outside a cooldown. The streak restarts, so every new width must
       earn its own passes.

    Hysteresis comes from three places: pass and spike thresholds are apart
    (the config rejects ``spike_cost_rate <= max_cost_rate``), a widen needs
    ``patience`` passes in a row, and after a tighten ``cooldown`` evaluations
    neither widen nor count. Tightens that recur before a widened width has
    passed multiply the cooldown by ``cooldown_backoff``.

    In per-limit mode (``config.per_limit``) the width is a dict over
    ``limits``. A widen goes to the limit kind(s) with the largest
    ``stats.binding`` fraction (ties, including "no binding data", widen
    together) that are not yet at the cap, and only when every *other* limit's
    margin is at least ``min_margin`` (when set). A spike applies the rule
    above to the whole dict: limits widened since the last safe width go back,
    and if nothing would go lower every limit tightens by ``tighten_step``.

    Args:
        config: The settings; defaults to ``CompetenceConfig()``.
        limits: The limit kinds controlled. Required (non-empty) in per-limit
            mode; in scalar mode empty means every limit of the envelope.

    Raises:
        ValueError: per-limit mode without limits.

    Example:
        >>> sched = Competence(CompetenceConfig(patience=1))
        >>> sched.update(EvalStats(step=1, episodes=5, success_rate=1.0, cost_rate=0.0, harm_per_episode=0.0))
        0.1
        >>> sched.update(EvalStats(step=2, episodes=5, success_rate=1.0, cost_rate=0.3, harm_per_episode=3.0))
        0.0
    """

    kind = "competence"

    def __init__(
        self, config: CompetenceConfig | None = None, *, limits: Sequence[str] = ()
    ) -> None:
        self.config = config if config is not None else CompetenceConfig()
        start: Width = self.config.start_width
        if self.config.per_limit:
            if not limits:
                raise ValueError("per-limit mode needs the limit kinds it controls (limits=...)")
            start = dict.fromkeys(limits, self.config.start_width)
        super().__init__(start, limits=limits)
        self._streak = 0
        self._cooldown_left = 0
        self._strikes = 0  # tightens since a widened width last passed
        self._probation = False  # widened, and the new width has not passed yet
        self._ever_passed = False
        self._last_safe: Width | None = None

    # -- the decision ----------------------------------------------------------------

    def update(self, stats: EvalStats) -> Width:
        cfg = self.config
        if stats.episodes <= 0:
            return self._commit(stats.step, self._width, "hold: no episodes")
        m = _metrics(stats)

        # Tighten first: a spike wins over everything, cooldown included.
        if m.harm >= cfg.spike_harm:
            return self._tighten(stats.step, "tighten: harm spike")
        if (
            cfg.spike_train_harm is not None
            and m.train_harm is not None
            and m.train_harm >= cfg.spike_train_harm
        ):
            return self._tighten(stats.step, "tighten: training harm spike")
        if self._ever_passed and m.failure >= cfg.spike_failure_rate:
            return self._tighten(stats.step, "tighten: failure spike")

        in_cooldown = self._cooldown_left > 0
        if in_cooldown:
            self._cooldown_left -= 1

        why_not = self._why_not_passing(stats, m)
        if why_not:
            self._streak = 0
            return self._commit(stats.step, self._width, f"hold: {why_not}")

        # Passed: this width is now the last known safe one.
        self._last_safe = _copy(self._width)
        self._ever_passed = True
        if self._probation:
            self._strikes = 0
            self._probation = False
        if in_cooldown:
            return self._commit(stats.step, self._width, "hold: cooldown")
        self._streak = min(self._streak + 1, cfg.patience)
        if self._streak < cfg.patience:
            return self._commit(stats.step, self._width, f"hold: streak {self._streak}")
        return self._widen(stats)

    def _why_not_passing(self, stats: EvalStats, m: _Metrics) -> str:
        cfg = self.config
        if m.success < cfg.success_threshold:
            return "success"
        if m.harm > cfg.max_harm:
            return "harm"
        if cfg.max_train_harm is not None and m.train_harm is not None:
            if m.train_harm > cfg.max_train_harm:
                return "training harm"
        if cfg.max_intervention_rate is not None and m.intervention > cfg.max_intervention_rate:
            return "interventions"
        # Per-limit mode checks margins when choosing what to widen, not here:
        # the limit that binds most has a margin near 0 by definition.
        if cfg.min_margin is not None and not cfg.per_limit:
            kinds = self.limits or tuple(stats.min_margin)
            for k in kinds:
                margin = _margin(stats, k)
                if margin is not None and margin < cfg.min_margin:
                    return f"margin {k}"
        return ""

    def _widen(self, stats: EvalStats) -> Width:
        cfg = self.config
        width = self._width
        if not isinstance(width, dict):
            if width >= 1.0:
                return self._commit(stats.step, width, "hold: at cap")
            self._streak = 0
            self._probation = True
            return self._commit(stats.step, width + cfg.widen_step, "widen")

        open_kinds = [k for k in self.limits if width[k] < 1.0]
        if not open_kinds:
            return self._commit(stats.step, width, "hold: at cap")
        top = max(_binding(stats, k) for k in open_kinds)
        targets = [k for k in open_kinds if _binding(stats, k) >= top - _EPS]
        if cfg.min_margin is not None:
            for k in self.limits:
                margin = _margin(stats, k)
                if k not in targets and margin is not None and margin < cfg.min_margin:
                    # Keep the streak: widen as soon as the other limit has room again.
                    return self._commit(stats.step, width, f"hold: margin {k}")
        self._streak = 0
        self._probation = True
        new = {k: (v + cfg.widen_step if k in targets else v) for k, v in width.items()}
        return self._commit(stats.step, new, "widen: " + ",".join(targets))

    def _tighten(self, step: int, reason: str) -> Width:
        cfg = self.config
        cur = self._width
        new: Width | None = None
        if cfg.revert_to_last_safe and self._last_safe is not None:
            # Elementwise min: a revert never widens any limit.
            candidate = _elementwise(min, self._last_safe, cur)
            if _any_lower(candidate, cur):
                new = candidate
                self._last_safe = _copy(candidate)
        if new is None:
            new = _elementwise(lambda w, _: w - cfg.tighten_step, cur, cur)
            # The spike happened at or below the last safe width: it is discredited.
            self._last_safe = None
        self._streak = 0
        self._probation = False
        self._strikes += 1
        # Exponent capped: 2**20 evaluations is "never" in practice and keeps it an int.
        factor = cfg.cooldown_backoff ** min(self._strikes - 1, 20)
        self._cooldown_left = math.ceil(cfg.cooldown * factor - _EPS)
        return self._commit(step, new, reason)

    # -- state ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            streak=self._streak,
            cooldown_left=self._cooldown_left,
            strikes=self._strikes,
            probation=self._probation,
            ever_passed=self._ever_passed,
            last_safe=None if self._last_safe is None else _copy(self._last_safe),
        )
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._streak = int(state["streak"])
        self._cooldown_left = int(state["cooldown_left"])
        self._strikes = int(state["strikes"])
        self._probation = bool(state["probation"])
        self._ever_passed = bool(state["ever_passed"])
        last_safe = state["last_safe"]
        if last_safe is None:
            self._last_safe = None
        else:
            ls = _width_from_json(last_safe)
            self._check_shape(ls, what="state last_safe")
            self._last_safe = _clamp_width(ls)


def _elementwise(op: Any, a: Width, b: Width) -> Width:
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: op(a[k], b[k]) for k in b}
    if isinstance(a, dict) or isinstance(b, dict):
        raise TypeError("cannot mix a scalar and a per-limit width")
    return float(op(a, b))


def _any_lower(a: Width, b: Width) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return any(a[k] < b[k] - _EPS for k in b)
    assert not isinstance(a, dict) and not isinstance(b, dict)
    return a < b - _EPS


# --------------------------------------------------------------------------- PI baseline


class SafetyBudgetPI(Scheduler):
    """Simmer-style PI controller on the width toward a target harm per episode.

    Simmer (Gopalakrishnan et al. 2021) anneals a safety budget with a PI
    controller; OmniSafe's ``SimmerPIDAgent`` moves the budget by
    ``kp * error + ki * sum(errors)`` each update. Here the controlled quantity
    is the width and the measurement the held-out harm per episode::

        error     = target_harm - harm_per_episode
        integral += error            (skipped while pinned at 0 or 1 in that direction)
        integral  = clip(integral, -max_step / ki, max_step / ki)   # anti-windup
        width    += clip(kp * error + ki * integral, -max_step, max_step)

    It has no notion of success or patience: it is the closed-loop baseline
    that only watches harm. Evaluations without episodes hold.

    Args:
        config: The settings; defaults to ``PIConfig()``.
        limits: See :class:`Scheduler` (one scalar width for all of them).
    """

    kind = "pi"

    def __init__(self, config: PIConfig | None = None, *, limits: Sequence[str] = ()) -> None:
        self.config = config if config is not None else PIConfig()
        super().__init__(self.config.start_width, limits=limits)
        self._integral = 0.0

    def update(self, stats: EvalStats) -> Width:
        cfg = self.config
        if stats.episodes <= 0:
            return self._commit(stats.step, self._width, "hold: no episodes")
        width = self._width
        assert not isinstance(width, dict)  # scalar by construction
        # an unmeasured (NaN) harm tightens as hard as one step allows
        error = cfg.target_harm - min(_harm(stats.harm_per_episode), _HARM_MAX)
        # Conditional integration: integrating while the output is pinned at a
        # bound would only wind up an integral that later delays the reaction.
        pinned = (width >= 1.0 and error > 0.0) or (width <= 0.0 and error < 0.0)
        if not pinned and cfg.ki > 0.0:
            limit = cfg.max_step / cfg.ki
            self._integral = min(max(self._integral + error, -limit), limit)
        delta = cfg.kp * error + cfg.ki * self._integral
        delta = min(max(delta, -cfg.max_step), cfg.max_step)
        new = _clamp(width + delta)
        if new > width + _EPS:
            reason = "widen"
        elif new < width - _EPS:
            reason = "tighten: harm above target"
        else:
            reason = "hold"
        return self._commit(stats.step, new, reason)

    @property
    def integral(self) -> float:
        """The anti-windup-clamped running sum of errors."""
        return self._integral

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["integral"] = self._integral
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._integral = float(state["integral"])
