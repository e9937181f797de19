"""safebot's MuJoCo manipulation tasks, registered with Gymnasium.

Example:
    >>> import gymnasium as gym, safebot.envs
    >>> env = gym.make("safebot/Reach-v0")
    >>> env = safebot.envs.make("tasks/reach.toml")        # or from a TOML path
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym

from safebot.envs.base import COST_TERMS, ArmTaskEnv
from safebot.envs.physics import ArmPhysics, Contact
from safebot.envs.tasks import TASK_CLASSES, PressEnv, PushEnv, ReachEnv
from safebot.spec import TaskSpec, load_task

__all__ = [
    "COST_TERMS",
    "TASK_IDS",
    "ArmPhysics",
    "ArmTaskEnv",
    "Contact",
    "PressEnv",
    "PushEnv",
    "ReachEnv",
    "make",
    "register_envs",
]

TASK_IDS = {"safebot/Reach-v0": "reach", "safebot/Push-v0": "push", "safebot/Press-v0": "press"}


def make_task_env(
    task: str | Path | TaskSpec = "reach", render_mode: str | None = None
) -> ArmTaskEnv:
    """Build the raw task env (no TimeLimit wrapper) from a spec, a TOML path or a shipped name."""
    spec = task if isinstance(task, TaskSpec) else load_task(task)
    return TASK_CLASSES[spec.task.kind](spec, render_mode=render_mode)


def make(task: str | Path | TaskSpec, render_mode: str | None = None) -> ArmTaskEnv:
    """Alias of :func:`make_task_env`; episodes are truncated by the env at ``max_episode_steps``."""
    return make_task_env(task, render_mode=render_mode)


def register_envs() -> None:
    """Register ``safebot/Reach-v0``, ``safebot/Push-v0`` and ``safebot/Press-v0`` (idempotent)."""
    for env_id, name in TASK_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point="safebot.envs:make_task_env",
            kwargs={"task": name},
            # the env truncates itself at the spec's max_episode_steps
            disable_env_checker=False,
        )


register_envs()
