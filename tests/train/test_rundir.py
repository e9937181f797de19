"""RunDir (safebot.train.rundir): paths, the checkpoint index, metrics on resume, config round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safebot.spec import load_task
from safebot.train import RunError
from safebot.train.rundir import METRIC_FIELDS, RunDir


def test_paths_of_a_run_directory(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.config == tmp_path / "config.toml"
    assert run.latest == tmp_path / "ckpt" / "latest.json"
    assert run.checkpoint_file("model", 64) == tmp_path / "ckpt" / "model_64.zip"
    assert run.checkpoint_file("vecnormalize", 64).name == "vecnormalize_64.pkl"
    assert run.final_normalizer.name == "final_vecnormalize.pkl"
    assert run.is_empty() and RunDir(tmp_path / "missing").is_empty()
    assert RunDir.default("reach").root.parent == Path("runs")


def test_latest_checkpoint_lists_what_was_saved_and_names_a_corrupt_index(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.latest_checkpoint() is None
    run.ckpt.mkdir()
    run.latest.write_text(
        json.dumps({"step": 64, "model": "model_64.zip", "state": "state_64.json"})
    )
    ckpt = run.latest_checkpoint()
    assert ckpt is not None and ckpt.step == 64 and ckpt.model == run.ckpt / "model_64.zip"
    assert ckpt.replay is None and ckpt.normalizer is None
    assert ckpt.expected_normalizer == run.ckpt / "vecnormalize_64.pkl"
    for bad in ("{not json", json.dumps({"step": 64})):
        run.latest.write_text(bad)
        with pytest.raises(RunError, match=r"checkpoint index .*latest\.json is corrupt"):
            run.latest_checkpoint()


def test_only_the_newest_two_checkpoints_are_kept(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.ckpt.mkdir()
    for step in (64, 128, 192):
        for part in ("model", "replay", "state", "vecnormalize"):
            run.checkpoint_file(part, step).write_text("x")
    run.drop_old_checkpoints(keep=2)
    assert sorted(p.name for p in run.ckpt.iterdir()) == sorted(
        f"{part}_{s}{ext}"
        for s in (128, 192)
        for part, ext in (("model", ".zip"), ("replay", ".pkl"), ("state", ".json"), ("vecnormalize", ".pkl"))
    )  # fmt: skip


def _row(step: int) -> str:
    return ",".join(
        str(step) if k == "step" else ("widen" if k == "reason" else "0.5") for k in METRIC_FIELDS
    )


def test_truncate_metrics_drops_rows_after_the_checkpoint(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.last_metrics_row() == {}
    run.metrics.write_text(
        "\r\n".join([",".join(METRIC_FIELDS), _row(64), _row(128), _row(192)]) + "\r\n"
    )
    run.truncate_metrics(128)
    last = run.last_metrics_row()
    assert last["step"] == 128 and last["reason"] == "widen" and last["width"] == 0.5
    assert len(run.metrics.read_text().splitlines()) == 3


def test_config_round_trip_and_errors_name_the_file(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    with pytest.raises(RunError, match="not a safebot run directory"):
        run.load_config()
    spec = load_task("reach")
    run.write_config(spec, {"scheduler": "competence", "shield": "on"})
    back, meta = run.load_config()
    assert meta == {"scheduler": "competence", "shield": "on"}
    assert back.model_dump(mode="json") == spec.model_dump(mode="json")
    run.config.write_text("[task\n")
    with pytest.raises(RunError, match=r"config\.toml: corrupt config"):
        run.load_config()


def test_final_width_reads_the_summary(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.final_width() == 0.0
    run.summary.write_text(json.dumps({"scheduler_state": {"width": 0.25}}))
    assert run.final_width() == 0.25
    run.summary.write_text(json.dumps({"scheduler_state": None, "width": 1.0}))
    assert run.final_width() == 1.0
