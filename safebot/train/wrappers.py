"""The env stack a learner trains on: task env -> Shield -> reward shaping -> Monitor -> VecEnv.

Evaluation, rendering and export build their env with :func:`make_env` too, so
every consumer runs the same shield (docs/design.md, rule 7).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

from safebot.envs import make_task_env
from safebot.modes import RewardConstraint
from safebot.shield import Shield
from safebot.spec import TaskSpec


def make_env(
    spec: TaskSpec,
    *,
    width: float | dict[str, float] = 0.0,
    shielded: bool = True,
    observe_width: bool | None = None,
    render_mode: str | None = None,
) -> Shield:
    """One shielded task env (``shielded=False`` passes actions through but still reports)."""
    observe = spec.train.observe_width if observe_width is None else observe_width
    env = Shield(
        make_task_env(spec, render_mode=render_mode), observe_width=observe, enabled=shielded
    )
    env.set_width(width)
    return env


class ShapedReward(gym.Wrapper[Any, Any, Any, Any]):
    """``r - cost_penalty * info['cost'] - correction_penalty * info['shield/correction']``.

    ``cost_penalty`` is the fixed-penalty baseline (a constant Lagrange multiplier).
    ``correction_penalty`` teaches the policy where the envelope is: without it a
    policy may push far outside the envelope and let the projection scale it
    back, so many raw actions map to one executed action and learning slows.
    ``compute_reward`` applies the same terms so HER's relabelled rewards keep them.
    """

    def __init__(
        self, env: gym.Env[Any, Any], *, cost_penalty: float = 0.0, correction_penalty: float = 0.0
    ) -> None:
        super().__init__(env)
        self.cost_penalty = cost_penalty
        self.correction_penalty = correction_penalty

    def _shaping(self, info: Any) -> Any:
        """The penalty of one step's info, of columns of many (a dict of arrays, as
        :class:`~safebot.train.buffers.HarmHerReplayBuffer` passes), or of a list of infos."""
        if isinstance(info, Mapping):
            cost = np.asarray(info["cost"], dtype=np.float64)
            corr = np.asarray(info.get("shield/correction", 0.0), dtype=np.float64)
        else:
            cost = np.array([float(i["cost"]) for i in info])
            corr = np.array([float(i.get("shield/correction", 0.0)) for i in info])
        corr = np.where(np.isfinite(corr), corr, 0.0)
        penalty = self.cost_penalty * cost + self.correction_penalty * corr
        return float(penalty) if penalty.ndim == 0 else penalty

    def step(self, action: Any) -> Any:
        obs, r, term, trunc, info = self.env.step(action)
        return obs, float(r) - self._shaping(info), term, trunc, info

    def compute_reward(self, achieved: Any, desired: Any, info: Any) -> Any:
        r = self.env.unwrapped.compute_reward(achieved, desired, info)  # type: ignore[attr-defined]
        return r - self._shaping(info)


def reward_penalty(constraint: RewardConstraint, cost_penalty: float) -> float | None:
    """The fixed cost penalty of the training reward, or ``None`` when it carries none.

    The one place a :class:`RewardConstraint` turns into reward shaping of the
    env; ``lagrangian`` has none here because its multiplier changes during the
    run and is applied by the learner's side (:mod:`safebot.train.lagrangian`),
    so the env keeps handing out the unpenalised reward.
    """
    if constraint is RewardConstraint.PENALTY:
        return cost_penalty
    return None


def is_shaped(penalty: float | None, correction: float) -> bool:
    """Whether the training reward reads ``info`` (cost, shield correction)."""
    return penalty is not None or correction > 0


def env_factory(
    spec: TaskSpec, width: Any, shielded: bool, penalty: float | None, seed: int
) -> Callable[[], Any]:
    """A constructor of one training env, reset with ``seed`` (SubprocVecEnv cloudpickles it)."""
    correction = spec.train.correction_penalty if shielded else 0.0

    def init() -> Any:
        env: Any = make_env(spec, width=width, shielded=shielded)
        if is_shaped(penalty, correction):
            env = ShapedReward(env, cost_penalty=penalty or 0.0, correction_penalty=correction)
        env = Monitor(env, info_keywords=("is_success",))
        env.reset(seed=seed)
        return env

    return init


class EnvelopeVecNormalize(VecNormalize):
    """VecNormalize that passes the envelope widths through unnormalised.

    The widths (the last ``passthrough`` entries of ``observation``, in [0, 1]
    already) stay constant until the scheduler first moves them, so their running
    variance is ~0 and VecNormalize would blow the first widening up to its clip
    value (10): the policy then meets an input far outside anything it trained on,
    exactly when the envelope widens (measured: Press fell from 80 % to 0 at the
    first widening, width feature std 0.02 at the end of the run). Their
    statistics are pinned to mean 0, variance 1 instead, before every use and in
    every saved copy.
    """

    def __init__(self, venv: Any, *, passthrough: int, **kwargs: Any) -> None:
        super().__init__(venv, **kwargs)
        self.passthrough = passthrough
        self._pin()

    def _pin(self) -> None:
        k = getattr(self, "passthrough", 0)
        if k > 0 and isinstance(self.obs_rms, dict):
            rms = self.obs_rms["observation"]
            rms.mean[-k:] = 0.0
            rms.var[-k:] = 1.0

    def normalize_obs(self, obs: Any) -> Any:
        self._pin()
        return super().normalize_obs(obs)

    def __getstate__(self) -> dict[str, Any]:
        self._pin()
        return super().__getstate__()


def make_vec_env(
    spec: TaskSpec, *, width: Any, shielded: bool, penalty: float | None = None
) -> Any:
    """The training VecEnv: Dummy for one env, Subproc (``forkserver``) for more.

    Env ``i`` is reset with seed ``[train] seed + i``.
    """
    seed = spec.train.seed
    fns = [env_factory(spec, width, shielded, penalty, seed + i) for i in range(spec.train.n_envs)]
    if len(fns) == 1:
        return DummyVecEnv(fns)
    return SubprocVecEnv(fns, start_method="forkserver")


def normalise_observations(vec: Any, spec: TaskSpec, eval_env: Shield) -> Any:
    """``vec`` inside :class:`EnvelopeVecNormalize` when ``[train] normalize_obs``, else ``vec``."""
    if not spec.train.normalize_obs:
        return vec
    widths = len(eval_env.envelope.kinds) if eval_env.observe_width else 0
    return EnvelopeVecNormalize(
        vec, passthrough=widths, norm_obs=True, norm_reward=False, gamma=spec.train.gamma
    )


#: the old private name, kept for callers (tests) that build one env the way training does

__all__ = [
    "EnvelopeVecNormalize",
    "ShapedReward",
    "env_factory",
    "make_env",
    "make_vec_env",
    "normalise_observations",
    "reward_penalty",
]
