"""The `safebot` command: user errors are one line and exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from safebot.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "no_such_task"], "not found"),
        (["train", "reach", "--algo", "dqn"], "unknown algorithm"),
        (["train", "reach", "--steps", "-3"], "--steps must be positive"),
        (["train", "reach", "--scheduler", "magic"], "unknown scheduler 'magic'"),
        (["train", "reach", "--shield", "maybe"], "unknown shield mode 'maybe'"),
        (["train", "reach", "--scheduler", "none", "--shield", "on"], "means --shield off"),
        (["train", "reach", "--shield", "off", "--scheduler", "pi"], "needs the shield"),
        (["train", "push", "--demos", "-1"], "--demos must be >= 0"),
        (["train", "reach", "--demos", "4", "--algo", "ppo"], "need algo = 'sac'"),
        (["train", "reach", "--constraint", "lagrange"], "unknown reward constraint 'lagrange'"),
        (["eval", "/nonexistent/run"], "not a safebot run directory"),
        (["eval", "/nonexistent/run", "--which", "worst"], "unknown --which 'worst'"),
        (
            ["export", "/nonexistent/run", "--out", "/nonexistent/bundle"],
            "not a safebot run directory",
        ),
        (["render", "/nonexistent/run"], "not a safebot run directory"),
        (["plot", "/nonexistent/run"], "no metrics.csv"),
    ],
)
def test_user_errors_exit_2_with_one_line(args: list[str], needle: str, tmp_path: Path) -> None:
    result = runner.invoke(
        app, [*args, *(["--out", str(tmp_path / "r")] if args[0] == "train" else [])]
    )
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bad_task_file_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(Path("tasks/reach.toml").read_text().replace("[robot]", "[robot]\ncolour = 1"))
    result = runner.invoke(app, ["train", str(bad), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert str(bad) in result.output and "robot.colour" in result.output


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("train", "eval", "render", "plot", "bench"):
        assert cmd in result.output
