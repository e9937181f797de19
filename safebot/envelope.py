"""Limits and the envelope: where each bound sits between its start and its hard cap.

A :class:`Limit` holds a start value (tight) and a cap (the loosest the
hardware or the task allows). The width in [0, 1] moves the bound linearly
from start (0) to cap (1). Whatever width is asked for — a scheduler bug, NaN,
2.0 — the bound stays between start and cap (design rule 3).

Some bounds loosen upward (a velocity), some downward (a keep-out margin, the
low corner of the workspace box); each limit knows which by construction, so
``cap`` is always *the loosest permitted value*.

Example:
    >>> env = Envelope.from_spec(load_task("reach").limits)
    >>> env.set_width(0.5)
    >>> env.bounds().ee_speed
    array([0.55, 0.55, 0.55])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from safebot.spec import LimitsSection

F64 = NDArray[np.float64]

LIMIT_KINDS = (
    "joint_velocity",
    "ee_speed",
    "workspace",
    "keepout",
    "joint_position",
    "contact_force",
)


class EnvelopeError(ValueError):
    """An envelope was built from invalid limits; the message names the limit."""


@dataclass(frozen=True)
class Limit:
    """One limit kind's start and cap (arrays; ``cap`` is the loosest value).

    ``loosen`` is +1 where the bound loosens upward and -1 where it loosens
    downward; the constructor checks that the cap lies on the loose side.
    """

    kind: str
    start: F64
    cap: F64
    loosen: F64

    def __post_init__(self) -> None:
        if self.kind not in LIMIT_KINDS:
            raise EnvelopeError(
                f"unknown limit kind {self.kind!r}; known: {', '.join(LIMIT_KINDS)}"
            )
        for name in ("start", "cap"):
            v = getattr(self, name)
            if not np.all(np.isfinite(v)):
                raise EnvelopeError(f"limit {self.kind!r}: {name} has non-finite values {v}")
        if self.start.shape != self.cap.shape or self.start.shape != self.loosen.shape:
            raise EnvelopeError(
                f"limit {self.kind!r}: start {self.start.shape}, cap {self.cap.shape} shapes differ"
            )
        bad = self.loosen * (self.cap - self.start) < 0
        if np.any(bad):
            i = int(np.argmax(bad))
            word = "below" if self.loosen.flat[i] > 0 else "above"
            raise EnvelopeError(
                f"limit {self.kind!r}: cap {self.cap.flat[i]} is {word} start {self.start.flat[i]} "
                f"(element {i}); the cap must be the loosest value"
            )

    @classmethod
    def make(cls, kind: str, start: ArrayLike, cap: ArrayLike, loosen: ArrayLike = 1.0) -> Limit:
        s = np.atleast_1d(np.asarray(start, dtype=np.float64))
        c = np.atleast_1d(np.asarray(cap, dtype=np.float64))
        s, c = np.broadcast_arrays(s, c)
        sign = np.broadcast_to(np.asarray(loosen, dtype=np.float64), s.shape)
        return cls(kind, s.copy(), c.copy(), sign.copy())

    def value(self, width: float) -> F64:
        """The bound at ``width``, clamped to lie between start and cap."""
        w = float(width)
        w = 0.0 if not np.isfinite(w) else min(max(w, 0.0), 1.0)
        v = self.start + w * (self.cap - self.start)
        lo, hi = np.minimum(self.start, self.cap), np.maximum(self.start, self.cap)
        return np.clip(v, lo, hi)


@dataclass(frozen=True)
class Bounds:
    """The numeric bounds at one width; ``None`` where the limit is not enforced."""

    joint_velocity: F64 | None = None
    ee_speed: F64 | None = None
    workspace_low: F64 | None = None
    workspace_high: F64 | None = None
    keepout_margin: float | None = None
    joint_margin: float | None = None
    contact_force: float | None = None


class Envelope:
    """The set of limits and their current width (one value, or one per limit kind).

    Args:
        limits: limit kind -> :class:`Limit`. A workspace limit is a 6-vector
            ``(low xyz, high xyz)``.
        width: initial width (0 = start bounds).
        joint_gain: barrier gain (1/s) of the joint position limit.
    """

    def __init__(
        self,
        limits: Mapping[str, Limit],
        width: float | Mapping[str, float] = 0.0,
        *,
        joint_gain: float = 5.0,
        barrier_gain: float = 5.0,
    ) -> None:
        for kind, lim in limits.items():
            if lim.kind != kind:
                raise EnvelopeError(f"limit stored under {kind!r} is of kind {lim.kind!r}")
        if not (
            np.isfinite(joint_gain)
            and joint_gain > 0
            and np.isfinite(barrier_gain)
            and barrier_gain > 0
        ):
            raise EnvelopeError(
                f"barrier gains must be positive and finite, got {joint_gain}, {barrier_gain}"
            )
        self.limits = dict(limits)
        self.joint_gain = float(joint_gain)
        self.barrier_gain = float(barrier_gain)
        self._width = dict.fromkeys(self.limits, 0.0)
        # bumped by every set_width: lets the shield cache the bounds between width changes
        self._revision = 0
        self.set_width(width)

    @classmethod
    def from_spec(cls, spec: LimitsSection, width: float | Mapping[str, float] = 0.0) -> Envelope:
        """Build from a task spec's ``[limits]`` section."""
        lim: dict[str, Limit] = {}
        if spec.joint_velocity is not None:
            lim["joint_velocity"] = Limit.make(
                "joint_velocity", spec.joint_velocity.start, spec.joint_velocity.cap
            )
        if spec.ee_speed is not None:
            s, c = np.broadcast_arrays(
                np.atleast_1d(spec.ee_speed.start), np.atleast_1d(spec.ee_speed.cap)
            )
            lim["ee_speed"] = Limit.make(
                "ee_speed",
                np.broadcast_to(s, (3,)) if s.size == 1 else s,
                np.broadcast_to(c, (3,)) if c.size == 1 else c,
            )
        if spec.workspace is not None:
            ws = spec.workspace
            lim["workspace"] = Limit.make(
                "workspace",
                [*ws.start_low, *ws.start_high],
                [*ws.cap_low, *ws.cap_high],
                [-1] * 3 + [1] * 3,
            )
        if spec.keepout is not None:
            lim["keepout"] = Limit.make("keepout", spec.keepout.start, spec.keepout.cap, -1.0)
        if spec.joint_position is not None:
            lim["joint_position"] = Limit.make(
                "joint_position", spec.joint_position.start, spec.joint_position.cap, -1.0
            )
        if spec.contact_force is not None:
            lim["contact_force"] = Limit.make(
                "contact_force", spec.contact_force.start, spec.contact_force.cap
            )
        gain = spec.joint_position.gain if spec.joint_position is not None else spec.barrier_gain
        return cls(lim, width, joint_gain=gain, barrier_gain=spec.barrier_gain)

    @property
    def revision(self) -> int:
        """Bumped by every :meth:`set_width`: caches of the bounds compare it to know they are stale."""
        return self._revision

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.limits)

    @property
    def width(self) -> dict[str, float]:
        """Current width per limit kind (a copy)."""
        return dict(self._width)

    def set_width(self, width: float | Mapping[str, float]) -> None:
        """Set one width for all limits or a width per kind; values are clamped to [0, 1]."""
        if isinstance(width, Mapping):
            unknown = set(width) - set(self.limits)
            if unknown:
                raise EnvelopeError(
                    f"width given for limits not in this envelope: {sorted(unknown)}"
                )
            items = dict(width)
        else:
            items = dict.fromkeys(self.limits, width)
        for k, w in items.items():
            w = float(w)
            self._width[k] = 0.0 if not np.isfinite(w) else min(max(w, 0.0), 1.0)
        self._revision += 1

    def bounds(self, width: float | Mapping[str, float] | None = None) -> Bounds:
        """Bounds at ``width`` (default: the current width); never beyond a cap."""
        if width is None:
            widths = self._width
        elif isinstance(width, Mapping):
            widths = {**self._width, **width}
        else:
            widths = dict.fromkeys(self.limits, float(width))

        def val(kind: str) -> F64 | None:
            lim = self.limits.get(kind)
            return None if lim is None else lim.value(widths[kind])

        ws = val("workspace")
        ko, jp, cf = val("keepout"), val("joint_position"), val("contact_force")
        return Bounds(
            joint_velocity=val("joint_velocity"),
            ee_speed=val("ee_speed"),
            workspace_low=None if ws is None else ws[:3],
            workspace_high=None if ws is None else ws[3:],
            keepout_margin=None if ko is None else float(ko[0]),
            joint_margin=None if jp is None else float(jp[0]),
            contact_force=None if cf is None else float(cf[0]),
        )

    def mean_width(self) -> float:
        return float(np.mean(list(self._width.values()))) if self._width else 0.0
