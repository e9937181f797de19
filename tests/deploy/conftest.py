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
#: process and assert zero faults. On the shared 2-core machine a scheduling stall can
#: lose cycles: the Franka stub then does what the controller does (it holds the last
#: velocity with zero acceleration), and the next command, limited against the state the
#: client read before the stall, trips ``joint_motion_generator_acceleration_
#: discontinuity``; the UR collision test once saw its program stopped first. Seen in 2 of
#: the last 5 fresh-clone runs, each time on other tests, each passing alone. Rerun up to
#: twice on an assertion only; a regression fails all three.
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
