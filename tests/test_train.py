"""Training: tiny budgets for each algorithm x task, resume after SIGKILL, run-directory rules."""

from __future__ import annotations

import csv
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from safebot.train import RunError, RunOptions, load_policy, load_run_config, train

TINY = {"eval_every": 64, "eval_episodes": 1, "checkpoint_every": 64}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("task", ["reach", "reach_joint", "push", "press"])
@pytest.mark.parametrize("algo", ["sac", "ppo"])
def test_tiny_training_run_writes_a_complete_run_dir(tmp_path: Path, task: str, algo: str) -> None:
    out = tmp_path / "run"
    # --demos 0: the Push/Press recipe's 100 scripted episodes are tested in test_demos.py
    opts = RunOptions(algo=algo, steps=128, demos=0, **TINY)
    result = train(task, opts, out=out, progress=False)
    assert result.steps >= 128
    for name in (
        "config.toml",
        "metrics.csv",
        "final_model.zip",
        "summary.json",
        "ckpt/latest.json",
    ):
        assert (out / name).exists(), name
    spec, run = load_run_config(out)
    assert spec.train.algo == algo and spec.task.name == task
    assert run["scheduler"] == "competence"
    rows = _rows(out / "metrics.csv")
    assert [int(r["step"]) for r in rows] == sorted(int(r["step"]) for r in rows)
    assert all(0.0 <= float(r["width"]) <= 1.0 for r in rows)
    _, model = load_policy(out)
    obs = model.observation_space.sample()
    action, _ = model.predict(obs, deterministic=True)
    assert np.all(np.isfinite(action))


def test_existing_run_dir_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(RunError, match=r"--resume .* or --force"):
        train("reach", RunOptions(steps=64, **TINY), out=tmp_path, progress=False)
    assert (tmp_path / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize(
    ("opts", "match"),
    [
        (RunOptions(algo="dqn"), "unknown algorithm"),
        (RunOptions(steps=-5), "--steps must be positive"),
        (RunOptions(scheduler="magic"), "unknown scheduler"),
        (RunOptions(width=1.5), r"--width must be in \[0, 1\]"),
    ],
)
def test_bad_options_are_named(tmp_path: Path, opts: RunOptions, match: str) -> None:
    with pytest.raises(RunError, match=match):
        train("reach", opts, out=tmp_path / "run", progress=False)


@pytest.mark.slow
def test_resume_refuses_a_run_of_another_task_and_a_corrupt_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train("reach", RunOptions(steps=128, **TINY), out=out, progress=False)
    with pytest.raises(RunError, match="task 'reach', not 'press'"):
        train("press", RunOptions(steps=256), out=out, resume=True, progress=False)
    latest = json.loads((out / "ckpt" / "latest.json").read_text())
    (out / "ckpt" / latest["model"]).write_bytes(b"not a zip")
    with pytest.raises(RunError, match="corrupt"):
        train("reach", RunOptions(steps=256), out=out, resume=True, progress=False)


@pytest.mark.slow
def test_resume_after_sigkill_loses_at_most_one_checkpoint_interval(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "safebot.cli", "train", "reach", "--steps", "2000", "--out", str(out),
        "--eval-every", "100", "--eval-episodes", "1", "--checkpoint-every", "100", "--no-progress",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = out / "ckpt" / "latest.json"
    deadline = time.monotonic() + 240
    step = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if latest.exists():
            step = json.loads(latest.read_text())["step"]
            if step >= 300:
                break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(latest.read_text())["step"]
    assert killed_at >= 300
    # resume with a smaller total so the test stays short: it must continue, not restart
    result = train("reach", RunOptions(steps=killed_at + 200), out=out, resume=True, progress=False)
    assert result.steps >= killed_at + 200
    steps = [int(r["step"]) for r in _rows(out / "metrics.csv")]
    assert steps == sorted(steps) and len(steps) == len(set(steps)), steps
    assert steps[0] == 100 and steps[-1] >= killed_at + 200


def test_shaped_reward_is_applied_to_steps_and_to_relabelled_rewards() -> None:
    from safebot.envs import make
    from safebot.shield import Shield
    from safebot.train import ShapedReward

    env = ShapedReward(Shield(make("reach")), cost_penalty=2.0, correction_penalty=0.5)
    env.reset(seed=0)
    _, r, _, _, info = env.step(np.ones(3, dtype=np.float32))
    base = env.unwrapped.compute_reward(info_achieved := np.zeros(3), info_achieved, info)
    assert info["shield/correction"] > 0
    assert r == pytest.approx(-1.0 - 2.0 * info["cost"] - 0.5 * info["shield/correction"])
    infos = [info, {**info, "cost": 1.0, "shield/correction": float("nan")}]
    achieved, desired = np.zeros((2, 3)), np.ones((2, 3))
    got = env.compute_reward(achieved, desired, infos)
    want = env.unwrapped.compute_reward(achieved, desired, infos) - np.array(
        [2.0 * info["cost"] + 0.5 * info["shield/correction"], 2.0]
    )
    np.testing.assert_allclose(got, want)
    assert base == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["penalty", "competence"])
def test_her_relabelling_sees_the_info_the_shaping_needs(tmp_path: Path, scheduler: str) -> None:
    # regression: HER dropped info dicts by default, so shaped rewards raised KeyError('cost')
    from safebot.spec import load_task

    spec = load_task("reach")
    train_cfg = spec.train.model_copy(update={"learning_starts": 100, "correction_penalty": 0.3})
    spec = spec.model_copy(update={"train": train_cfg})
    result = train(
        spec, RunOptions(scheduler=scheduler, steps=200, **TINY), out=tmp_path / "r", progress=False
    )
    assert result.steps >= 200


@pytest.mark.slow
def test_resume_of_a_finished_run_neither_crashes_nor_evaluates_twice(tmp_path: Path) -> None:
    # regression: with the last checkpoint at the final step, learn() never ran on resume, SB3 had
    # no logger (AttributeError '_logger') and the final evaluation was logged a second time
    out = tmp_path / "run"
    train("reach", RunOptions(steps=128, **TINY), out=out, progress=False)
    before = _rows(out / "metrics.csv")
    result = train("reach", RunOptions(steps=128), out=out, resume=True, progress=False)
    assert result.steps == 128
    assert _rows(out / "metrics.csv") == before
    assert result.final["step"] == 128 and 0.0 <= result.final["width"] <= 1.0


@pytest.mark.slow
def test_observation_normalisation_is_checkpointed_resumed_and_applied(tmp_path: Path) -> None:
    from safebot.spec import TaskSpec, load_task, parse_model
    from safebot.train import NormalizedModel

    data = load_task("reach").model_dump(mode="json")
    data["train"].update({"normalize_obs": True, "learning_starts": 50, **TINY, "total_steps": 64})
    spec = parse_model(data, TaskSpec, "reach")
    out = tmp_path / "run"
    train(spec, out=out, progress=False)
    entry = json.loads((out / "ckpt" / "latest.json").read_text())
    assert (out / "ckpt" / entry["vecnormalize"]).exists()
    assert (out / "final_vecnormalize.pkl").exists()

    _, model = load_policy(out)
    assert isinstance(model, NormalizedModel)
    rms = model.obs_rms["observation"]
    assert rms.count > 64 and np.all(rms.var > 0)  # statistics of the run, not the identity
    obs = model.observation_space.sample()
    normed = {
        k: np.clip(
            (v - model.obs_rms[k].mean) / np.sqrt(model.obs_rms[k].var + model.epsilon), -10, 10
        )
        for k, v in obs.items()
    }
    a_wrapped, _ = model.predict(obs, deterministic=True)
    a_direct, _ = model.model.predict(normed, deterministic=True)
    np.testing.assert_allclose(a_wrapped, a_direct, atol=1e-6)

    result = train(spec, RunOptions(steps=128), out=out, resume=True, progress=False)
    assert result.steps >= 128
    _, resumed = load_policy(out)
    assert resumed.obs_rms["observation"].count > rms.count  # kept counting after the resume
    # the best model carries the statistics of its own step
    _, best = load_policy(out, "best")
    assert isinstance(best, NormalizedModel)
    step = json.loads((out / "best" / "best.json").read_text())["step"]
    assert (out / "best" / f"vecnormalize_{step}.pkl").exists()

    (out / "final_vecnormalize.pkl").write_bytes(b"garbage")
    with pytest.raises(RunError, match=r"final_vecnormalize\.pkl are corrupt"):
        load_policy(out)
    (out / "final_vecnormalize.pkl").unlink()
    with pytest.raises(RunError, match=r"final_vecnormalize\.pkl is missing"):
        load_policy(out)


def test_width_features_pass_normalisation_unchanged() -> None:
    # regression: the widths sat at 0 until the first widening, so VecNormalize's variance
    # for them was ~0 and the first widening reached the policy as +10 (its clip value)
    from safebot.spec import load_task
    from safebot.train import EnvelopeVecNormalize, make_vec_env

    spec = load_task("reach")
    vec = EnvelopeVecNormalize(
        make_vec_env(spec, width=0.0, shielded=True),
        passthrough=5,
        norm_obs=True,
        norm_reward=False,
    )
    try:
        vec.reset()
        for _ in range(20):
            vec.step(np.zeros((1, 3), dtype=np.float32))
        vec.env_method("set_width", 0.3)
        obs, *_ = vec.step(np.zeros((1, 3), dtype=np.float32))
        np.testing.assert_allclose(obs["observation"][0, -5:], 0.3, atol=1e-6)
        # the other entries are normalised as before
        assert np.max(np.abs(obs["observation"][0, :-5])) > 0.0
        rms = vec.obs_rms["observation"]
        assert np.all(rms.mean[-5:] == 0.0) and np.all(rms.var[-5:] == 1.0)
        restored = pickle.loads(pickle.dumps(vec))  # the saved statistics are pinned too
        assert np.all(restored.obs_rms["observation"].var[-5:] == 1.0)
    finally:
        vec.close()
