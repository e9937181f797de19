"""``safebot bench learners``: the multi-seed table's schema, its goals, and a resumable grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safebot.bench.learners import goal_of, label
from safebot.cli import app


def test_labels_and_goals_follow_the_issue(tmp_path: Path) -> None:
    assert label("reach_ppo") == "reach-ppo" and label("tasks/push.toml") == "push"
    assert goal_of("reach", tmp_path) == {"success": 0.9, "source": "issue 13"}
    assert goal_of("reach_ppo", tmp_path)["success"] == 0.8
    assert goal_of("push", tmp_path) is None  # no scripted table: no goal to check
    careful = [{"width": 0.0, "success_rate": 0.6}, {"width": 1.0, "success_rate": 0.96}]
    (tmp_path / "scripted_push.json").write_text(json.dumps({"careful": careful}))
    goal = goal_of("push", tmp_path)
    assert goal is not None and goal["success"] == pytest.approx(0.48)
    assert "careful scripted controller's width-0 success 60%" in goal["source"]


def test_a_careful_controller_that_never_succeeds_does_not_make_the_goal_zero(
    tmp_path: Path,
) -> None:
    # Press: at the start speed bound the careful descent does not finish in time
    table = {
        "careful": [{"width": 0.0, "success_rate": 0.0}, {"width": 1.0, "success_rate": 1.0}],
        "naive": [{"width": 0.0, "success_rate": 0.46}, {"width": 1.0, "success_rate": 1.0}],
    }
    (tmp_path / "scripted_press.json").write_text(json.dumps(table))
    goal = goal_of("press", tmp_path)
    assert goal is not None and goal["success"] == pytest.approx(0.368)
    assert "naive scripted controller's width-0 success 46%" in goal["source"]
    assert "careful one's is 0 %" in goal["source"]


@pytest.mark.slow
def test_a_tiny_grid_writes_the_summary_schema_and_a_restart_reads_it_back(
    tmp_path: Path,
) -> None:
    out, results = tmp_path / "runs", tmp_path / "results"
    args = [
        "bench", "learners", "--out", str(out), "--tasks", "reach", "--seeds", "1",
        "--steps", "100", "--final-episodes", "2", "--results", str(results),
    ]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((results / "summary.json").read_text())
    row = summary["reach"]["0"]
    assert set(row) >= {"success", "episodes", "steps", "wall_s", "which"}
    assert row["episodes"] == 2 and row["steps"] == 100 and row["which"] in ("best", "last")
    assert 0.0 <= row["success"] <= 1.0 and row["wall_s"] > 0
    report = json.loads((out / "report.json").read_text())
    assert report["goals"]["reach"]["success"] == 0.9
    assert report["goals"]["reach"]["met_on_every_seed"] is (row["success"] >= 0.9)
    again = CliRunner().invoke(app, args)  # finished: read back, not retrained
    assert again.exit_code == 0, again.output
    assert (
        json.loads((results / "summary.json").read_text())["reach"]["0"]["wall_s"] == row["wall_s"]
    )
