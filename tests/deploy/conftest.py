"""Fixtures for the deploy tests: tiny Reach bundles (stub fixtures: franka/ and ur/ conftests)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from safebot.deploy.bundle import Bundle
from safebot.deploy.export import export_run
from safebot.spec import TaskSpec, load_task
from safebot.train import RunOptions
from safebot.train import train as run_train


@pytest.fixture(scope="session")
def reach_bundle(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Bundle]:
    """``reach_bundle("cartesian" | "full")``: a bundle of a 128-step Reach run with that
    ``[robot] observation``, trained and exported once per session."""
    made: dict[str, Bundle] = {}

    def get(observation: str) -> Bundle:
        if observation not in made:
            spec = load_task("reach")
            robot = spec.robot.model_copy(update={"observation": observation})
            spec = TaskSpec.model_validate({**spec.model_dump(), "robot": robot.model_dump()})
            out = tmp_path_factory.mktemp(f"reach_{observation}") / "run"
            opts = RunOptions(steps=128, eval_every=64, eval_episodes=1, checkpoint_every=64)
            run_train(spec, opts, out=out, progress=False)
            made[observation] = export_run(out, out.parent / "bundle").bundle
        return made[observation]

    return get
