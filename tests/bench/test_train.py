"""``safebot bench train``: both arms run as ordinary runs, side by side, and a restart reads them back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safebot.bench.train import ARMS, arm_spec, steps_to, success_curve
from safebot.cli import app


def test_the_baseline_arm_is_plain_sb3_torch_with_one_gradient_step_per_env_step() -> None:
    ours, base = arm_spec("reach", "safebot").train, arm_spec("reach", "sb3").train
    assert (base.backend, base.train_freq, base.gradient_steps) == ("torch", 1, 1)
    assert ARMS["sb3"][1] and not ARMS["safebot"][1]  # the baseline keeps SB3's HER buffer
    # everything else is the task's recipe, for both
    same = ("net_arch", "batch_size", "learning_starts", "learning_rate", "gamma", "total_steps")
    assert all(getattr(ours, k) == getattr(base, k) for k in same)
    with pytest.raises(ValueError, match="unknown arm 'td3'"):
        arm_spec("reach", "td3")


def test_steps_to_a_success_level_reads_the_first_evaluation_that_reaches_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("step,success_rate,width\n1000,0.2,0\n2000,0.9,0\n3000,0.8,0\n4000,1.0,0\n")
    curve = success_curve(path)
    assert curve == [(1000, 0.2), (2000, 0.9), (3000, 0.8), (4000, 1.0)]
    assert steps_to(curve, 0.9) == 2000 and steps_to(curve, 1.0) == 4000
    assert steps_to(curve, 0.95) == 4000 and steps_to([(1, 0.5)], 0.9) is None


@pytest.mark.slow
def test_bench_train_runs_both_arms_and_a_restart_reads_them_back(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = [
        "bench", "train", "--out", str(out), "--steps", "600", "--eval-every", "300",
        "--eval-episodes", "1", "--final-episodes", "2",
    ]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "bench_train.json").read_text())
    assert set(report["arms"]) == {"safebot", "sb3"}
    for name, arm in report["arms"].items():
        assert arm["steps"] == 600 and arm["sittings"] == 1, name
        assert arm["env_steps_per_s"] > 0 and [s for s, _ in arm["curve"]] == [300, 600]
        assert arm["final"]["episodes"] == 2 and arm["final"]["which"] == "best"
        assert (out / name / "final_model.zip").is_file()
    import tomllib

    ran = {n: tomllib.loads((out / n / "config.toml").read_text())["train"] for n in ARMS}
    assert ran["sb3"]["backend"] == "torch" and ran["safebot"]["backend"] == "jax"
    ratio = report["arms"]["safebot"]["env_steps_per_s"] / report["arms"]["sb3"]["env_steps_per_s"]
    assert report["ratio_env_steps_per_s"] == pytest.approx(ratio, rel=1e-2)
    # a restart trains nothing: the finished runs are read back with their timing
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    second = json.loads((out / "bench_train.json").read_text())
    for name in ARMS:
        assert second["arms"][name]["sittings"] == 1
        assert second["arms"][name]["wall_s"] == report["arms"][name]["wall_s"]
