"""Learning from the scripted controllers: demonstrations in the replay buffer, behaviour cloning.

Sparse-reward Push and Press hardly ever succeed by chance inside a tight
envelope, so SAC+HER alone learns to stand still (``docs/benchmarks.md``). The
scripted controllers of :mod:`safebot.scripted` succeed 50-65 % of the time at
width 0; their episodes are the demonstrations:

* :func:`collect_demonstrations` runs ``[train] demo_episodes`` scripted
  episodes through the *training* env stack (shield at the start width,
  reward shaping, Monitor) and adds every transition to the learner's replay
  buffer before learning (DDPGfD, Vecerik et al. 2017). The stored action is
  the one the shield executed (normalised), so a demonstration never teaches
  an action outside the envelope; its reward and info carry no correction
  penalty (the executed action needs no correction). HER relabels failed
  demonstrations like any other episode.
* :class:`BehaviourCloning` adds a behaviour-cloning step on the actor after
  each batch of SAC updates: ``bc_weight * |pi(s) - a_demo|^2`` on a minibatch
  of demonstrations, kept only where the critic rates the demonstrated action
  at least as high as the policy's own (the Q-filter of Nair et al. 2018), with
  the weight decaying linearly to 0 over ``[train] bc_steps``.
  ``[train] bc_pretrain`` steps of unfiltered cloning run before learning starts.
* :class:`CriticWarmup` keeps the cloned actor (and SAC's entropy coefficient)
  fixed for the first ``[train] critic_warmup`` env steps while the critics
  learn. Without it the first SAC updates follow the gradient of an untrained
  critic: measured on Push, the cloned actor's squared error to the
  demonstrations went from 0.0009 to 0.12 after 4 gradient steps and 0.77 after
  12 (the demonstrated actions' variance is 0.02), and success stayed at
  0-20 % for 40 000 steps. A fresh Adam state for the actor did not help (1.2
  after 12 steps): the direction is wrong, not only the step size. The warm-up
  stops that unlearning, but on Push the clone itself scores 0 % held-out, so
  no recipe sets it yet (docs/benchmarks.md, Push and Press).

The demonstrations are saved in the run directory (``demos.npz``, atomically) so
a resumed run clones the same data. Demonstration steps are environment
interaction too: :class:`DemoSet` counts them and ``summary.json`` reports
them beside the training steps.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv

from safebot.io import atomic_path
from safebot.scripted import POLICIES
from safebot.shield import Shield


@dataclass
class DemoSet:
    """Demonstration transitions for behaviour cloning (observations as the learner sees them)."""

    obs: dict[str, np.ndarray]  # key -> (N, ...) float32
    actions: np.ndarray  # (N, action_dim), normalised, as executed by the shield
    episodes: int
    successes: int

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    def save(self, path: Path) -> None:
        """Write ``path`` atomically (:func:`safebot.io.atomic_path`)."""
        arrays: dict[str, Any] = {f"obs/{k}": v for k, v in self.obs.items()}
        arrays["actions"] = self.actions
        arrays["meta"] = np.array([self.episodes, self.successes])
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: Path) -> DemoSet:
        """Raises ValueError naming the file when it is missing keys or unreadable."""
        try:
            with np.load(path) as z:
                obs = {k[4:]: z[k] for k in z.files if k.startswith("obs/")}
                episodes, successes = (int(x) for x in z["meta"])
                actions = z["actions"]
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f"demonstrations {path} are corrupt: {err}") from None
        if not obs or any(len(v) != len(actions) for v in obs.values()):
            raise ValueError(f"demonstrations {path} are corrupt: observation/action counts differ")
        return cls(obs, actions, episodes, successes)


def _shield_of(env: Any) -> Shield:
    e = env
    while not isinstance(e, Shield):
        if not hasattr(e, "env"):
            raise TypeError(f"no Shield in the wrapper stack of {env!r}")
        e = e.env
    return e


def collect_demonstrations(
    model: Any, vec: DummyVecEnv, episodes: int, *, correction_penalty: float = 0.0
) -> DemoSet:
    """Run ``episodes`` scripted episodes on ``vec`` and add each transition to ``model.replay_buffer``.

    Args:
        model: an SB3 off-policy learner whose replay buffer was built for
            ``vec.num_envs`` environments (``vec`` is built like the training env).
        vec: a DummyVecEnv of the training env stack (Monitor / ShapedReward / Shield);
            the scripted controller reads each sub-env's state.
        episodes: finished episodes to collect (whole episodes: the last round of
            parallel episodes may overshoot by up to ``num_envs - 1``).
        correction_penalty: the ShapedReward's ``correction_penalty``, added back
            to the stored reward (the stored, executed action needs no correction).
    """
    if episodes < 1:
        raise ValueError(f"demo episodes must be >= 1, got {episodes}")
    shields = [_shield_of(e) for e in vec.envs]
    policy = POLICIES[shields[0].unwrapped.task.task.kind]  # type: ignore[attr-defined]
    obs_rows: dict[str, list[np.ndarray]] = {}
    act_rows: list[np.ndarray] = []
    done_eps = successes = 0
    obs: Any = vec.reset()
    dones = np.ones(vec.num_envs, dtype=bool)
    while done_eps < episodes:
        raw = np.stack([policy(s) for s in shields])
        new_obs: Any
        new_obs, rewards, dones, infos = vec.step(raw)
        executed = np.stack([s.last_projected / s.arm.scale for s in shields]).astype(np.float32)
        executed = np.clip(executed, -1.0, 1.0)
        rewards = rewards.copy()
        for i, info in enumerate(infos):
            corr = float(info.get("shield/correction", 0.0))
            if np.isfinite(corr):
                rewards[i] += correction_penalty * corr
            info["shield/correction"] = 0.0
            info["shield/intervened"] = False
        next_obs = {k: v.copy() for k, v in new_obs.items()}
        for i, d in enumerate(dones):
            if d:
                for k in next_obs:
                    next_obs[k][i] = infos[i]["terminal_observation"][k]
                done_eps += 1
                successes += bool(infos[i].get("is_success", False))
        model.replay_buffer.add(obs, next_obs, executed, rewards, dones, infos)
        for k, v in obs.items():
            obs_rows.setdefault(k, []).append(np.asarray(v, dtype=np.float32))
        act_rows.append(executed)
        obs = new_obs
    norm = model.get_vec_normalize_env()
    if norm is not None:  # the statistics start from the demonstrations' observations
        for k, rows in obs_rows.items():
            norm.obs_rms[k].update(np.concatenate(rows).astype(np.float64))
    truncate = getattr(model.replay_buffer, "truncate_last_trajectory", None)
    if truncate is not None and not dones.all():
        truncate()  # a sub-env stopped mid-episode: close its trajectory for HER
    return DemoSet(
        {k: np.concatenate(v) for k, v in obs_rows.items()},
        np.concatenate(act_rows),
        done_eps,
        successes,
    )


def _bc_step(
    model: Any,
    demos: DemoSet,
    weight: float,
    batch: int,
    q_filter: bool,
    rng: np.random.Generator,
) -> float:
    """One cloning gradient step on the actor; returns the loss (0 when every sample is filtered).

    The actor is SB3's torch module or SBX's flax one (``[train] backend``): the
    loss, the Q-filter and the optimizer (the actor's own) are the same in both.
    """
    idx = rng.integers(0, len(demos), size=min(batch, len(demos)))
    obs_np = {k: v[idx] for k, v in demos.obs.items()}
    norm = model.get_vec_normalize_env()
    if norm is not None:  # the learner sees normalised observations
        obs_np = norm.normalize_obs(obs_np)
    target = demos.actions[idx]
    if hasattr(model.policy, "actor_state"):  # SBX
        return _bc_step_jax(model, obs_np, target, weight, q_filter)
    return _bc_step_torch(model, obs_np, target, weight, q_filter)


def _bc_step_torch(
    model: Any, obs_np: dict[str, np.ndarray], target_np: np.ndarray, weight: float, q_filter: bool
) -> float:
    import torch as th

    obs, _ = model.policy.obs_to_tensor(obs_np)
    target = th.as_tensor(target_np, device=model.device)
    pi = model.actor(obs, deterministic=True)
    err = ((pi - target) ** 2).sum(dim=1)
    if q_filter:
        with th.no_grad():
            q_demo = th.min(th.cat(model.critic(obs, target), dim=1), dim=1).values
            q_pi = th.min(th.cat(model.critic(obs, pi.detach()), dim=1), dim=1).values
        keep = (q_demo >= q_pi).float()
        if float(keep.sum()) == 0.0:
            return 0.0
        loss = weight * (err * keep).sum() / keep.sum()
    else:
        loss = weight * err.mean()
    model.actor.optimizer.zero_grad()
    loss.backward()
    model.actor.optimizer.step()
    return float(loss.detach())


def _bc_step_jax(
    model: Any, obs_np: dict[str, np.ndarray], target: np.ndarray, weight: float, q_filter: bool
) -> float:
    # SBX feeds its networks the Dict observation concatenated in the space's key order
    keys = list(model.observation_space.keys())
    obs = np.concatenate([obs_np[k].reshape(len(target), -1) for k in keys], axis=1)
    policy = model.policy
    policy.actor_state, loss, kept = _jax_bc_update()(
        policy.actor_state,
        policy.qf_state,
        obs.astype(np.float32),
        target.astype(np.float32),
        np.float32(weight),
        q_filter,
    )
    return float(loss) if float(kept) > 0 else 0.0


@functools.cache
def _jax_bc_update() -> Any:
    """The jitted SBX cloning update, built on first use (JAX loads only for ``backend = "jax"``)."""
    import jax
    import jax.numpy as jnp

    dropout_key = jax.random.PRNGKey(0)  # the critics are built without dropout

    def min_q(qf_state: Any, obs: Any, actions: Any) -> Any:
        q = qf_state.apply_fn(qf_state.params, obs, actions, rngs={"dropout": dropout_key})
        return jnp.min(q, axis=0)[:, 0]  # (n_critics, batch, 1) -> (batch,)

    def update(
        actor_state: Any, qf_state: Any, obs: Any, target: Any, weight: Any, q_filter: bool
    ) -> Any:
        def loss_fn(params: Any) -> Any:
            pi = actor_state.apply_fn(params, obs).mode()
            err = jnp.sum((pi - target) ** 2, axis=1)
            if not q_filter:
                return weight * jnp.mean(err), jnp.float32(len(err))
            keep = (min_q(qf_state, obs, target) >= min_q(qf_state, obs, pi)).astype(jnp.float32)
            keep = jax.lax.stop_gradient(keep)
            kept = jnp.sum(keep)
            return weight * jnp.sum(err * keep) / jnp.maximum(kept, 1.0), kept

        (loss, kept), grads = jax.value_and_grad(loss_fn, has_aux=True)(actor_state.params)
        # like the torch step, no optimizer step at all when every sample was filtered
        stepped = jax.lax.cond(
            kept > 0,
            lambda: actor_state.apply_gradients(grads=grads),
            lambda: actor_state,
        )
        return stepped, loss, kept

    return jax.jit(update, static_argnames=("q_filter",))


def pretrain_actor(model: Any, demos: DemoSet, steps: int, batch: int, seed: int = 0) -> float:
    """``steps`` unfiltered behaviour-cloning steps on the actor; returns the last loss."""
    rng = np.random.default_rng(seed)
    loss = float("nan")
    model.policy.set_training_mode(True)
    for _ in range(steps):
        loss = _bc_step(model, demos, 1.0, batch, False, rng)
    return loss


def _actor_snapshot(model: Any) -> Any:
    """What SAC's actor update changes: actor weights, its optimizer, the entropy coefficient."""
    if hasattr(model.policy, "actor_state"):  # SBX: immutable pytrees, references suffice
        return (model.policy.actor_state, model.ent_coef_state)
    snap = {"actor": model.actor.state_dict(), "actor_opt": model.actor.optimizer.state_dict()}
    if model.ent_coef_optimizer is not None:
        snap["log_ent_coef"] = model.log_ent_coef.detach().clone()
        snap["ent_opt"] = model.ent_coef_optimizer.state_dict()
    return copy.deepcopy(snap)


def _actor_restore(model: Any, snap: Any) -> None:
    if hasattr(model.policy, "actor_state"):
        model.policy.actor_state, model.ent_coef_state = snap
        return
    import torch as th

    model.actor.load_state_dict(snap["actor"])
    model.actor.optimizer.load_state_dict(snap["actor_opt"])
    if "log_ent_coef" in snap:
        with th.no_grad():
            model.log_ent_coef.copy_(snap["log_ent_coef"])
        model.ent_coef_optimizer.load_state_dict(snap["ent_opt"])


class CriticWarmup(BaseCallback):
    """The first ``steps`` env steps of learning update only the critics (see the module doc).

    SB3 calls ``train()`` between a rollout's end and the next rollout's start: the
    actor's state is taken at the end and put back at the start, so every action
    of the warm-up comes from the pretrained actor and the critics learn its values.
    """

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self._snap: Any = None

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self._snap = _actor_snapshot(self.model) if self.num_timesteps < self.steps else None

    def _on_rollout_start(self) -> None:
        if self._snap is not None:
            _actor_restore(self.model, self._snap)
            self._snap = None

    def _on_training_end(self) -> None:
        self._on_rollout_start()


class BehaviourCloning(BaseCallback):
    """Q-filtered behaviour cloning on the demonstrations after each rollout (see the module doc)."""

    def __init__(
        self, demos: DemoSet, weight: float, decay_steps: int, batch: int, seed: int = 0
    ) -> None:
        super().__init__()
        self.rng = np.random.default_rng(seed)
        self.demos = demos
        self.weight0 = weight
        self.decay_steps = decay_steps
        self.batch = batch
        self.last_loss = 0.0

    def weight(self, step: int) -> float:
        if self.decay_steps <= 0:
            return self.weight0
        return self.weight0 * max(0.0, 1.0 - step / self.decay_steps)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        model: Any = self.model
        w = self.weight(self.num_timesteps)
        if w <= 0.0 or self.num_timesteps < model.learning_starts:
            return
        for _ in range(model.gradient_steps):
            self.last_loss = _bc_step(self.model, self.demos, w, self.batch, True, self.rng)
        self.logger.record("train/bc_weight", w)
        self.logger.record("train/bc_loss", self.last_loss)
