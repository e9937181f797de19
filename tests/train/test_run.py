"""The [run] table of config.toml: written with the enums, read back from old and new runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from safebot.modes import RewardConstraint, ShieldMode, decode_run_mode
from safebot.spec import load_task
from safebot.train import RunError, RunOptions, resolve_spec
from safebot.train.run import _mode_of, _run_table
from safebot.train.rundir import RunDir


@pytest.mark.parametrize(
    ("meta", "shield", "constraint"),
    [
        ({}, ShieldMode.ON, RewardConstraint.NONE),  # a run of before the [run] table had keys
        ({"scheduler": "none"}, ShieldMode.OFF, RewardConstraint.NONE),  # written before the enums
        ({"scheduler": "penalty"}, ShieldMode.OFF, RewardConstraint.PENALTY),
        ({"scheduler": "penalty", "shield": "off", "constraint": "penalty"}, ShieldMode.OFF, RewardConstraint.PENALTY),
        ({"scheduler": "competence", "shield": "on", "constraint": "none"}, ShieldMode.ON, RewardConstraint.NONE),
    ],
)  # fmt: skip
def test_resume_reads_old_and_new_run_tables(
    tmp_path: Path, meta: dict[str, str], shield: ShieldMode, constraint: RewardConstraint
) -> None:
    mode = _mode_of(RunDir(tmp_path), meta)
    assert (mode.shield, mode.constraint) == (shield, constraint)


def test_a_corrupt_run_table_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(RunError, match=r"config\.toml: \[run\] unknown scheduler 'greedy'"):
        _mode_of(RunDir(tmp_path), {"scheduler": "greedy"})


@pytest.mark.parametrize("scheduler", ["none", "penalty", "competence", "static"])
def test_the_run_table_keeps_the_legacy_scheduler_name_and_decodes_to_the_same_mode(
    scheduler: str,
) -> None:
    opts = RunOptions(scheduler=scheduler)
    table = _run_table(resolve_spec(load_task("reach"), opts), opts.mode())
    assert table["scheduler"] == scheduler
    assert decode_run_mode(
        table["scheduler"], table["shield"], table["constraint"]
    ) == decode_run_mode(table["scheduler"])
