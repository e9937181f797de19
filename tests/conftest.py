"""Shared test set-up: headless rendering and a factory for safebot task envs."""

from __future__ import annotations

import os

# MuJoCo picks its GL backend at import time; without a display only EGL (Mesa) works.
if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from safebot.runtime import configure_process

if TYPE_CHECKING:
    from safebot.envs import ArmTaskEnv

# The process defaults the `safebot` command applies (OMP_WAIT_POLICY=PASSIVE: the
# kernel tests call numba's parallel project_batch); `import safebot` sets none.
configure_process()


@pytest.fixture
def make_task() -> Iterator[Callable[..., ArmTaskEnv]]:
    """``make_task("reach")`` -> a fresh task env (no TimeLimit wrapper), closed after the test."""
    import safebot.envs

    made: list[ArmTaskEnv] = []

    def factory(task: Any = "reach", **kwargs: Any) -> ArmTaskEnv:
        env = safebot.envs.make(task, **kwargs)
        made.append(env)
        return env

    yield factory
    for env in made:
        env.close()
