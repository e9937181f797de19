"""Competence scheduling with fixed controllers: widen on competence, hold on failure,
tighten when the world drifts from the map and recover afterwards (issue: competence envelope);
and the same experiment's learner mode, with a training agent (issue 14, point 5)."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from safebot.bench import reversibility as rev
from safebot.schedulers import make_scheduler
from safebot.shield import Shield
from safebot.train import RunOptions, evaluate


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


# -- learner mode: a training agent, the perception error doubled mid-run -----------


def test_learner_mode_writes_curves_phases_and_figure_and_resumes(tmp_path: Path) -> None:
    out, fig = tmp_path / "rev", tmp_path / "img" / "rev.png"
    argv = [
        "--learner", "--steps", "128", "--change-at", "32", "--restore-at", "96",
        "--eval-every", "32", "--eval-episodes", "1", "--checkpoint-every", "64",
        "--backend", "torch", "--quiet", "--out", str(out), "--figure", str(fig),
    ]  # fmt: skip
    assert rev.main(argv) == 0
    with (out / "curves.csv").open(newline="") as f:
        curves = list(csv.DictReader(f))
    assert [int(r["step"]) for r in curves] == [32, 64, 96, 128]
    # the evaluation at the change's step runs before it, the one at the restore's step after
    assert [int(r["perturbed"]) for r in curves] == [0, 1, 1, 0]
    summary = json.loads((out / "summary.json").read_text())
    phases = summary["phases"]
    assert [phases[p]["evaluations"] for p in ("before", "during", "after")] == [1, 2, 1]
    during = [float(r["width"]) for r in curves[1:3]]
    assert phases["during"]["min_width"] == pytest.approx(min(during))
    assert phases["during"]["max_harm_per_episode"] >= phases["during"]["mean_harm_per_episode"]
    assert summary["settings"]["factor"] == 2.0 and len(summary["curves"]) == 4
    assert fig.stat().st_size > 0
    metrics = (out / "run" / "metrics.csv").read_text()
    assert rev.main(argv) == 0  # a finished run is read again, not trained again
    assert (out / "run" / "metrics.csv").read_text() == metrics


def test_learner_mode_refuses_a_bad_window_or_factor_before_training(tmp_path: Path) -> None:
    opts = RunOptions(steps=64)
    with pytest.raises(ValueError, match="change_at < restore_at"):
        rev.learner_run(tmp_path, opts, change_at=50, restore_at=50)
    with pytest.raises(ValueError, match="factor"):
        rev.learner_run(tmp_path, opts, change_at=10, restore_at=50, factor=float("nan"))
    assert not (tmp_path / "run").exists()


def test_a_change_is_made_at_the_first_step_the_vector_env_reaches() -> None:
    assert rev.applied_step(20000, 1) == 20000
    assert rev.applied_step(20001, 4) == 20004
    assert rev.applied_step(20000, 4) == 20000


def test_phases_split_at_the_perturbed_evaluations() -> None:
    rows = [
        {"step": s, "width": w, "success_rate": 1.0, "harm_per_episode": h, "perturbed": p}
        for s, w, h, p in [(1, 1.0, 0.0, 0), (2, 0.4, 0.5, 1), (3, 0.7, 0.1, 1), (4, 1.0, 0.0, 0)]
    ]
    table = rev.phase_table(rows)
    assert table["during"]["min_width"] == 0.4 and table["during"]["max_harm_per_episode"] == 0.5
    assert table["during"]["mean_width"] == pytest.approx(0.55)
    assert table["before"]["evaluations"] == table["after"]["evaluations"] == 1
    empty = rev.phase_table([{**r, "perturbed": 0} for r in rows])
    assert empty["during"]["evaluations"] == 0 and empty["during"]["mean_width"] is None
