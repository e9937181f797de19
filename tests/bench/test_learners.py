"""``safebot bench learners``: the multi-seed table's schema, its goals, and a resumable grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safebot.bench.learners import bench_learners, goal_of, label, merge_into
from safebot.cli import app
from safebot.config import SpecError


def test_labels_and_goals_follow_the_issue(tmp_path: Path) -> None:
    assert label("reach_ppo") == "reach-ppo" and label("tasks/push.toml") == "push"
    assert goal_of("reach", tmp_path) == {"success": 0.9, "source": "issue 13"}
    ppo = goal_of("reach_ppo", tmp_path)
    assert ppo is not None and ppo["success"] == 0.8
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


class _FakeRuns:
    """An in-process executor that 'trains' by returning a fixed row (no MuJoCo, no pool)."""

    name, workers = "fake", 1

    def __init__(self) -> None:
        self.calls = 0

    def map_unordered(self, fn, items):  # type: ignore[no-untyped-def]
        for item in items:
            self.calls += 1
            row = {"success": 0.95, "episodes": 50, "steps": 100, "wall_s": 1.0, "which": "best"}
            yield item, row


def test_merge_keeps_other_tasks_and_replaces_this_sittings_whole() -> None:
    old_summary = {"press": {"0": {"success": 0.5}}, "reach": {"0": {"success": 0.1}}}
    old_report = {
        "note": "kept",
        "goals": {"press": {"success": 0.48}, "reach": {"success": 0.9}},
        "runs": {"press": {"code_commit": "aaa"}, "reach": {"code_commit": "bbb"}},
        "failed": {"press/seed1": "boom", "reach/seed2": "old failure"},
    }
    summary = {"reach": {"1": {"success": 0.92}}}
    report = {"goals": {"reach": {"success": 0.9, "met_on_every_seed": True}},
              "runs": {"reach": {"code_commit": "ccc"}}, "failed": {}, "cpus": 2}  # fmt: skip
    s, r = merge_into(old_summary, old_report, summary, report)
    assert s == {"press": {"0": {"success": 0.5}}, "reach": {"1": {"success": 0.92}}}
    assert r["summary"] == s and r["note"] == "kept" and r["cpus"] == 2
    assert r["goals"]["press"] == {"success": 0.48} and r["goals"]["reach"]["met_on_every_seed"]
    assert r["runs"] == {"press": {"code_commit": "aaa"}, "reach": {"code_commit": "ccc"}}
    assert r["failed"] == {"press/seed1": "boom"}


def test_a_grid_into_a_results_folder_keeps_the_tasks_other_sittings_wrote(
    tmp_path: Path,
) -> None:
    """It used to overwrite both files with this sitting's tasks only."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "summary.json").write_text(json.dumps({"press": {"0": {"success": 0.5}}}))
    (results / "report.json").write_text(json.dumps({"goals": {"press": {"success": 0.48}}}))
    report = bench_learners(tmp_path / "runs", tasks=("reach",), seeds=(0, 1),
                            results=results, scripted_dir=tmp_path, executor=_FakeRuns())  # fmt: skip
    assert report["goals"]["reach"]["met_on_every_seed"] is True
    summary = json.loads((results / "summary.json").read_text())
    assert set(summary) == {"press", "reach"} and set(summary["reach"]) == {"0", "1"}
    written = json.loads((results / "report.json").read_text())
    assert set(written["goals"]) == {"press", "reach"} and written["summary"] == summary


def test_an_unreadable_results_file_stops_the_grid_before_training(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "summary.json").write_text("{not json")
    fake = _FakeRuns()
    with pytest.raises(SpecError, match=r"summary.json: not readable JSON"):
        bench_learners(tmp_path / "runs", tasks=("reach",), seeds=(0,), results=results,
                       scripted_dir=tmp_path, executor=fake)  # fmt: skip
    assert fake.calls == 0 and (results / "summary.json").read_text() == "{not json"
