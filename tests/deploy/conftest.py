"""Fixtures for the deploy tests: tiny Reach bundles (stub fixtures: franka/ and ur/ conftests)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from safebot.deploy.bundle import Bundle
from safebot.deploy.export import export_run
from safebot.spec import TaskSpec, load_task
from safebot.train import RunOptions
from safebot.train import train as run_train

#: Tests that run a deploy loop at 1 kHz (500 Hz for the UR) against a stub in another
#: process and assert zero faults. The Franka failures CI saw ("Motion finished commanded,
#: but the robot is still moving!", acceleration discontinuity) were a client bug, not
#: noise: a ``motion_finished`` command that missed its cycle was resent by libfranka
#: after the controller's zero-acceleration hold, a jerk of up to a_max/dt. Fixed
#: (``franka.client.finish_is_safe``) and tested deterministically
#: (``test_a_finishing_command_that_misses_its_cycle_still_ends_the_motion``). The UR
#: collision test once saw its program stopped first on a loaded machine; reruns stay,
#: up to twice on an assertion only, so a regression still fails all three.
TIMING_RERUNS = pytest.mark.flaky(reruns=2, only_rerun=["AssertionError"])


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
