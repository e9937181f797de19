"""Demonstrations from the scripted controllers and behaviour cloning (safebot.demos)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from safebot.config import SpecError
from safebot.demos import (
    BehaviourCloning,
    CriticWarmup,
    DemoSet,
    _bc_step,
    collect_demonstrations,
    pretrain_actor,
)
from safebot.spec import TaskSpec, load_task, parse_model
from safebot.train import (
    RunError,
    RunOptions,
    env_factory,
    make_model,
    resolve_spec,
    train,
)


def _spec(task: str = "reach", **train_keys: Any) -> TaskSpec:
    spec = load_task(task)
    data = spec.model_dump(mode="json")
    # torch unless a test asks for SBX (Reach's recipe trains SBX's JAX SAC)
    data["train"].update({"backend": "torch", **train_keys})
    return parse_model(data, TaskSpec, spec.source)


def _model_and_vec(spec: TaskSpec, tmp_path: Path, width: float = 0.0) -> tuple[Any, DummyVecEnv]:
    vec = DummyVecEnv([env_factory(spec, width, True, None, 0)])
    model = make_model(spec, vec, tmp_path)
    return model, vec


@pytest.fixture(params=["torch", "jax"])
def reach_demos(request: Any, tmp_path: Path) -> tuple[Any, DummyVecEnv, DemoSet]:
    spec = _spec("reach", correction_penalty=0.3, learning_starts=50, backend=request.param)
    model, vec = _model_and_vec(spec, tmp_path)
    demos = collect_demonstrations(model, vec, 3, correction_penalty=0.3)
    yield model, vec, demos
    vec.close()


def test_demonstrations_fill_the_replay_buffer_with_executed_actions(reach_demos: Any) -> None:
    model, _, demos = reach_demos
    ep_len = 50  # tasks/reach.toml max_episode_steps
    assert demos.episodes == 3 and len(demos) == 3 * ep_len
    buf = model.replay_buffer
    assert buf.size() == 3 * ep_len
    stored = buf.actions[: 3 * ep_len, 0]
    np.testing.assert_allclose(stored, demos.actions, atol=1e-6)
    assert np.all(np.abs(stored) <= 1.0)
    # the scripted Reach controller saturates far from the goal: the stored action is the
    # shield's projection (inside the start envelope), not the saturated request
    assert np.abs(stored).max() < 0.99
    # the stored reward carries no correction penalty: sparse reward is exactly -1 or 0
    rewards = buf.rewards[: 3 * ep_len, 0]
    assert np.all(np.minimum(np.abs(rewards + 1.0), np.abs(rewards)) < 1e-5), np.unique(rewards)
    assert not buf.columns["shield/correction"][: 3 * ep_len].any()
    # whole episodes: HER sees three finished trajectories
    assert buf.ep_length[: 3 * ep_len, 0].tolist() == [ep_len] * (3 * ep_len)


def test_stored_actions_need_no_further_correction(tmp_path: Path) -> None:
    # replay the demonstration's actions from the same seed: the shield leaves them alone
    spec = _spec("reach", learning_starts=50)
    model, vec = _model_and_vec(spec, tmp_path)
    demos = collect_demonstrations(model, vec, 1)
    vec.close()
    replay = DummyVecEnv([env_factory(spec, 0.0, True, None, 0)])
    replay.seed(spec.train.seed)  # as the learner seeded the demonstration's env
    replay.reset()
    corrections = []
    for a in demos.actions:
        _, _, _, infos = replay.step(a[None])
        corrections.append(infos[0]["shield/correction"])
    replay.close()
    assert max(corrections) < 1e-6


def test_demo_set_round_trip_and_corrupt_file(tmp_path: Path, reach_demos: Any) -> None:
    _, _, demos = reach_demos
    path = tmp_path / "d" / "demos.npz"
    demos.save(path)
    back = DemoSet.load(path)
    assert (back.episodes, back.successes) == (demos.episodes, demos.successes)
    np.testing.assert_array_equal(back.actions, demos.actions)
    assert back.obs.keys() == demos.obs.keys()
    path.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match=r"demos\.npz are corrupt"):
        DemoSet.load(path)


def _is_sbx(model: Any) -> bool:
    return hasattr(model.policy, "actor_state")


def _flat_obs(model: Any, obs: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([obs[k] for k in model.observation_space.keys()], axis=1)


def _actor_mean(model: Any, obs: dict[str, np.ndarray]) -> np.ndarray:
    """The deterministic action of either backend's actor, in [-1, 1]."""
    if _is_sbx(model):
        state = model.policy.actor_state
        return np.asarray(state.apply_fn(state.params, _flat_obs(model, obs)).mode())
    tensors, _ = model.policy.obs_to_tensor(obs)
    with torch.no_grad():
        return model.actor(tensors, deterministic=True).numpy()


def _actor_params(model: Any) -> list[np.ndarray]:
    if _is_sbx(model):
        import jax

        return [np.asarray(x) for x in jax.tree_util.tree_leaves(model.policy.actor_state.params)]
    return [p.detach().numpy().copy() for p in model.actor.parameters()]


def _bc_error(model: Any, demos: DemoSet) -> float:
    pi = _actor_mean(model, demos.obs)
    return float(((pi - demos.actions) ** 2).sum(axis=1).mean())


def test_pretraining_clones_the_demonstrations(reach_demos: Any) -> None:
    model, _, demos = reach_demos
    before = _bc_error(model, demos)
    pretrain_actor(model, demos, 150, 64)
    after = _bc_error(model, demos)
    assert after < 0.5 * before, (before, after)


def _critic_prefers_policy(model: Any) -> None:
    """Replace the critics by one that rates an action by its distance to the policy's own."""
    if _is_sbx(model):
        import jax.numpy as jnp

        actor_state = model.policy.actor_state  # frozen copy: the policy always wins

        def apply_fn(params: Any, obs: Any, actions: Any, **_: Any) -> Any:
            pi = actor_state.apply_fn(actor_state.params, obs).mode()
            q = -jnp.sum((actions - pi) ** 2, axis=1, keepdims=True)
            return jnp.stack([q, q])

        model.policy.qf_state = model.policy.qf_state.replace(apply_fn=apply_fn)
        return
    actor = model.actor

    def critic(obs: Any, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            pi = actor(obs, deterministic=True)
        q = -((actions - pi) ** 2).sum(dim=1, keepdim=True)
        return (q, q)

    model.critic = critic


def test_q_filter_skips_demonstrations_the_critic_rates_below_the_policy(reach_demos: Any) -> None:
    model, _, demos = reach_demos
    params = _actor_params(model)
    _critic_prefers_policy(model)
    loss = _bc_step(model, demos, 1.0, 64, True, np.random.default_rng(0))
    assert loss == 0.0
    for p, q in zip(params, _actor_params(model), strict=True):
        np.testing.assert_array_equal(p, q)  # no optimizer step at all, not a zero-gradient one
    # without the filter the same step moves the actor
    loss = _bc_step(model, demos, 1.0, 64, False, np.random.default_rng(0))
    assert loss > 0.0
    moved = [not np.array_equal(p, q) for p, q in zip(params, _actor_params(model), strict=True)]
    assert any(moved)


def test_cloning_weight_decays_linearly_to_zero(reach_demos: Any) -> None:
    _, _, demos = reach_demos
    bc = BehaviourCloning(demos, 2.0, 1000, 64)
    assert bc.weight(0) == 2.0
    assert bc.weight(500) == pytest.approx(1.0)
    assert bc.weight(1000) == 0.0 and bc.weight(5000) == 0.0
    assert BehaviourCloning(demos, 2.0, 0, 64).weight(10**6) == 2.0


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        ({"bc_weight": 1.0}, "need demo_episodes > 0"),
        ({"bc_pretrain": 10}, "need demo_episodes > 0"),
        ({"demo_episodes": 5, "algo": "ppo"}, "need algo = 'sac'"),
        ({"demo_episodes": -1}, "demo_episodes"),
    ],
)
def test_demonstration_keys_are_validated(keys: dict[str, Any], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        _spec("reach", **keys)  # reach.toml has no demonstrations


def test_ppo_from_the_command_line_drops_the_demonstrations(capsys: Any) -> None:
    spec = _spec("push", demo_episodes=5, bc_weight=1.0)
    resolved = resolve_spec(spec, RunOptions(algo="ppo"))
    assert resolved.train.algo == "ppo" and resolved.train.demo_episodes == 0
    assert "without the 5 scripted demonstrations" in capsys.readouterr().err


def test_demos_option_overrides_or_turns_off_the_tasks_demonstrations(capsys: Any) -> None:
    push = load_task("push")  # 100 demonstrations, cloning, learning_starts 0, 150-step episodes
    assert push.train.demo_episodes > 0 and push.train.learning_starts == 0
    off = resolve_spec(push, RunOptions(demos=0))
    assert off.train.demo_episodes == 0 and off.train.bc_weight == 0 and off.train.bc_pretrain == 0
    # HER needs a finished episode before learning: raised, and said so
    assert off.train.learning_starts == push.robot.max_episode_steps
    assert "raises learning_starts from 0 to 150" in capsys.readouterr().err
    few = resolve_spec(push, RunOptions(demos=3))
    assert few.train.demo_episodes == 3 and few.train.bc_weight == push.train.bc_weight
    with pytest.raises(RunError, match="--demos must be >= 0"):
        resolve_spec(push, RunOptions(demos=-1))


@pytest.mark.slow
def test_training_with_demonstrations_reports_them_and_resumes(tmp_path: Path) -> None:
    spec = _spec(
        "reach",
        demo_episodes=2,
        bc_pretrain=20,
        bc_weight=1.0,
        bc_steps=200,
        learning_starts=0,
        eval_every=64,
        eval_episodes=1,
        checkpoint_every=64,
        total_steps=64,
    )
    out = tmp_path / "run"
    train(spec, out=out, progress=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["demonstrations"]["episodes"] == 2
    assert summary["demonstrations"]["steps"] == 100
    assert (out / "demos.npz").exists()
    result = train(spec, RunOptions(steps=128), out=out, resume=True, progress=False)
    assert result.steps >= 128
    # a resumed run clones the saved demonstrations; a damaged file is named
    (out / "demos.npz").write_bytes(b"\x00" * 10)
    with pytest.raises(RunError, match=r"--resume: demonstrations .*demos\.npz are corrupt"):
        train(spec, RunOptions(steps=192), out=out, resume=True, progress=False)


def _critic_params(model: Any) -> list[np.ndarray]:
    if _is_sbx(model):
        import jax

        return [np.asarray(x) for x in jax.tree_util.tree_leaves(model.policy.qf_state.params)]
    return [p.detach().numpy().copy() for p in model.critic.parameters()]


@pytest.mark.parametrize("warmup", [1000, 0])
def test_critic_warmup_keeps_the_cloned_actor_while_the_critics_learn(
    reach_demos: Any, warmup: int
) -> None:
    model, _, demos = reach_demos
    pretrain_actor(model, demos, 20, 64)
    actor, critic = _actor_params(model), _critic_params(model)
    model.learn(100, callback=[CriticWarmup(warmup)], reset_num_timesteps=False)
    same_actor = all(np.array_equal(p, q) for p, q in zip(actor, _actor_params(model), strict=True))
    critic_moved = any(
        not np.array_equal(p, q) for p, q in zip(critic, _critic_params(model), strict=True)
    )
    assert critic_moved
    assert same_actor == (warmup > 0)  # without the warm-up SAC's first updates move it


def test_critic_warmup_is_a_sac_key() -> None:
    with pytest.raises(SpecError, match="need algo = 'sac'"):
        _spec("reach", critic_warmup=100, algo="ppo")
