"""Training: SB3 learners inside the shield, envelope updates from held-out evaluations, checkpoints.

The learners are stock SB3 SAC (with HER on the goal tasks) and PPO; safebot
extends them only through callbacks (STYLE.md):

* :class:`EnvelopeCallback` runs E deterministic evaluation episodes on a
  separate env instance with its own seeds every K steps, turns them into
  :class:`~safebot.schedulers.EvalStats`, asks the scheduler for the next width
  and pushes it into every training env (Dummy or Subproc), TensorBoard and
  ``metrics.csv``.
* :class:`CheckpointCallback` writes atomic checkpoints (model, replay buffer,
  scheduler and callback state) so ``--resume`` continues after a ``kill -9``.

* :class:`~safebot.demos.BehaviourCloning` (tasks with ``[train] demo_episodes``)
  adds Q-filtered cloning of the scripted demonstrations beside SAC's updates.

A run directory holds ``config.toml`` (fully resolved), ``metrics.csv``,
``ckpt/``, ``tb/``, ``final_model.zip`` and ``summary.json``; ``demos.npz`` with
demonstrations, ``final_vecnormalize.pkl`` with ``[train] normalize_obs``
(:class:`EnvelopeVecNormalize`).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO, SAC, HerReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure as configure_logger
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

from safebot import __version__
from safebot.config import SpecError, dump_toml, parse_model
from safebot.demos import BehaviourCloning, DemoSet, collect_demonstrations, pretrain_actor
from safebot.envs import make_task_env
from safebot.schedulers import (
    CompetenceConfig,
    EvalStats,
    LinearConfig,
    PIConfig,
    Scheduler,
    StaticConfig,
    make_scheduler,
)
from safebot.shield import Shield
from safebot.spec import TaskSpec, load_task

SCHEDULER_CHOICES = ("competence", "linear", "static", "pi", "none", "penalty")
ALGOS = ("sac", "ppo")
METRIC_FIELDS = (
    "step",
    "width",
    "success_rate",
    "mean_return",
    "cost_rate",
    "intervention_rate",
    "mean_correction",
    "train_cost",
    "train_steps",
    "reason",
    "wall_s",
)


class RunError(Exception):
    """A run cannot start or resume; the message says why (the CLI exits 2)."""


@dataclass(frozen=True)
class RunOptions:
    """What the CLI (or a script) asks of one run; ``None`` means the task's default."""

    algo: str | None = None
    steps: int | None = None
    scheduler: str | None = None
    width: float | None = None
    seed: int | None = None
    n_envs: int | None = None
    eval_every: int | None = None
    eval_episodes: int | None = None
    checkpoint_every: int | None = None
    demos: int | None = None
    cost_penalty: float = 1.0

    def validate(self) -> None:
        if self.algo is not None and self.algo not in ALGOS:
            raise RunError(f"unknown algorithm {self.algo!r}; choose one of {', '.join(ALGOS)}")
        if self.scheduler is not None and self.scheduler not in SCHEDULER_CHOICES:
            raise RunError(
                f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULER_CHOICES)}"
            )
        for name in ("steps", "n_envs", "eval_every", "eval_episodes", "checkpoint_every"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise RunError(f"--{name.replace('_', '-')} must be positive, got {v}")
        if self.demos is not None and self.demos < 0:
            raise RunError(f"--demos must be >= 0, got {self.demos}")
        if self.seed is not None and self.seed < 0:
            raise RunError(f"--seed must be >= 0, got {self.seed}")
        if self.width is not None and not (0.0 <= self.width <= 1.0):
            raise RunError(f"--width must be in [0, 1], got {self.width}")


# --------------------------------------------------------------------------- config


def resolve_spec(spec: TaskSpec, opts: RunOptions) -> TaskSpec:
    """Apply the run options to the task's ``[train]`` and ``[scheduler]``; the result is what runs."""
    opts.validate()
    demo_keys: dict[str, Any] = {}
    no_demos = {"demo_episodes": 0, "bc_weight": 0.0, "bc_pretrain": 0, "bc_steps": 0}
    if opts.algo == "ppo" and spec.train.demo_episodes > 0:
        # demonstrations feed an off-policy replay buffer; PPO runs without them
        print(
            f"note: --algo ppo runs without the {spec.train.demo_episodes} scripted "
            "demonstrations of [train] (they feed SAC's replay buffer)",
            file=sys.stderr,
        )
        demo_keys = no_demos
    elif opts.demos == 0:
        demo_keys = dict(no_demos)
        first_episode = spec.robot.max_episode_steps
        if spec.train.her and spec.train.learning_starts < first_episode:
            # without demonstrations HER has nothing to sample before the first episode ends
            print(
                f"note: --demos 0 raises learning_starts from {spec.train.learning_starts} "
                f"to {first_episode} (HER samples finished episodes)",
                file=sys.stderr,
            )
            demo_keys["learning_starts"] = first_episode
    elif opts.demos is not None:
        demo_keys = {"demo_episodes": opts.demos}
    train = spec.train.model_copy(
        update=demo_keys
        | {
            k: v
            for k, v in {
                "algo": opts.algo,
                "total_steps": opts.steps,
                "seed": opts.seed,
                "n_envs": opts.n_envs,
                "eval_every": opts.eval_every,
                "eval_episodes": opts.eval_episodes,
                "checkpoint_every": opts.checkpoint_every,
            }.items()
            if v is not None
        }
    )
    sched = spec.scheduler
    kind = opts.scheduler
    if kind in ("static", "none", "penalty"):
        width = opts.width if opts.width is not None else (1.0 if kind != "static" else 0.0)
        sched = StaticConfig(width=width)
    elif kind == "linear":
        sched = LinearConfig(steps=train.total_steps)
    elif kind == "pi":
        sched = PIConfig()
    elif kind == "competence" and not isinstance(sched, CompetenceConfig):
        sched = CompetenceConfig()
    elif opts.width is not None:
        sched = StaticConfig(width=opts.width)
    data = spec.model_dump(mode="json")
    data["train"] = train.model_dump(mode="json")
    data["scheduler"] = sched.model_dump(mode="json")
    return parse_model(data, TaskSpec, spec.source).model_copy(update={"source": spec.source})


def write_config(run_dir: Path, spec: TaskSpec, run: dict[str, Any]) -> None:
    data = spec.model_dump(mode="json")
    data["run"] = run
    _atomic_write_text(run_dir / "config.toml", dump_toml(data))


def load_run_config(run_dir: str | Path) -> tuple[TaskSpec, dict[str, Any]]:
    """The resolved spec and run options of a run directory."""
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise RunError(f"{run_dir} is not a safebot run directory (no config.toml)")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise RunError(f"{path}: corrupt config: {err}") from None
    run = data.pop("run", {})
    try:
        spec = parse_model(data, TaskSpec, str(path))
    except SpecError as err:
        raise RunError(str(err)) from None
    return spec.model_copy(update={"source": str(path)}), run


# --------------------------------------------------------------------------- envs


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


def _env_factory(
    spec: TaskSpec, width: Any, shielded: bool, penalty: float | None, seed: int
) -> Callable[[], Any]:
    correction = spec.train.correction_penalty if shielded else 0.0

    def init() -> Any:
        env: Any = make_env(spec, width=width, shielded=shielded)
        if penalty is not None or correction > 0:
            env = ShapedReward(env, cost_penalty=penalty or 0.0, correction_penalty=correction)
        env = Monitor(env, info_keywords=("is_success",))
        env.reset(seed=seed)
        return env

    return init


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
        def one(i: dict[str, Any]) -> float:
            corr = float(i.get("shield/correction", 0.0))
            return self.cost_penalty * float(i["cost"]) + self.correction_penalty * (
                corr if np.isfinite(corr) else 0.0
            )

        if isinstance(info, dict):
            return one(info)
        return np.array([one(i) for i in info])

    def step(self, action: Any) -> Any:
        obs, r, term, trunc, info = self.env.step(action)
        return obs, float(r) - self._shaping(info), term, trunc, info

    def compute_reward(self, achieved: Any, desired: Any, info: Any) -> Any:
        r = self.env.unwrapped.compute_reward(achieved, desired, info)  # type: ignore[attr-defined]
        return r - self._shaping(info)


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
    """The training VecEnv: Dummy for one env, Subproc (``forkserver``) for more."""

    seed = spec.train.seed
    fns = [_env_factory(spec, width, shielded, penalty, seed + i) for i in range(spec.train.n_envs)]
    if len(fns) == 1:
        return DummyVecEnv(fns)
    return SubprocVecEnv(fns, start_method="forkserver")


# --------------------------------------------------------------------------- evaluation


@dataclass
class EvalResult:
    """One evaluation's numbers (the scheduler sees :attr:`stats`)."""

    stats: EvalStats
    mean_return: float
    episodes: list[dict[str, float]] = field(default_factory=list)


def evaluate(
    predict: Callable[[Any], np.ndarray], env: Shield, *, episodes: int, seed: int, step: int = 0
) -> EvalResult:
    """Run ``episodes`` deterministic episodes on ``env`` with seeds ``seed, seed+1, ...``."""
    successes, returns, costs, steps, inter, corr = [], [], 0.0, 0, 0, 0.0
    binding: dict[str, int] = {}
    margins: dict[str, float] = {}
    actions = []
    per_episode = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done = False
        ret = 0.0
        ep_cost = 0.0
        info: dict[str, Any] = {}
        while not done:
            action = predict(obs)
            actions.append(np.asarray(action, dtype=np.float64))
            obs, r, term, trunc, info = env.step(action)
            done = term or trunc
            ret += float(r)
            ep_cost += info["cost"]
            steps += 1
            inter += bool(info["shield/intervened"])
            c = info["shield/correction"]
            corr += 0.0 if not np.isfinite(c) else c
            for k in info["shield/active"]:
                binding[k] = binding.get(k, 0) + 1
            for key, v in info.items():
                if key.startswith("shield/margin/"):
                    kind = key.removeprefix("shield/margin/")
                    margins[kind] = min(margins.get(kind, np.inf), float(v))
        successes.append(bool(info.get("is_success", False)))
        returns.append(ret)
        costs += ep_cost
        per_episode.append({"success": float(successes[-1]), "return": ret, "cost": ep_cost})
    act = np.array(actions)
    stats = EvalStats(
        step=int(step),
        episodes=episodes,
        success_rate=float(np.mean(successes)),
        cost_rate=costs / max(steps, 1),
        intervention_rate=inter / max(steps, 1),
        mean_correction=corr / max(steps, 1),
        min_margin=_normalised_margins(env, margins),
        binding={k: v / max(steps, 1) for k, v in binding.items()},
        action_std=float(act.std()) if act.size else 0.0,
    )
    return EvalResult(stats, float(np.mean(returns)), per_episode)


def _normalised_margins(env: Shield, margins: dict[str, float]) -> dict[str, float]:
    # margins in [0, 1] of each limit's start-to-cap range, as EvalStats documents
    out = {}
    for kind, m in margins.items():
        lim = env.envelope.limits.get(kind)
        span = float(np.max(np.abs(lim.cap - lim.start))) if lim is not None else 1.0
        out[kind] = m / span if span > 0 else m
    return out


# --------------------------------------------------------------------------- callbacks


class EnvelopeCallback(BaseCallback):
    """Evaluate every ``eval_every`` steps, update the scheduler, push the width everywhere, log.

    The scheduler sees only held-out evaluation episodes (separate env, seeds
    ``eval_seed + k``), never the training reward (design rule 4).
    """

    def __init__(
        self,
        eval_env: Shield,
        scheduler: Scheduler | None,
        *,
        eval_every: int,
        episodes: int,
        eval_seed: int,
        metrics_csv: Path,
        fixed_width: float | dict[str, float] = 0.0,
    ) -> None:
        super().__init__(verbose=0)
        self.eval_env = eval_env
        self.scheduler = scheduler
        self.eval_every = eval_every
        self.episodes = episodes
        self.eval_seed = eval_seed
        self.metrics_csv = metrics_csv
        self.fixed_width = fixed_width
        self.next_eval = eval_every
        self.train_cost = 0.0
        self.train_steps = 0
        self.train_interventions = 0
        self.last: dict[str, Any] = {}
        self._t0 = time.perf_counter()
        self.wall_offset = 0.0

    @property
    def width(self) -> float | dict[str, float]:
        return self.scheduler.width if self.scheduler is not None else self.fixed_width

    def _on_training_start(self) -> None:
        self._push_width()

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            self.train_cost += float(info.get("cost", 0.0))
            self.train_interventions += bool(info.get("shield/intervened", False))
            self.train_steps += 1
        if self.num_timesteps >= self.next_eval:
            self.next_eval += self.eval_every
            self.run_evaluation()
        return True

    def run_evaluation(self) -> EvalResult:
        model = self.model
        norm = model.get_vec_normalize_env()

        def predict(obs: Any) -> np.ndarray:
            if norm is not None:
                obs = norm.normalize_obs(obs)
            action, _ = model.predict(obs, deterministic=True)
            return action

        self.eval_env.set_width(self.width)
        result = evaluate(
            predict,
            self.eval_env,
            episodes=self.episodes,
            seed=self.eval_seed,
            step=self.num_timesteps,
        )
        reason = "fixed"
        if self.scheduler is not None:
            self.scheduler.update(result.stats)
            hist = self.scheduler.history
            reason = hist[-1][2] if hist else ""
        self._push_width()
        self._log(result, reason)
        return result

    def _push_width(self) -> None:
        width = self.width
        self.training_env.env_method("set_width", width)
        self.eval_env.set_width(width)

    def _log(self, result: EvalResult, reason: str) -> None:
        s = result.stats
        width = self.width
        mean_w = float(np.mean(list(width.values()))) if isinstance(width, dict) else float(width)
        row = {
            "step": self.num_timesteps,
            "width": mean_w,
            "success_rate": s.success_rate,
            "mean_return": result.mean_return,
            "cost_rate": s.cost_rate,
            "intervention_rate": s.intervention_rate,
            "mean_correction": s.mean_correction,
            "train_cost": self.train_cost,
            "train_steps": self.train_steps,
            "reason": reason,
            "wall_s": round(self.wall_offset + time.perf_counter() - self._t0, 2),
        }
        self.last = row
        new = not self.metrics_csv.exists()
        with self.metrics_csv.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        for k in (
            "width",
            "success_rate",
            "cost_rate",
            "intervention_rate",
            "mean_correction",
            "mean_return",
        ):
            self.logger.record(f"envelope/{k}", row[k])
        self.logger.record("envelope/train_cost", self.train_cost)
        if isinstance(width, dict):
            for kind, w in width.items():
                self.logger.record(f"envelope/width_{kind}", w)
        self.logger.dump(self.num_timesteps)

    def state_dict(self) -> dict[str, Any]:
        return {
            "next_eval": self.next_eval,
            "train_cost": self.train_cost,
            "train_steps": self.train_steps,
            "train_interventions": self.train_interventions,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "wall_s": self.wall_offset + time.perf_counter() - self._t0,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next_eval = int(state["next_eval"])
        self.train_cost = float(state["train_cost"])
        self.train_steps = int(state["train_steps"])
        self.train_interventions = int(state.get("train_interventions", 0))
        self.wall_offset = float(state.get("wall_s", 0.0))
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])


class CheckpointCallback(BaseCallback):
    """Atomic checkpoints every ``every`` steps: files are written under temporary names and
    renamed, and ``ckpt/latest.json`` (the only thing ``--resume`` trusts) is replaced last."""

    def __init__(
        self, run_dir: Path, every: int, envelope_cb: EnvelopeCallback, save_buffer: bool
    ) -> None:
        super().__init__(verbose=0)
        self.dir = run_dir / "ckpt"
        self.every = every
        self.envelope_cb = envelope_cb
        self.save_buffer = save_buffer
        self.next_save = every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_save:
            self.next_save = (self.num_timesteps // self.every + 1) * self.every
            self.save()
        return True

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        step = self.num_timesteps
        model_path = self.dir / f"model_{step}.zip"
        _atomic_save(lambda p: self.model.save(p), model_path)
        entry: dict[str, Any] = {"step": step, "model": model_path.name}
        if self.save_buffer and hasattr(self.model, "save_replay_buffer"):
            buf = self.dir / f"replay_{step}.pkl"
            _atomic_save(lambda p: self.model.save_replay_buffer(p), buf)  # type: ignore[attr-defined]
            entry["replay"] = buf.name
        norm = self.model.get_vec_normalize_env()
        if norm is not None:
            stats = self.dir / f"vecnormalize_{step}.pkl"
            _atomic_save(lambda p: norm.save(str(p)), stats)
            entry["vecnormalize"] = stats.name
        state = {"callback": self.envelope_cb.state_dict(), "checkpoint": self.next_save}
        state_path = self.dir / f"state_{step}.json"
        _atomic_write_text(state_path, json.dumps(state))
        entry["state"] = state_path.name
        _atomic_write_text(self.dir / "latest.json", json.dumps(entry))
        # keep the newest two checkpoints: a crash mid-save still leaves a complete one
        for old in sorted(self.dir.glob("model_*.zip"), key=_step_of)[:-2]:
            s = _step_of(old)
            for p in (
                old,
                self.dir / f"replay_{s}.pkl",
                self.dir / f"state_{s}.json",
                self.dir / f"vecnormalize_{s}.pkl",
            ):
                p.unlink(missing_ok=True)


def _step_of(p: Path) -> int:
    return int(p.stem.split("_")[-1])


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_save(save: Callable[[Path], None], path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    save(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ProgressCallback(BaseCallback):
    """A rich progress bar with the current width, evaluation success and cost rate."""

    def __init__(self, total: int, envelope_cb: EnvelopeCallback) -> None:
        super().__init__(verbose=0)
        self.total = total
        self.envelope_cb = envelope_cb
        self._progress: Any = None

    def _on_training_start(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
        )
        self._progress.start()
        self._task = self._progress.add_task(
            "train", total=self.total, completed=self.num_timesteps, status=""
        )

    def _on_step(self) -> bool:
        if self.n_calls % 50 == 0 and self._progress is not None:
            last = self.envelope_cb.last
            status = (
                f"width {last['width']:.2f}  success {last['success_rate']:.0%}  cost {last['cost_rate']:.3f}"
                if last
                else "width -  (first evaluation pending)"
            )
            self._progress.update(self._task, completed=self.num_timesteps, status=status)
        return True

    def _on_training_end(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=self.num_timesteps)
            self._progress.stop()


# --------------------------------------------------------------------------- the run


@dataclass
class RunResult:
    run_dir: Path
    steps: int
    final: dict[str, Any]
    wall_s: float


def _make_model(spec: TaskSpec, vec: Any, run_dir: Path, *, shaped: bool = False) -> Any:
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
        if t.her:
            kwargs["replay_buffer_class"] = HerReplayBuffer
            kwargs["replay_buffer_kwargs"] = {
                "n_sampled_goal": t.her_goals,
                "goal_selection_strategy": "future",
                # reward shaping reads info (cost, shield correction): HER must keep it for relabelling
                "copy_info_dict": shaped,
            }
        return SAC(**common, **kwargs)
    n_steps = t.n_steps
    batch = min(t.batch_size, n_steps * t.n_envs)
    return PPO(**common, n_steps=n_steps, batch_size=batch, n_epochs=t.n_epochs)


def _load_model(spec: TaskSpec, path: Path, vec: Any) -> Any:
    cls = SAC if spec.train.algo == "sac" else PPO
    try:
        return cls.load(path, env=vec, device="cpu")
    except Exception as err:  # SB3 raises many types for a damaged zip
        raise RunError(
            f"checkpoint {path} is corrupt or unreadable: {type(err).__name__}: {err}"
        ) from None


def train(
    task: str | Path | TaskSpec,
    opts: RunOptions = RunOptions(),
    *,
    out: str | Path | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
) -> RunResult:
    """Train a shielded policy; see the module docstring for what the run directory holds.

    Raises:
        RunError: bad options, an existing run directory without ``resume``/``force``,
            a run directory of another task, or a corrupt checkpoint.
        SpecError: the task file is invalid.
    """
    base = task if isinstance(task, TaskSpec) else load_task(task)
    opts.validate()
    run_dir = (
        Path(out)
        if out is not None
        else Path("runs") / f"{base.task.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    latest = run_dir / "ckpt" / "latest.json"
    if resume:
        if not (run_dir / "config.toml").exists():
            raise RunError(f"--resume: {run_dir} has no config.toml; nothing to resume")
        spec, run_meta = load_run_config(run_dir)
        if spec.task.name != base.task.name:
            raise RunError(
                f"--resume: {run_dir} is a run of task {spec.task.name!r}, not {base.task.name!r}"
            )
        if opts.steps is not None:  # allow extending a run
            spec = spec.model_copy(
                update={"train": spec.train.model_copy(update={"total_steps": opts.steps})}
            )
        sched_name = run_meta.get("scheduler", "competence")
    else:
        if run_dir.exists() and any(run_dir.iterdir()):
            if not force:
                raise RunError(
                    f"{run_dir} exists and is not empty; pass --resume to continue it or --force to overwrite"
                )
            shutil.rmtree(run_dir)
        spec = resolve_spec(base, opts)
        sched_name = opts.scheduler or spec.scheduler.kind
    run_dir.mkdir(parents=True, exist_ok=True)

    import torch

    torch.set_num_threads(spec.train.torch_threads)
    shielded = sched_name not in ("none", "penalty")
    penalty = opts.cost_penalty if sched_name == "penalty" else None

    eval_env = make_env(spec, shielded=shielded)
    scheduler = make_scheduler(spec.scheduler, eval_env.envelope.kinds) if shielded else None
    # unshielded baselines run (and report margins) at the caps
    fixed_width = 1.0
    width0 = scheduler.width if scheduler is not None else fixed_width
    vec = make_vec_env(spec, width=width0, shielded=shielded, penalty=penalty)
    metrics = run_dir / "metrics.csv"
    env_cb = EnvelopeCallback(
        eval_env,
        scheduler,
        eval_every=spec.train.eval_every,
        episodes=spec.train.eval_episodes,
        eval_seed=10_000 + spec.train.seed * 1000,
        metrics_csv=metrics,
        fixed_width=fixed_width,
    )

    if resume and latest.exists():
        try:
            entry = json.loads(latest.read_text())
            state = json.loads((run_dir / "ckpt" / entry["state"]).read_text())
        except (json.JSONDecodeError, KeyError, FileNotFoundError) as err:
            raise RunError(f"checkpoint index {latest} is corrupt: {err}") from None
        if spec.train.normalize_obs:
            vec = _load_normalizer(run_dir / "ckpt", entry, vec)
        model = _load_model(spec, run_dir / "ckpt" / entry["model"], vec)
        if "replay" in entry:
            try:
                model.load_replay_buffer(run_dir / "ckpt" / entry["replay"])
            except Exception as err:
                raise RunError(
                    f"replay buffer {entry['replay']} is corrupt: {type(err).__name__}: {err}"
                ) from None
        env_cb.load_state_dict(state["callback"])
        demos = _load_demos(run_dir) if spec.train.bc_weight > 0 else None
        _truncate_metrics(metrics, model.num_timesteps)
        env_cb.last = _last_metrics_row(metrics)  # so a finished run is not evaluated twice
        reset = False
    else:
        if metrics.exists():
            metrics.unlink()
        shaped = penalty is not None or (shielded and spec.train.correction_penalty > 0)
        if spec.train.normalize_obs:
            widths = len(eval_env.envelope.kinds) if eval_env.observe_width else 0
            vec = EnvelopeVecNormalize(
                vec, passthrough=widths, norm_obs=True, norm_reward=False, gamma=spec.train.gamma
            )
        model = _make_model(spec, vec, run_dir, shaped=shaped)
        reset = True
        demos = None
        if spec.train.demo_episodes > 0:
            demos = _demonstrate(spec, model, width0, shielded, penalty, run_dir, progress)
        write_config(
            run_dir,
            spec,
            {
                "scheduler": sched_name,
                "safebot": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )
    ckpt_cb = CheckpointCallback(
        run_dir, spec.train.checkpoint_every, env_cb, spec.train.save_replay_buffer
    )
    ckpt_cb.next_save = (
        model.num_timesteps // spec.train.checkpoint_every + 1
    ) * spec.train.checkpoint_every
    callbacks: list[Any] = [env_cb, ckpt_cb]
    if demos is not None and spec.train.bc_weight > 0:
        callbacks.append(
            BehaviourCloning(
                demos,
                spec.train.bc_weight,
                spec.train.bc_steps,
                spec.train.batch_size,
                seed=spec.train.seed,
            )
        )
    if progress:
        callbacks.append(ProgressCallback(spec.train.total_steps, env_cb))
    remaining = spec.train.total_steps - model.num_timesteps
    t0 = time.perf_counter()
    if remaining > 0:
        model.learn(
            total_timesteps=remaining,
            callback=callbacks,
            reset_num_timesteps=reset,
            tb_log_name="run",
        )
    else:
        # resumed at or past the end: learn() never ran, so SB3 has set up no logger yet
        model.set_logger(configure_logger(None, []))
    # a final evaluation at the end, so every run reports where it finished
    env_cb.init_callback(model)
    env_cb.num_timesteps = model.num_timesteps
    if not env_cb.last or env_cb.last.get("step") != model.num_timesteps:
        env_cb.run_evaluation()
    _atomic_save(lambda p: model.save(p), run_dir / "final_model.zip")
    norm = model.get_vec_normalize_env()
    if norm is not None:
        _atomic_save(lambda p: norm.save(str(p)), run_dir / FINAL_NORMALIZER)
    final = {**env_cb.last, "scheduler_state": scheduler.state_dict() if scheduler else None}
    if demos is None and (run_dir / DEMOS_FILE).exists():
        demos = _load_demos(run_dir)
    if demos is not None:  # environment steps spent on demonstrations, beside the training steps
        final["demonstrations"] = {
            "episodes": demos.episodes,
            "steps": len(demos),
            "scripted_success_rate": demos.success_rate,
        }
    _atomic_write_text(run_dir / "state.json", json.dumps({"callback": env_cb.state_dict()}))
    _atomic_write_text(run_dir / "summary.json", json.dumps(final, indent=2, default=float))
    vec.close()
    eval_env.close()
    return RunResult(run_dir, model.num_timesteps, final, time.perf_counter() - t0)


DEMOS_FILE = "demos.npz"
#: observation statistics of a ``normalize_obs`` run, beside ``final_model.zip``
FINAL_NORMALIZER = "final_vecnormalize.pkl"


def _load_normalizer(ckpt: Path, entry: dict[str, Any], vec: Any) -> VecNormalize:
    """The checkpoint's observation statistics around ``vec`` (RunError when missing or damaged)."""
    name = entry.get("vecnormalize")
    if name is None:
        raise RunError(
            f"--resume: {ckpt / 'latest.json'} has no observation statistics, "
            "but the run normalises observations"
        )
    try:
        norm = VecNormalize.load(str(ckpt / name), vec)
    except Exception as err:  # a damaged pickle raises many types
        raise RunError(
            f"observation statistics {ckpt / name} are corrupt: {type(err).__name__}: {err}"
        ) from None
    norm.training = True
    return norm


def _demonstrate(
    spec: TaskSpec,
    model: Any,
    width: Any,
    shielded: bool,
    penalty: float | None,
    run_dir: Path,
    progress: bool,
) -> DemoSet:
    """Scripted demonstrations into the replay buffer (and ``demos.npz``), then the BC pretraining."""
    t = spec.train
    t0 = time.perf_counter()
    if progress:
        print(f"collecting {t.demo_episodes} scripted demonstrations at width {width} ...")
    fns = [
        _env_factory(spec, width, shielded, penalty, t.seed + 100_000 + i) for i in range(t.n_envs)
    ]
    dvec = DummyVecEnv(fns)
    try:
        correction = t.correction_penalty if shielded else 0.0
        demos = collect_demonstrations(model, dvec, t.demo_episodes, correction_penalty=correction)
    finally:
        dvec.close()
    demos.save(run_dir / DEMOS_FILE)
    if t.bc_pretrain > 0:
        pretrain_actor(model, demos, t.bc_pretrain, t.batch_size, seed=t.seed)
    if progress:
        print(
            f"  {demos.episodes} episodes, {len(demos)} transitions, scripted success "
            f"{demos.success_rate:.0%}, {t.bc_pretrain} cloning steps "
            f"({time.perf_counter() - t0:.0f} s)"
        )
    return demos


def _load_demos(run_dir: Path) -> DemoSet:
    try:
        return DemoSet.load(run_dir / DEMOS_FILE)
    except (FileNotFoundError, ValueError) as err:
        raise RunError(f"--resume: {err}") from None


def _last_metrics_row(path: Path) -> dict[str, Any]:
    """The last row of ``metrics.csv`` with numbers parsed (empty if there is none)."""
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    row: dict[str, Any] = {}
    for k, v in rows[-1].items():
        try:
            row[k] = int(v) if k in ("step", "train_steps") else float(v)
        except ValueError:
            row[k] = v
    return row


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric rows written after the checkpoint we resume from (they will be redone)."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
    text_rows = [METRIC_FIELDS, *[[r[k] for k in METRIC_FIELDS] for r in rows]]
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "w", newline="") as f:
        csv.writer(f).writerows(text_rows)
    os.replace(tmp, path)


def load_policy(run_dir: str | Path) -> tuple[TaskSpec, Any]:
    """The resolved spec and the final (or latest checkpointed) model of a run."""
    run_dir = Path(run_dir)
    spec, _ = load_run_config(run_dir)
    cls = SAC if spec.train.algo == "sac" else PPO
    path = run_dir / "final_model.zip"
    stats = run_dir / FINAL_NORMALIZER
    if not path.exists():
        latest = run_dir / "ckpt" / "latest.json"
        if not latest.exists():
            raise RunError(f"{run_dir} has no final_model.zip and no checkpoint")
        entry = json.loads(latest.read_text())
        path = run_dir / "ckpt" / entry["model"]
        stats = run_dir / "ckpt" / str(entry.get("vecnormalize", FINAL_NORMALIZER))
    env = DummyVecEnv([lambda: make_env(spec)])  # HER models need an env to load
    try:
        model = cls.load(path, env=env, device="cpu")
    except Exception as err:
        raise RunError(
            f"model {path} is corrupt or unreadable: {type(err).__name__}: {err}"
        ) from None
    if not spec.train.normalize_obs:
        return spec, model
    if not stats.exists():
        raise RunError(f"{run_dir} normalises observations but {stats.name} is missing")
    try:
        norm = VecNormalize.load(str(stats), env)
    except Exception as err:
        raise RunError(
            f"observation statistics {stats} are corrupt: {type(err).__name__}: {err}"
        ) from None
    norm.training = False
    return spec, NormalizedModel(model, norm)


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


def final_width(run_dir: str | Path) -> Any:
    """The width a run ended at (from its state file)."""
    run_dir = Path(run_dir)
    summary = run_dir / "summary.json"
    if summary.exists():
        data = json.loads(summary.read_text())
        sched = data.get("scheduler_state")
        if sched and "width" in sched:
            return sched["width"]
        return data.get("width", 1.0)
    return 0.0


__all__ = [
    "EnvelopeCallback",
    "EnvelopeVecNormalize",
    "EvalResult",
    "RunError",
    "RunOptions",
    "RunResult",
    "evaluate",
    "load_policy",
    "load_run_config",
    "make_env",
    "train",
]
