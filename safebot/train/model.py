"""The learners: building a fresh one, and loading a saved model with its observation statistics.

Loading is written once: ``--resume`` (training continues, statistics keep
updating) and :func:`load_policy` (eval, render, export: statistics frozen)
both go through :func:`load_model` and :func:`load_normalizer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stable_baselines3 import PPO, SAC, HerReplayBuffer
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from safebot.modes import PolicyChoice
from safebot.spec import TaskSpec
from safebot.train.buffers import buffer_class
from safebot.train.options import RunError
from safebot.train.rundir import RunDir
from safebot.train.wrappers import make_env


def learner_class(spec: TaskSpec) -> Any:
    """The learner of ``[train] algo`` and ``backend``: SB3's PPO or SAC, or SBX's SAC (JAX).

    SBX (the Stable-Baselines3 team's JAX implementation) has SB3's API, buffers,
    callbacks and save format; it jit-compiles a whole update and runs the
    ``gradient_steps`` of one rollout in one call (docs/design.md, "Key dependency facts").

    Raises:
        RunError: ``backend = "jax"`` and SBX or JAX is not installed.
    """
    if spec.train.algo == "ppo":
        return PPO
    if spec.train.backend == "torch":
        return SAC
    try:
        from sbx import SAC as JaxSAC
    except ImportError as err:
        raise RunError(
            f"[train] backend = 'jax' needs SBX and JAX ({err}); install them with "
            "pip install sbx-rl==0.28.0, or set backend = 'torch'"
        ) from None
    return JaxSAC


def make_model(spec: TaskSpec, vec: Any, run_dir: Path, *, stock_her: bool = False) -> Any:
    """A fresh SB3 learner of ``[train]`` on ``vec``, logging TensorBoard to ``run_dir/tb``.

    SAC's replay buffer keeps each transition's harm and shield correction
    (:mod:`safebot.train.buffers`), so HER's relabelled rewards keep their
    shaping and a Lagrangian run prices harm at the current lambda; PPO needs
    nothing here (its Lagrangian callback re-penalises each rollout).

    Args:
        stock_her: SB3's own ``HerReplayBuffer`` copying whole info dicts instead
            (``safebot bench train``'s plain-SB3 baseline; no Lagrangian pricing).
    """
    t = spec.train
    common: dict[str, Any] = {
        "policy": "MultiInputPolicy",
        "env": vec,
        "learning_rate": t.learning_rate,
        "gamma": t.gamma,
        "seed": t.seed,
        "verbose": 0,
        "device": "cpu",
        "tensorboard_log": str(run_dir / "tb"),
        "policy_kwargs": {"net_arch": list(t.net_arch)},
    }
    if t.algo == "sac":
        kwargs: dict[str, Any] = {
            "buffer_size": min(t.buffer_size, max(t.total_steps, 1000)),
            "learning_starts": t.learning_starts,
            "batch_size": t.batch_size,
            "train_freq": t.train_freq,
            "gradient_steps": t.gradient_steps,
            "ent_coef": t.ent_coef,
        }
        # harm and shield correction kept per transition: relabelled rewards keep their
        # shaping and the Lagrangian prices harm (safebot.train.buffers)
        kwargs["replay_buffer_class"] = buffer_class(t.her)
        if t.her:
            kwargs["replay_buffer_kwargs"] = {
                "n_sampled_goal": t.her_goals,
                "goal_selection_strategy": "future",
            }
        if t.her and stock_her:
            kwargs["replay_buffer_class"] = HerReplayBuffer
            kwargs["replay_buffer_kwargs"]["copy_info_dict"] = True
        return learner_class(spec)(**common, **kwargs)
    n_steps = t.n_steps
    batch = min(t.batch_size, n_steps * t.n_envs)
    common["policy_kwargs"]["log_std_init"] = t.log_std_init
    return PPO(**common, n_steps=n_steps, batch_size=batch, n_epochs=t.n_epochs)


def load_model(spec: TaskSpec, path: Path, env: Any) -> Any:
    """The SB3 model saved at ``path``, attached to ``env`` (HER models need one to load).

    Raises:
        RunError: the file is missing, damaged or not a model of ``[train] algo``.
    """
    cls = learner_class(spec)
    try:
        return cls.load(path, env=env, device="cpu")
    except Exception as err:  # SB3 raises many types for a damaged zip
        raise RunError(
            f"model {path} is corrupt or unreadable: {type(err).__name__}: {err}"
        ) from None


def load_normalizer(path: Path, venv: Any, *, owner: Path, training: bool) -> VecNormalize:
    """The observation statistics saved at ``path``, wrapped around ``venv``.

    Args:
        owner: the run directory, named when the file is missing.
        training: keep updating the statistics (``--resume``) or freeze them.

    Raises:
        RunError: the file is missing or damaged.
    """
    if not path.exists():
        raise RunError(f"{owner} normalises observations but {path.name} is missing")
    try:
        norm = VecNormalize.load(str(path), venv)
    except Exception as err:  # a damaged pickle raises many types
        raise RunError(
            f"observation statistics {path} are corrupt: {type(err).__name__}: {err}"
        ) from None
    norm.training = training
    return norm


def load_replay_buffer(model: Any, path: Path) -> None:
    """Restore ``model``'s replay buffer (RunError naming the file when it is damaged)."""
    try:
        model.load_replay_buffer(path)
    except Exception as err:
        raise RunError(
            f"replay buffer {path.name} is corrupt: {type(err).__name__}: {err}"
        ) from None


class NormalizedModel:
    """An SB3 model whose ``predict`` first normalises observations with its run's statistics.

    Everything else (``policy``, ``observation_space``, ...) is the model's own;
    ``obs_rms``, ``clip_obs`` and ``epsilon`` describe the normalisation
    (``(obs - mean) / sqrt(var + epsilon)``, clipped to ``+-clip_obs``) for export.
    """

    def __init__(self, model: Any, norm: VecNormalize) -> None:
        self.model = model
        self.norm = norm

    @property
    def obs_rms(self) -> Any:
        return self.norm.obs_rms

    @property
    def clip_obs(self) -> float:
        return float(self.norm.clip_obs)

    @property
    def epsilon(self) -> float:
        return float(self.norm.epsilon)

    def predict(self, observation: Any, *args: Any, **kwargs: Any) -> Any:
        return self.model.predict(self.norm.normalize_obs(observation), *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def load_policy(
    run_dir: str | Path, which: PolicyChoice | str = PolicyChoice.LAST
) -> tuple[TaskSpec, Any]:
    """The resolved spec and the model ``which`` names (:meth:`RunDir.select`).

    ``last`` (the default, as before best models were kept) is the final model,
    or the latest checkpoint of an unfinished run; ``best`` is the best
    held-out-evaluated model (a run without one falls back to the last). The
    commands ``eval``, ``render`` and ``export`` default to ``best`` instead. With ``[train] normalize_obs`` the model comes as a
    :class:`NormalizedModel` (frozen statistics).

    Raises:
        RunError: no config, no model, or a damaged model or statistics file.
    """
    run = RunDir(run_dir)
    spec, _ = run.load_config()
    selected = run.select(which)
    path, stats = selected.model, selected.normalizer
    env = DummyVecEnv([lambda: make_env(spec)])
    model = load_model(spec, path, env)
    if not spec.train.normalize_obs:
        return spec, model
    norm = load_normalizer(stats, env, owner=run.root, training=False)
    return spec, NormalizedModel(model, norm)


#: the old private name (tests build learners the way training does)

__all__ = [
    "NormalizedModel",
    "learner_class",
    "load_model",
    "load_normalizer",
    "load_policy",
    "load_replay_buffer",
    "make_model",
]
