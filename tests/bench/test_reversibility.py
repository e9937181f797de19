"""Competence scheduling with fixed controllers: widen on competence, hold on failure,
tighten when the world drifts from the map and recover afterwards (issue: competence envelope)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from safebot.bench import reversibility as rev
from safebot.schedulers import make_scheduler
from safebot.shield import Shield
from safebot.train import evaluate


def _schedule(policy_of: Any, evaluations: int, episodes: int = 4) -> list[float]:
    spec = rev.experiment_spec()
    env = Shield(rev.StaleMapReach(spec))
    sched = make_scheduler(spec.scheduler, env.envelope.kinds)
    policy = policy_of(env)
    widths = []
    for k in range(evaluations):
        env.set_width(sched.width)
        result = evaluate(policy, env, episodes=episodes, seed=100 * k, step=k)
        sched.update(result.stats)
        widths.append(float(sched.width))  # type: ignore[arg-type]
    return widths


@pytest.mark.slow
def test_a_good_controller_drives_the_width_to_one() -> None:
    widths = _schedule(rev.capped_policy, evaluations=9)
    assert widths[-1] == pytest.approx(1.0)
    assert all(b >= a for a, b in itertools.pairwise(widths)), widths


@pytest.mark.slow
def test_a_bad_controller_keeps_the_start_width() -> None:
    # pushes straight down into the table: never succeeds
    widths = _schedule(
        lambda env: lambda obs: np.array([0.0, 0.0, -1.0]), evaluations=5, episodes=2
    )
    assert widths == [0.0] * 5


def test_stale_map_does_not_follow_the_moved_obstacle() -> None:
    env = Shield(rev.StaleMapReach(rev.experiment_spec()))
    env.reset(seed=0)
    (c0, h0) = env.unwrapped.keepout_boxes()[0]
    rev.set_obstacle(env, c0 + rev.SHIFT, h0 + rev.GROW)
    (c1, h1) = env.unwrapped.keepout_boxes()[0]
    np.testing.assert_array_equal(c0, c1)
    np.testing.assert_array_equal(h0, h1)
    g = env.unwrapped.model.geom("obstacle")
    np.testing.assert_allclose(env.unwrapped.data.geom_xpos[g.id], c0 + rev.SHIFT)


@pytest.mark.slow
def test_width_drops_when_the_obstacle_moves_and_recovers_after() -> None:
    rows = rev.run(evaluations=16, perturb=(7, 11), episodes=5, seed=0)
    w = np.array([r["next_width"] for r in rows])
    before, during, after = w[:7], w[7:11], w[11:]
    assert before.max() == pytest.approx(1.0), w
    assert during.min() < before.max() - 0.2, w  # tightened on the cost spike
    assert any(r["reason"].startswith("tighten") for r in rows[7:11]), rows
    assert after[-1] > during.min(), w  # and widened again once the world matched the map
    nominal_cost = [r["cost_rate"] for r in rows if not r["perturbed"]]
    assert max(nominal_cost) <= 0.02
