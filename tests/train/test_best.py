"""The best held-out-evaluated model: which one wins, kept across a kill -9, used by eval/export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from safebot.cli import app
from safebot.schedulers import EvalStats
from safebot.train import BestModel, EvalResult, RunDir, RunError, RunOptions, load_policy, train


class _FakeModel:
    """Writes its name as the 'model' file: enough to see which evaluation's model was kept."""

    def __init__(self, name: str) -> None:
        self.name = name

    def save(self, path: Path) -> None:
        Path(path).write_text(self.name)

    def get_vec_normalize_env(self) -> None:
        return None


def _result(success: float, harms: list[float]) -> EvalResult:
    stats = EvalStats(
        step=0, episodes=len(harms), success_rate=success, cost_rate=0.0,
        harm_per_episode=sum(harms) / max(len(harms), 1),
    )  # fmt: skip
    return EvalResult(stats, 0.0, [{"success": success, "return": 0.0, "cost": h} for h in harms])


def test_best_is_the_highest_success_then_the_least_harm_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    run = RunDir(tmp_path)
    run.config.write_text("")  # select() checks it is a run directory
    best = BestModel(run)
    evaluations = [  # (step, success, harm per episode) -> kept?
        (64, 0.5, [2.0, 2.0], True),
        (128, 0.5, [3.0, 3.0], False),  # same success, more harm
        (192, 0.5, [1.0, 1.0], True),  # same success, less harm
        (256, 0.5, [1.0, 1.0], False),  # identical score: the earlier model stays
        (320, 0.4, [0.0, 0.0], False),  # less success, however gentle
        (384, 0.9, [5.0, 5.0], True),
    ]
    for step, success, harms, kept in evaluations:
        assert (
            best.consider(_FakeModel(f"m{step}"), _result(success, harms), {"ee": 0.3}, step)
            is kept
        )
    entry = json.loads(run.best_index.read_text())
    assert entry["step"] == 384 and entry["success_rate"] == 0.9 and entry["mean_harm"] == 5.0
    assert entry["width"] == {"ee": 0.3}
    assert sorted(p.name for p in run.best.iterdir()) == ["best.json", "model_384.zip"]
    assert (run.best / "model_384.zip").read_text() == "m384"
    # a resumed run reads the score to beat back
    again = BestModel(run)
    assert not again.consider(_FakeModel("x"), _result(0.9, [5.0]), 0.0, 448)
    assert again.consider(_FakeModel("y"), _result(1.0, [9.0]), 0.0, 512)
    selected = run.select("best")
    assert selected.step == 512 and selected.model == run.best / "model_512.zip"


def test_a_corrupt_best_index_and_an_unknown_which_are_named(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.config.write_text("")
    run.best.mkdir()
    run.best_index.write_text("{not json")
    with pytest.raises(RunError, match=r"best-model index .*best\.json is corrupt"):
        run.select("best")
    with pytest.raises(RunError, match="unknown model 'first'; choose one of best, last"):
        run.select("first")


def _flat(policy: Any, obs: dict[str, np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(policy.flatten(obs))


@pytest.mark.slow
def test_train_kill_resume_keeps_best_and_last_and_eval_and_export_use_the_one_asked(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "safebot.cli", "train", "reach", "--steps", "4000", "--out", str(out),
        "--eval-every", "64", "--eval-episodes", "1", "--checkpoint-every", "64", "--demos", "0",
        "--no-progress",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run = RunDir(out)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if run.latest.exists() and run.best_index.exists():
            if json.loads(run.latest.read_text())["step"] >= 128:
                break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(run.latest.read_text())["step"]
    best_before = run.best_entry()
    assert best_before is not None and (run.best / best_before["model"]).is_file()
    result = train("reach", RunOptions(steps=killed_at + 128), out=out, resume=True, progress=False)
    assert result.steps >= killed_at + 128
    best = run.best_entry()
    assert best is not None and best["step"] >= best_before["step"]
    assert (run.best / best["model"]).is_file() and run.final_model.is_file()
    assert run.select("last").model == run.final_model

    cli = CliRunner()
    reports = {}
    for which in ("best", "last"):
        path = tmp_path / f"eval_{which}.json"
        res = cli.invoke(
            app, ["eval", str(out), "--episodes", "1", "--which", which, "--json", str(path)]
        )
        assert res.exit_code == 0, res.output
        reports[which] = json.loads(path.read_text())
    assert reports["best"]["which"] == "best" and reports["best"]["model_step"] == best["step"]
    assert reports["last"]["which"] == "last" and reports["last"]["model_step"] == result.steps
    bad = cli.invoke(app, ["eval", str(out), "--which", "first"])
    assert bad.exit_code == 2 and "unknown --which 'first'" in bad.output

    bundle = tmp_path / "bundle"
    res = cli.invoke(app, ["export", str(out), "--out", str(bundle), "--which", "best"])
    assert res.exit_code == 0, res.output
    assert "model best" in res.output
    from safebot.deploy.bundle import load_bundle

    b = load_bundle(bundle)
    config = (bundle / "config.toml").read_text()
    assert 'policy = "best"' in config and f"policy_step = {best['step']}" in config
    module = b.load_module()
    _, model = load_policy(out, "best")
    space = model.observation_space
    space.seed(7)
    for _ in range(100):
        obs = space.sample()
        expected, _ = model.predict(obs, deterministic=True)
        with torch.inference_mode():
            got = module(_flat(b.policy, obs)).numpy()[0]
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
