"""The Lagrangian constraint: the dual update, harm priced in replay and rollouts, lambda resumed."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv

from safebot.config import SpecError, parse_model
from safebot.envs.base import ArmTaskEnv
from safebot.spec import TaskSpec, load_task
from safebot.train import Lagrange, RunError, RunOptions, make_env, train
from safebot.train.buffers import HarmHerReplayBuffer, HarmReplayBuffer
from safebot.train.lagrangian import LagrangeCallback

TINY = {"eval_every": 64, "eval_episodes": 1, "checkpoint_every": 64}


# ----------------------------------------------------------------------------- the update


def test_lambda_rises_while_harm_is_above_the_limit_and_falls_back_to_zero_below() -> None:
    lag = Lagrange(cost_limit=2.0, lr=0.1, init=0.0)
    rising = [lag.update(7.0) for _ in range(5)]  # 5 above the limit: +0.5 per update
    np.testing.assert_allclose(rising, [0.5, 1.0, 1.5, 2.0, 2.5])
    falling = [lag.update(0.0) for _ in range(15)]  # 2 below: -0.2 per update, then held at 0
    assert all(b < a for a, b in zip([2.5, *falling[:11]], falling[:12], strict=True))
    assert falling[-1] == 0.0 and min(falling) == 0.0  # projected: never negative
    at_limit = Lagrange(cost_limit=2.0, lr=0.1, init=1.0)
    assert at_limit.update(2.0) == 1.0  # on the limit: no change


def test_lambda_state_round_trips_and_bad_values_are_refused() -> None:
    lag = Lagrange(1.0, 0.5, init=0.25)
    lag.update(3.0)
    other = Lagrange(1.0, 0.5)
    other.load_state_dict(json.loads(json.dumps(lag.state_dict())))
    assert other.value == lag.value == 1.25 and other.updates == 1
    with pytest.raises(ValueError, match="harm"):
        lag.update(float("nan"))
    with pytest.raises(ValueError, match="harm"):
        lag.update(-1.0)
    with pytest.raises(ValueError, match="lambda"):
        other.load_state_dict({"lambda": -2.0})
    with pytest.raises(ValueError, match="lr"):
        Lagrange(1.0, 0.0)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("cost_limit", -1.0, r"train\.cost_limit.*greater than or equal to 0"),
        ("lagrangian_lr", 0.0, r"train\.lagrangian_lr.*greater than 0"),
        ("lambda_init", -0.5, r"train\.lambda_init.*greater than or equal to 0"),
        ("constraint", "lagrange", r"train\.constraint.*'none', 'penalty' or 'lagrangian'"),
    ],
)
def test_bad_lagrangian_keys_name_the_file_the_key_and_the_range(
    key: str, value: Any, match: str
) -> None:
    data = load_task("reach").model_dump(mode="json")
    data["train"][key] = value
    with pytest.raises(SpecError, match=f"my_task.toml.*{match}"):
        parse_model(data, TaskSpec, "my_task.toml")


# ----------------------------------------------------------------------------- replay buffers


def _fill(buffer: Any, vec: DummyVecEnv, steps: int, seed: int = 0) -> None:
    """Random steps into ``buffer``; each step's harm is |action[0]| + 0.5, so a sample tells its own."""
    rng = np.random.default_rng(seed)
    obs = vec.reset()
    n = vec.num_envs
    for _ in range(steps):
        action = rng.uniform(-1, 1, size=(n, *vec.action_space.shape)).astype(np.float32)
        next_obs, reward, done, infos = vec.step(action)
        infos = [
            {**info, "cost": abs(float(a[0])) + 0.5} for info, a in zip(infos, action, strict=True)
        ]
        buffer.add(obs, next_obs, action, reward, done, infos)
        obs = next_obs


def _seed_sb3() -> None:
    # SB3's buffers sample with numpy's legacy global RNG: seed it for two identical batches
    np.random.seed(123)  # noqa: NPY002


def _sample_twice(buffer: Any, lam: float, batch: int) -> tuple[Any, Any]:
    buffer.lagrangian_lambda = 0.0
    _seed_sb3()
    free = buffer.sample(batch, env=None)
    buffer.lagrangian_lambda = lam
    _seed_sb3()
    priced = buffer.sample(batch, env=None)
    return free, priced


def test_her_relabelled_and_real_samples_both_pay_the_current_lambda_times_their_harm() -> None:
    spec = load_task("reach")
    vec = DummyVecEnv([lambda: make_env(spec)])
    buffer = HarmHerReplayBuffer(
        500, vec.observation_space, vec.action_space, env=vec, n_sampled_goal=4
    )
    _fill(buffer, vec, 3 * spec.robot.max_episode_steps)
    free, priced = _sample_twice(buffer, 2.5, 200)
    harm = np.abs(priced.actions[:, :1].numpy()) + 0.5
    # the first 80 % of a HER batch are relabelled (new goal, reward from compute_reward)
    n_virtual = int(buffer.her_ratio * 200)
    assert 0 < n_virtual < 200
    desired = free.observations["desired_goal"].numpy()
    stored = buffer.observations["desired_goal"].reshape(-1, 3)
    relabelled = ~np.any(np.all(np.isclose(desired[:, None], stored[None]), axis=-1), axis=1)
    assert relabelled[:n_virtual].any(), "HER drew no relabelled goal"
    np.testing.assert_allclose(
        free.rewards.numpy() - priced.rewards.numpy(), 2.5 * harm, rtol=1e-5, atol=1e-5
    )
    # and the price is today's lambda, not the one at storage time
    buffer.lagrangian_lambda = 0.0
    _seed_sb3()
    assert np.allclose(buffer.sample(200, env=None).rewards.numpy(), free.rewards.numpy())
    vec.close()


def test_columnar_her_relabels_shaped_rewards_exactly_as_sb3_with_copied_infos() -> None:
    """HarmHerReplayBuffer keeps two numbers per step instead of SB3's deep-copied info dicts
    (70 % of a SAC+HER step on Reach); the relabelled shaped rewards must not change."""
    from stable_baselines3 import HerReplayBuffer

    from safebot.train.wrappers import ShapedReward

    spec = load_task("reach")

    def env() -> Any:
        return ShapedReward(make_env(spec), cost_penalty=0.7, correction_penalty=0.3)

    vec = DummyVecEnv([env])
    ours = HarmHerReplayBuffer(500, vec.observation_space, vec.action_space, env=vec)
    theirs = HerReplayBuffer(
        500, vec.observation_space, vec.action_space, env=vec, copy_info_dict=True
    )
    rng = np.random.default_rng(0)
    obs = vec.reset()
    for _ in range(3 * spec.robot.max_episode_steps):
        action = rng.uniform(-1, 1, size=(1, *vec.action_space.shape)).astype(np.float32)
        next_obs, reward, done, infos = vec.step(action)
        infos = [{**infos[0], "cost": abs(float(action[0, 0]))}]  # harm varies per step
        for buffer in (ours, theirs):
            buffer.add(obs, next_obs, action, reward, done, infos)
        obs = next_obs
    corrections = ours.columns["shield/correction"][:150]
    assert np.count_nonzero(corrections) > 10, "the shield never corrected: nothing is tested"
    _seed_sb3()
    got = ours.sample(256, env=None)
    _seed_sb3()
    want = theirs.sample(256, env=None)
    np.testing.assert_allclose(got.rewards.numpy(), want.rewards.numpy(), rtol=1e-6, atol=1e-6)
    for key in want.observations:
        np.testing.assert_array_equal(got.observations[key], want.observations[key])
    vec.close()


def test_plain_replay_prices_the_harm_of_the_env_each_sample_came_from() -> None:
    spec = load_task("reach")
    vec = DummyVecEnv([lambda: make_env(spec), lambda: make_env(spec)])
    buffer = HarmReplayBuffer(300, vec.observation_space, vec.action_space, n_envs=2)
    _fill(buffer, vec, 60)
    free, priced = _sample_twice(buffer, 4.0, 128)
    harm = np.abs(priced.actions[:, :1].numpy()) + 0.5
    np.testing.assert_allclose(
        free.rewards.numpy() - priced.rewards.numpy(), 4.0 * harm, rtol=1e-5, atol=1e-5
    )
    vec.close()


# ----------------------------------------------------------------------------- whole runs


@pytest.fixture
def harm(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, float]]:
    """Force the task envs' harm per step to ``harm["per_step"]`` (in-process envs only)."""
    level = {"per_step": 0.0}
    original = ArmTaskEnv.step

    def step(self: ArmTaskEnv, action: np.ndarray) -> Any:
        obs, r, term, trunc, info = original(self, action)
        info["cost"] = level["per_step"]
        return obs, r, term, trunc, info

    monkeypatch.setattr(ArmTaskEnv, "step", step)
    yield level


def _lambdas(out: Path) -> dict[int, float]:
    with (out / "metrics.csv").open(newline="") as f:
        return {int(r["step"]): float(r["lambda"]) for r in csv.DictReader(f)}


def _lagrangian_reach(**train: Any) -> TaskSpec:
    spec = load_task("reach")
    keys = {"constraint": "lagrangian", "cost_limit": 10.0, "lagrangian_lr": 0.2, **train}
    return spec.model_copy(update={"train": spec.train.model_copy(update=keys)})


@pytest.mark.slow
def test_sac_her_lambda_rises_under_forced_harm_and_a_resume_continues_from_the_saved_lambda(
    tmp_path: Path, harm: dict[str, float]
) -> None:
    # 50-step episodes, 0.3 harm per step = 15 per episode, limit 10, lr 0.2: +1 per episode
    harm["per_step"] = 0.3
    out = tmp_path / "run"
    spec = _lagrangian_reach()
    train(spec, RunOptions(steps=256, demos=0, **TINY), out=out, progress=False)
    lam = _lambdas(out)
    assert lam == pytest.approx({64: 1.0, 128: 2.0, 192: 3.0, 256: 5.0})
    state = json.loads((out / "ckpt" / "state_256.json").read_text())
    assert state["callback"]["lagrange"]["lambda"] == pytest.approx(5.0)
    events = b"".join(p.read_bytes() for p in (out / "tb").rglob("events.out.tfevents*"))
    assert b"lagrange/lambda" in events  # and in TensorBoard
    # no harm now: -2 per episode from the saved 5 (a restart from lambda_init 0 would stay 0);
    # the resumed envs start fresh episodes at step 256, so they end at 306, 356, 406, ...
    harm["per_step"] = 0.0
    train(spec, RunOptions(steps=512), out=out, resume=True, progress=False)
    lam = _lambdas(out)
    assert [lam[s] for s in (320, 384, 448, 512)] == pytest.approx([3.0, 1.0, 0.0, 0.0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lambda"] == 0.0


class _RolloutCheck(BaseCallback):
    """After LagrangeCallback: the rollout's rewards are the env's minus lambda * harm."""

    def __init__(self, lagrange: Lagrange) -> None:
        super().__init__()
        self.lagrange = lagrange
        self.rewards: list[np.ndarray] = []
        self.bootstrapped: list[np.ndarray] = []
        self.checked = 0

    def _on_step(self) -> bool:
        self.rewards.append(np.array(self.locals["rewards"], dtype=np.float32))
        self.bootstrapped.append(
            np.array([i.get("TimeLimit.truncated", False) for i in self.locals["infos"]])
        )
        return True

    def _on_rollout_end(self) -> None:
        buf = self.model.rollout_buffer  # type: ignore[attr-defined]
        env_r, boot = np.array(self.rewards), np.array(self.bootstrapped)
        want = env_r - self.lagrange.value * 0.3
        # truncated steps carry SB3's value bootstrap on top; every other step must match
        np.testing.assert_allclose(buf.rewards[~boot], want[~boot], rtol=1e-5, atol=1e-5)
        assert self.lagrange.value > 0
        self.checked += 1
        self.rewards.clear()
        self.bootstrapped.clear()


@pytest.mark.slow
def test_ppo_lag_penalises_each_rollout_with_the_lambda_updated_from_it(
    tmp_path: Path, harm: dict[str, float]
) -> None:
    from safebot.train.model import make_model
    from safebot.train.wrappers import make_vec_env

    harm["per_step"] = 0.3
    spec = _lagrangian_reach(algo="ppo", n_steps=100, batch_size=50, n_epochs=1)
    vec = make_vec_env(spec, width=0.0, shielded=True)
    model = make_model(spec, vec, tmp_path)
    lag = Lagrange(spec.train.cost_limit, spec.train.lagrangian_lr)
    check = _RolloutCheck(lag)
    model.learn(200, callback=[LagrangeCallback(lag), check])
    vec.close()
    assert check.checked == 2
    # 2 episodes of 15 harm per rollout, limit 10, lr 0.2: +1 per rollout
    assert lag.value == pytest.approx(2.0)


@pytest.mark.slow
def test_unshielded_lagrangian_runs_and_records_its_mode(
    tmp_path: Path, harm: dict[str, float]
) -> None:
    harm["per_step"] = 0.3
    out = tmp_path / "off"
    spec = load_task("reach")
    result = train(
        spec,
        RunOptions(steps=128, demos=0, shield="off", constraint="lagrangian", **TINY),
        out=out,
        progress=False,
    )
    assert result.steps >= 128
    text = (out / "config.toml").read_text()
    assert 'constraint = "lagrangian"' in text and 'shield = "off"' in text
    # default limit 1, lr 0.01: two 15-harm episodes -> 2 * 0.01 * 14
    assert _lambdas(out)[128] == pytest.approx(0.28)


def test_a_legacy_scheduler_name_keeps_its_constraint_over_the_tasks() -> None:
    opts = RunOptions(scheduler="penalty")
    assert opts.mode("lagrangian").constraint == "penalty"
    assert RunOptions().mode("lagrangian").constraint == "lagrangian"
    assert RunOptions(constraint="none").mode("lagrangian").constraint == "none"
    with pytest.raises(RunError, match="unknown reward constraint 'lagrange'"):
        RunOptions(constraint="lagrange").mode()
