"""RunOptions and resolve_spec: the legacy and the enum spellings resolve to the same run."""

from __future__ import annotations

import pytest

from safebot.modes import RewardConstraint, SchedulerKind, ShieldMode
from safebot.schedulers import CompetenceConfig, LinearConfig, StaticConfig
from safebot.spec import load_task
from safebot.train import RunError, RunOptions, resolve_spec


@pytest.mark.parametrize(
    ("legacy", "new"),
    [
        (RunOptions(scheduler="none"), RunOptions(shield=ShieldMode.OFF)),
        (
            RunOptions(scheduler="penalty"),
            RunOptions(shield="off", constraint=RewardConstraint.PENALTY),
        ),
        (RunOptions(scheduler="static", width=0.3), RunOptions(scheduler=SchedulerKind.STATIC, width=0.3)),
        (RunOptions(scheduler="none", width=0.5), RunOptions(shield="off", width=0.5)),
    ],
)  # fmt: skip
def test_legacy_and_enum_spellings_resolve_alike(legacy: RunOptions, new: RunOptions) -> None:
    spec = load_task("reach")
    assert legacy.mode() == new.mode()
    assert resolve_spec(spec, legacy) == resolve_spec(spec, new)


def test_scheduler_tables_of_each_choice() -> None:
    spec = load_task("reach")
    steps = 500

    def sched(**kw: object) -> object:
        return resolve_spec(spec, RunOptions(steps=steps, **kw)).scheduler  # type: ignore[arg-type]

    assert sched(scheduler="none") == StaticConfig(width=1.0)  # unshielded: the caps
    assert sched(scheduler="static") == StaticConfig(width=0.0)
    assert sched(scheduler="linear") == LinearConfig(steps=steps)
    assert isinstance(sched(scheduler="competence"), CompetenceConfig)
    assert sched(width=0.4) == StaticConfig(width=0.4)
    assert sched() == spec.scheduler


def test_an_unshielded_run_cannot_ask_for_a_moving_scheduler() -> None:
    with pytest.raises(RunError, match="--scheduler competence needs the shield"):
        RunOptions(shield="off", scheduler="competence").validate()
    with pytest.raises(RunError, match="--scheduler penalty means --shield off, not --shield on"):
        RunOptions(scheduler="penalty", shield="on").validate()
