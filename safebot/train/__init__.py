"""Training: SB3 learners inside the shield, envelope updates from held-out evaluations, checkpoints.

The learners are stock SB3 SAC (with HER on the goal tasks) and PPO; safebot
extends them only through callbacks. One module per job:

==============  ================================================================
``options``     :class:`RunOptions` (what the CLI asks) -> :func:`resolve_spec`
``rundir``      :class:`RunDir`: where each file of a run lives; config, metrics
``wrappers``    the env stack: :func:`make_env` (the shield), reward shaping,
                Monitor, VecEnv, :class:`EnvelopeVecNormalize`
``model``       building a learner; loading a model and its observation
                statistics (for ``--resume`` and for :func:`load_policy`)
``evaluation``  held-out evaluation episodes -> :class:`EvalResult`
``lagrangian``  the Lagrangian constraint: :class:`Lagrange` (dual ascent on
                lambda), the harm-pricing replay buffers, :class:`LagrangeCallback`
``best``        :class:`BestModel`: the best held-out-evaluated model, beside the last
``callbacks``   :class:`EnvelopeCallback` (evaluate, update the scheduler, push
                the width to every env, log), :class:`CheckpointCallback`
                (atomic checkpoints, so ``--resume`` continues after a
                ``kill -9``), :class:`ProgressCallback`, :class:`WorldChange`
                (scheduled changes of the world, for experiments)
``run``         :func:`train`: open the run directory, build, start or resume,
                learn, finish
==============  ================================================================

The scheduler sees only held-out evaluation episodes on a separate env instance
with its own seeds (docs/design.md, rule 4). Tasks with ``[train]
demo_episodes`` add scripted demonstrations and Q-filtered cloning
(:mod:`safebot.demos`). The shield mode, reward constraint and scheduler kind
are the enums of :mod:`safebot.modes`.

Everything importable from ``safebot.train`` before the split still is.
"""

from __future__ import annotations

from safebot.modes import (
    Algo,
    PolicyChoice,
    RewardConstraint,
    RunMode,
    SchedulerKind,
    ShieldMode,
)
from safebot.train.best import BestModel
from safebot.train.callbacks import (
    CheckpointCallback,
    EnvelopeCallback,
    ProgressCallback,
    WorldChange,
)
from safebot.train.evaluation import EvalResult, evaluate, evaluate_run
from safebot.train.lagrangian import Lagrange, LagrangeCallback
from safebot.train.model import NormalizedModel, load_model, load_policy, make_model
from safebot.train.options import ALGOS, SCHEDULER_CHOICES, RunError, RunOptions, resolve_spec
from safebot.train.run import RunResult, train
from safebot.train.rundir import (
    DEMOS_FILE,
    FINAL_NORMALIZER,
    METRIC_FIELDS,
    ModelSelection,
    RunDir,
    final_width,
    load_run_config,
    write_config,
)
from safebot.train.wrappers import (
    EnvelopeVecNormalize,
    ShapedReward,
    env_factory,
    make_env,
    make_vec_env,
)

__all__ = [
    "ALGOS",
    "DEMOS_FILE",
    "FINAL_NORMALIZER",
    "METRIC_FIELDS",
    "SCHEDULER_CHOICES",
    "Algo",
    "BestModel",
    "CheckpointCallback",
    "EnvelopeCallback",
    "EnvelopeVecNormalize",
    "EvalResult",
    "Lagrange",
    "LagrangeCallback",
    "ModelSelection",
    "NormalizedModel",
    "PolicyChoice",
    "ProgressCallback",
    "RewardConstraint",
    "RunDir",
    "RunError",
    "RunMode",
    "RunOptions",
    "RunResult",
    "SchedulerKind",
    "ShapedReward",
    "ShieldMode",
    "WorldChange",
    "env_factory",
    "evaluate",
    "evaluate_run",
    "final_width",
    "load_model",
    "load_policy",
    "load_run_config",
    "make_env",
    "make_model",
    "make_vec_env",
    "resolve_spec",
    "train",
    "write_config",
]
