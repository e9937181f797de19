"""Run modes (safebot.modes): enums, and the one decoder of the legacy --scheduler none|penalty."""

from __future__ import annotations

import typing

import pytest

from safebot.modes import (
    LEGACY_SCHEDULERS,
    RewardConstraint,
    RunMode,
    SchedulerChoice,
    SchedulerKind,
    ShieldMode,
    decode_run_mode,
)
from safebot.schedulers import CompetenceConfig, LinearConfig, PIConfig, StaticConfig


def test_scheduler_kinds_are_the_kinds_of_scheduler_tables() -> None:
    configs = (StaticConfig, LinearConfig, CompetenceConfig, PIConfig)
    kinds = {typing.get_args(c.model_fields["kind"].annotation)[0] for c in configs}
    assert kinds == {k.value for k in SchedulerKind}


def test_scheduler_choice_is_every_kind_plus_the_legacy_spellings() -> None:
    assert {c.value for c in SchedulerChoice} == {k.value for k in SchedulerKind} | set(
        LEGACY_SCHEDULERS
    )


@pytest.mark.parametrize(
    ("args", "want"),
    [
        ((), RunMode(None, ShieldMode.ON, RewardConstraint.NONE)),
        (("competence",), RunMode(SchedulerKind.COMPETENCE)),
        (("none",), RunMode(None, ShieldMode.OFF, RewardConstraint.NONE)),
        (("penalty",), RunMode(None, ShieldMode.OFF, RewardConstraint.PENALTY)),
        ((None, "off"), RunMode(None, ShieldMode.OFF, RewardConstraint.NONE)),
        ((None, "off", "penalty"), RunMode(None, ShieldMode.OFF, RewardConstraint.PENALTY)),
        (("penalty", "off", "penalty"), RunMode(None, ShieldMode.OFF, RewardConstraint.PENALTY)),
        ((SchedulerChoice.PI, ShieldMode.ON), RunMode(SchedulerKind.PI)),
        (
            ("linear", None, "penalty"),
            RunMode(SchedulerKind.LINEAR, constraint=RewardConstraint.PENALTY),
        ),
    ],
)
def test_decode_run_mode(args: tuple[str | None, ...], want: RunMode) -> None:
    assert decode_run_mode(*args) == want


def test_legacy_names_round_trip() -> None:
    for name in LEGACY_SCHEDULERS:
        mode = decode_run_mode(name)
        assert not mode.shielded and mode.legacy_name == name
    assert decode_run_mode("competence").legacy_name is None


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("magic",), "unknown scheduler 'magic'; choose one of static, linear, competence, pi, none, penalty"),
        ((None, "maybe"), "unknown shield mode 'maybe'; choose one of on, off"),
        ((None, None, "lagrange"), "unknown reward constraint 'lagrange'"),
        (("none", "on"), "--scheduler none means --shield off, not --shield on"),
        (("none", None, "penalty"), "--scheduler none means --constraint none, not --constraint penalty"),
        (("penalty", None, "none"), "means --constraint penalty, not --constraint none"),
    ],
)  # fmt: skip
def test_bad_or_contradictory_modes_are_named(args: tuple[str | None, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decode_run_mode(*args)
