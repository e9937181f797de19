"""One training run, start to finish: open the run directory, build, start or resume, learn, finish."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure as configure_logger
from stable_baselines3.common.vec_env import DummyVecEnv

from safebot import __version__
from safebot.demos import (
    BehaviourCloning,
    CriticWarmup,
    DemoSet,
    collect_demonstrations,
    pretrain_actor,
)
from safebot.io import atomic_path, atomic_write
from safebot.modes import RewardConstraint, RunMode, decode_run_mode
from safebot.resources import code_label
from safebot.schedulers import Scheduler, make_scheduler
from safebot.shield import Shield
from safebot.spec import TaskSpec, load_task
from safebot.train.best import BestModel
from safebot.train.callbacks import (
    CheckpointCallback,
    EnvelopeCallback,
    ProgressCallback,
    WorldChange,
)
from safebot.train.lagrangian import Lagrange, LagrangeCallback
from safebot.train.model import load_model, load_normalizer, load_replay_buffer, make_model
from safebot.train.options import RunError, RunOptions, resolve_spec
from safebot.train.rundir import Checkpoint, RunDir
from safebot.train.wrappers import (
    env_factory,
    make_env,
    make_vec_env,
    normalise_observations,
    reward_penalty,
)

#: the width unshielded baselines run (and report margins) at: the caps
UNSHIELDED_WIDTH = 1.0


@dataclass
class RunResult:
    """What :func:`train` returns: where the run is, how far it got, its final evaluation."""

    run_dir: Path
    steps: int
    final: dict[str, Any]
    wall_s: float


@dataclass
class _Session:
    """The live objects of one run (``vec`` is replaced when observations are normalised)."""

    run: RunDir
    spec: TaskSpec
    mode: RunMode
    penalty: float | None
    eval_env: Shield
    scheduler: Scheduler | None
    vec: Any
    env_cb: EnvelopeCallback
    lagrange: Lagrange | None = None
    #: builds the fresh learner (``spec, vec, run_dir -> model``); ``safebot bench train``
    #: passes its plain-SB3 baseline here, everything else about the run stays the same
    model_factory: Callable[[TaskSpec, Any, Path], Any] = make_model
    #: the caller's callbacks, run after the run's own (a :class:`WorldChange` gets ``eval_env``)
    extra_callbacks: Sequence[BaseCallback] = ()

    @property
    def start_width(self) -> Any:
        return self.scheduler.width if self.scheduler is not None else UNSHIELDED_WIDTH


def train(
    task: str | Path | TaskSpec,
    opts: RunOptions = RunOptions(),
    *,
    out: str | Path | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    model_factory: Callable[[TaskSpec, Any, Path], Any] = make_model,
    callbacks: Sequence[BaseCallback] = (),
) -> RunResult:
    """Train a shielded policy; :mod:`safebot.train.rundir` lists what the run directory holds.

    ``model_factory`` builds the fresh learner (default :func:`make_model`, the
    ``[train]`` recipe); a resumed run loads the saved model whatever built it.
    ``callbacks`` run after the run's own; a :class:`WorldChange` among them is
    handed the run's evaluation env. They are not checkpointed: pass the same ones
    again to resume.

    Raises:
        RunError: bad options, an existing run directory without ``resume``/``force``,
            a run directory of another task, or a corrupt checkpoint.
        SpecError: the task file is invalid.
    """
    base = task if isinstance(task, TaskSpec) else load_task(task)
    opts.validate()
    run, spec, mode = _open_run(base, opts, out, resume=resume, force=force)
    import torch

    torch.set_num_threads(spec.train.torch_threads)
    s = _build(run, spec, mode, reward_penalty(mode.constraint, opts.cost_penalty))
    s.model_factory = model_factory
    s.extra_callbacks = tuple(callbacks)
    ckpt = run.latest_checkpoint() if resume else None
    if ckpt is not None:
        model, demos = _restore(s, ckpt)
    else:
        model, demos = _start(s, progress)
    t0 = time.perf_counter()
    _learn(s, model, demos, progress=progress, reset=ckpt is None)
    final = _finish(s, model, demos)
    return RunResult(run.root, model.num_timesteps, final, time.perf_counter() - t0)


def _open_run(
    base: TaskSpec, opts: RunOptions, out: str | Path | None, *, resume: bool, force: bool
) -> tuple[RunDir, TaskSpec, RunMode]:
    """The run directory, the spec that runs and its mode: a resume reads both back."""
    run = RunDir(out) if out is not None else RunDir.default(base.task.name)
    if resume:
        if not run.config.exists():
            raise RunError(f"--resume: {run.root} has no config.toml; nothing to resume")
        spec, meta = run.load_config()
        if spec.task.name != base.task.name:
            raise RunError(
                f"--resume: {run.root} is a run of task {spec.task.name!r}, not {base.task.name!r}"
            )
        if opts.steps is not None:  # allow extending a run
            spec = spec.model_copy(
                update={"train": spec.train.model_copy(update={"total_steps": opts.steps})}
            )
        mode = _mode_of(run, meta)
    else:
        if not run.is_empty():
            if not force:
                raise RunError(
                    f"{run.root} exists and is not empty; pass --resume to continue it or --force to overwrite"
                )
            shutil.rmtree(run.root)
        spec, mode = resolve_spec(base, opts), opts.mode(base.train.constraint)
    run.root.mkdir(parents=True, exist_ok=True)
    return run, spec, mode


def _mode_of(run: RunDir, meta: dict[str, Any]) -> RunMode:
    # runs written before the shield/constraint keys carry only the legacy scheduler name
    try:
        return decode_run_mode(
            meta.get("scheduler", "competence"), meta.get("shield"), meta.get("constraint")
        )
    except ValueError as err:
        raise RunError(f"{run.config}: [run] {err}") from None


def _run_table(spec: TaskSpec, mode: RunMode) -> dict[str, Any]:
    """The ``[run]`` table of ``config.toml``; ``scheduler`` keeps the legacy name of a baseline."""
    return {
        "scheduler": mode.legacy_name or spec.scheduler.kind,
        "shield": mode.shield.value,
        "constraint": mode.constraint.value,
        "safebot": __version__,
        "code": code_label() or "unknown",  # the commit this run started with
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _build(run: RunDir, spec: TaskSpec, mode: RunMode, penalty: float | None) -> _Session:
    """The evaluation env, the scheduler (none when unshielded), the training VecEnv, the callback."""
    eval_env = make_env(spec, shielded=mode.shielded)
    scheduler = make_scheduler(spec.scheduler, eval_env.envelope.kinds) if mode.shielded else None
    width0 = scheduler.width if scheduler is not None else UNSHIELDED_WIDTH
    vec = make_vec_env(spec, width=width0, shielded=mode.shielded, penalty=penalty)
    t = spec.train
    lagrange = (
        Lagrange(t.cost_limit, t.lagrangian_lr, t.lambda_init)
        if mode.constraint is RewardConstraint.LAGRANGIAN
        else None
    )
    env_cb = EnvelopeCallback(
        eval_env,
        scheduler,
        eval_every=spec.train.eval_every,
        episodes=spec.train.eval_episodes,
        run_seed=spec.train.seed,
        metrics_csv=run.metrics,
        fixed_width=UNSHIELDED_WIDTH,
        lagrange=lagrange,
        fixed_lambda=penalty or 0.0,
        best=BestModel(run),
    )
    return _Session(run, spec, mode, penalty, eval_env, scheduler, vec, env_cb, lagrange)


def _restore(s: _Session, ckpt: Checkpoint) -> tuple[Any, DemoSet | None]:
    """Model, replay buffer, statistics and callback state of ``ckpt``; metrics cut back to it."""
    try:
        if ckpt.state is None:
            raise KeyError("state")
        state = json.loads(ckpt.state.read_text())
        callback_state = state["callback"]
    except (json.JSONDecodeError, KeyError, FileNotFoundError) as err:
        raise RunError(f"checkpoint index {s.run.latest} is corrupt: {err}") from None
    if s.spec.train.normalize_obs:
        stats = ckpt.normalizer or ckpt.expected_normalizer
        s.vec = load_normalizer(stats, s.vec, owner=s.run.root, training=True)
    model = load_model(s.spec, ckpt.model, s.vec)
    if ckpt.replay is not None:
        load_replay_buffer(model, ckpt.replay)
    try:
        s.env_cb.load_state_dict(callback_state)
    except (KeyError, TypeError, ValueError) as err:
        raise RunError(f"checkpoint {ckpt.state} is corrupt: {err}") from None
    demos = _load_demos(s.run) if s.spec.train.bc_weight > 0 else None
    s.run.truncate_metrics(model.num_timesteps)
    s.env_cb.last = s.run.last_metrics_row()  # so a finished run is not evaluated twice
    return model, demos


def _start(s: _Session, progress: bool) -> tuple[Any, DemoSet | None]:
    """A fresh learner (after the demonstrations, when the task has them) and ``config.toml``."""
    s.run.metrics.unlink(missing_ok=True)
    s.vec = normalise_observations(s.vec, s.spec, s.eval_env)
    model = s.model_factory(s.spec, s.vec, s.run.root)
    demos = _demonstrate(s, model, progress) if s.spec.train.demo_episodes > 0 else None
    s.run.write_config(s.spec, _run_table(s.spec, s.mode))
    return model, demos


def _learn(s: _Session, model: Any, demos: DemoSet | None, *, progress: bool, reset: bool) -> None:
    """``model.learn`` up to ``[train] total_steps`` with the callbacks of the run."""
    t = s.spec.train
    ckpt_cb = CheckpointCallback(s.run, t.checkpoint_every, s.env_cb, t.save_replay_buffer)
    ckpt_cb.next_save = (model.num_timesteps // t.checkpoint_every + 1) * t.checkpoint_every
    callbacks: list[BaseCallback] = [s.env_cb, ckpt_cb]
    if s.lagrange is not None:
        # first: lambda is updated (and the PPO rollout re-penalised) before anything reads it
        callbacks.insert(0, LagrangeCallback(s.lagrange))
    if demos is not None and t.bc_weight > 0:
        callbacks.append(
            BehaviourCloning(demos, t.bc_weight, t.bc_steps, t.batch_size, seed=t.seed)
        )
    if t.critic_warmup > model.num_timesteps:
        callbacks.append(CriticWarmup(t.critic_warmup))  # after cloning: its steps are kept
    if progress:
        callbacks.append(ProgressCallback(t.total_steps, s.env_cb))
    for cb in s.extra_callbacks:
        if isinstance(cb, WorldChange):
            cb.eval_env = s.env_cb.eval_env
    callbacks.extend(s.extra_callbacks)
    remaining = t.total_steps - model.num_timesteps
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


def _finish(s: _Session, model: Any, demos: DemoSet | None) -> dict[str, Any]:
    """A final evaluation (unless the last one was at this step), final files, envs closed."""
    env_cb, run = s.env_cb, s.run
    env_cb.init_callback(model)
    env_cb.num_timesteps = model.num_timesteps
    if not env_cb.last or env_cb.last.get("step") != model.num_timesteps:
        env_cb.run_evaluation()
    with atomic_path(run.final_model) as tmp:
        model.save(tmp)
    norm = model.get_vec_normalize_env()
    if norm is not None:
        with atomic_path(run.final_normalizer) as tmp:
            norm.save(str(tmp))
    sched_state = s.scheduler.state_dict() if s.scheduler is not None else None
    final = {**env_cb.last, "scheduler_state": sched_state}
    if demos is None and run.demos.exists():
        demos = _load_demos(run)
    if demos is not None:  # environment steps spent on demonstrations, beside the training steps
        final["demonstrations"] = {
            "episodes": demos.episodes,
            "steps": len(demos),
            "scripted_success_rate": demos.success_rate,
        }
    atomic_write(run.state, json.dumps({"callback": env_cb.state_dict()}))
    atomic_write(run.summary, json.dumps(final, indent=2, default=float))
    s.vec.close()
    s.eval_env.close()
    return final


def _demonstrate(s: _Session, model: Any, progress: bool) -> DemoSet:
    """Scripted demonstrations into the replay buffer (and ``demos.npz``), then the BC pretraining."""
    t = s.spec.train
    width = s.start_width
    t0 = time.perf_counter()
    if progress:
        print(f"collecting {t.demo_episodes} scripted demonstrations at width {width} ...")
    fns = [
        env_factory(s.spec, width, s.mode.shielded, s.penalty, t.seed + 100_000 + i)
        for i in range(t.n_envs)
    ]
    dvec = DummyVecEnv(fns)
    try:
        correction = t.correction_penalty if s.mode.shielded else 0.0
        demos = collect_demonstrations(model, dvec, t.demo_episodes, correction_penalty=correction)
    finally:
        dvec.close()
    demos.save(s.run.demos)
    if t.bc_pretrain > 0:
        pretrain_actor(model, demos, t.bc_pretrain, t.batch_size, seed=t.seed)
    if progress:
        print(
            f"  {demos.episodes} episodes, {len(demos)} transitions, scripted success "
            f"{demos.success_rate:.0%}, {t.bc_pretrain} cloning steps "
            f"({time.perf_counter() - t0:.0f} s)"
        )
    return demos


def _load_demos(run: RunDir) -> DemoSet:
    try:
        return DemoSet.load(run.demos)
    except (FileNotFoundError, ValueError) as err:
        raise RunError(f"--resume: {err}") from None


__all__ = ["UNSHIELDED_WIDTH", "RunResult", "train"]
