"""Replay buffers: HER that keeps only the two numbers a relabelled reward needs, harm priced at lambda.

SB3's ``HerReplayBuffer(copy_info_dict=True)`` stores every step's whole
``info`` dict and deep-copies the sampled ones on every batch so that the
shaped reward (``r - penalty * cost - correction_penalty * correction``,
:class:`safebot.train.wrappers.ShapedReward`) can be recomputed for relabelled
goals. safebot's info dicts carry ~40 entries (costs, margins, speeds), so that
copy was 70 % of a whole SAC+HER training step (profiled: 25 ms of a 37 ms
step on Reach). :class:`HarmHerReplayBuffer` stores instead the two entries the
shaping reads, ``info['cost']`` (harm) and ``info['shield/correction']``, as
float arrays, and hands ``compute_reward`` a *columnar* info (a dict of arrays)
of the sampled transitions: identical rewards, no copies.

Both buffers also price harm at the current Lagrange multiplier
(:mod:`safebot.train.lagrangian`): ``lagrangian_lambda * harm`` is subtracted
from every sampled reward, real or relabelled; with ``lambda = 0`` (every run
that is not Lagrangian) nothing changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import HerReplayBuffer
from stable_baselines3.common.buffers import DictReplayBuffer
from stable_baselines3.common.type_aliases import DictReplayBufferSamples

#: the info entries :class:`~safebot.train.wrappers.ShapedReward` reads, stored per transition
REWARD_INFO_KEYS = ("cost", "shield/correction")


def info_column(infos: Any, key: str) -> np.ndarray:
    """``infos[i][key]`` of each env as float32 (0 where absent or not finite)."""
    values = np.array([float(i.get(key, 0.0)) for i in infos], dtype=np.float32)
    return np.where(np.isfinite(values), values, np.float32(0.0))


class HarmStore:
    """The mix-in of both buffers: each step's reward inputs kept at ``add``, harm priced at sampling."""

    #: the current multiplier; :class:`~safebot.train.lagrangian.LagrangeCallback` sets it
    lagrangian_lambda: float = 0.0
    columns: dict[str, np.ndarray]

    def _init_columns(self, buffer_size: int, n_envs: int) -> None:
        self.columns = {k: np.zeros((buffer_size, n_envs), np.float32) for k in REWARD_INFO_KEYS}
        self.lagrangian_lambda = 0.0

    def _store(self, pos: int, infos: Any) -> None:
        for key, column in self.columns.items():
            column[pos] = info_column(infos, key)

    @property
    def harm(self) -> np.ndarray:
        """Each stored step's ``info['cost']``, shape ``(buffer_size, n_envs)``."""
        return self.columns["cost"]

    def _penalise(
        self, samples: DictReplayBufferSamples, batch: np.ndarray, envs: np.ndarray
    ) -> DictReplayBufferSamples:
        if self.lagrangian_lambda == 0.0:
            return samples
        # rewards come back (n, 1); the penalty of each sampled transition is its own step's harm
        harm = self.harm[batch, envs].reshape(-1, 1)
        penalty = th.as_tensor(self.lagrangian_lambda * harm, device=samples.rewards.device)
        return samples._replace(rewards=samples.rewards - penalty.to(samples.rewards.dtype))


class HarmReplayBuffer(HarmStore, DictReplayBuffer):
    """SB3's Dict replay buffer (SAC without HER) that prices harm at the current lambda."""

    def __init__(self, buffer_size: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(buffer_size, *args, **kwargs)
        self._init_columns(self.buffer_size, self.n_envs)

    def add(self, obs: Any, next_obs: Any, action: Any, reward: Any, done: Any, infos: Any) -> None:
        self._store(self.pos, infos)
        super().add(obs, next_obs, action, reward, done, infos)

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env: Any = None
    ) -> DictReplayBufferSamples:
        # SB3 draws the env index of each sample inside _get_samples with np.random; draw the same
        # numbers from the same state first, so the harm looked up belongs to the transitions
        # SB3 returns (checked with n_envs > 1 in tests/train/test_lagrangian.py); it is SB3's
        # legacy global RNG, hence the legacy calls
        state = np.random.get_state()  # noqa: NPY002
        envs = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))  # noqa: NPY002
        np.random.set_state(state)  # noqa: NPY002
        samples = super()._get_samples(batch_inds, env)
        return self._penalise(samples, batch_inds, envs)


class HarmHerReplayBuffer(HarmStore, HerReplayBuffer):
    """SB3's HER buffer without info copies; real and relabelled samples pay ``lambda * harm``.

    ``copy_info_dict`` is accepted and ignored: the reward inputs are always kept
    (as columns), which is what the flag asked for, at no cost.
    """

    def __init__(self, buffer_size: int, *args: Any, **kwargs: Any) -> None:
        kwargs["copy_info_dict"] = False
        super().__init__(buffer_size, *args, **kwargs)
        self._init_columns(self.buffer_size, self.n_envs)

    def add(self, obs: Any, next_obs: Any, action: Any, reward: Any, done: Any, infos: Any) -> None:  # type: ignore[override]
        self._store(self.pos, infos)
        super().add(obs, next_obs, action, reward, done, infos)

    def _get_real_samples(
        self, batch_indices: np.ndarray, env_indices: np.ndarray, env: Any = None
    ) -> DictReplayBufferSamples:
        samples = super()._get_real_samples(batch_indices, env_indices, env)
        return self._penalise(samples, batch_indices, env_indices)

    def _get_virtual_samples(
        self, batch_indices: np.ndarray, env_indices: np.ndarray, env: Any = None
    ) -> DictReplayBufferSamples:
        """SB3's relabelling (``future`` goals, reward of the next achieved goal), columnar infos."""
        index = (batch_indices, env_indices)
        obs = {key: value[index] for key, value in self.observations.items()}
        next_obs = {key: value[index] for key, value in self.next_observations.items()}
        goals = self._sample_goals(batch_indices, env_indices)
        obs["desired_goal"] = goals
        next_obs["desired_goal"] = goals
        if self.env is None:
            raise RuntimeError("HarmHerReplayBuffer needs its VecEnv (set_env) to relabel rewards")
        infos = {key: column[index] for key, column in self.columns.items()}
        # r_t depends on s_{t+1}: the next achieved goal against the new desired goal
        rewards = self.env.env_method(
            "compute_reward", next_obs["achieved_goal"], goals, infos, indices=[0]
        )[0]
        rewards = np.asarray(rewards, dtype=np.float32).reshape(-1, 1)
        obs_n = self._normalize_obs(obs, env)
        next_n = self._normalize_obs(next_obs, env)
        assert isinstance(obs_n, dict) and isinstance(next_n, dict)
        not_timeout = 1 - self.timeouts[index]  # only dones that are not time limits end a return
        samples = DictReplayBufferSamples(
            observations={key: self.to_torch(v) for key, v in obs_n.items()},
            actions=self.to_torch(self.actions[index]),
            next_observations={key: self.to_torch(v) for key, v in next_n.items()},
            dones=self.to_torch(self.dones[index] * not_timeout).reshape(-1, 1),
            rewards=self.to_torch(self._normalize_reward(rewards, env)),
        )
        return self._penalise(samples, batch_indices, env_indices)


def buffer_class(her: bool) -> type:
    """The replay buffer class of a SAC run (HER or plain)."""
    return HarmHerReplayBuffer if her else HarmReplayBuffer


__all__ = [
    "REWARD_INFO_KEYS",
    "HarmHerReplayBuffer",
    "HarmReplayBuffer",
    "HarmStore",
    "buffer_class",
    "info_column",
]
