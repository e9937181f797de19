"""Scripted controllers: they solve their tasks at width 1, and the width trades success for cost."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from safebot.envs import ArmTaskEnv
from safebot.scripted import (
    POLICIES,
    ee_velocity_action,
    evaluate_scripted,
    main,
    press_policy,
    push_policy,
)
from safebot.shield import Shield
from safebot.spec import TaskSpec, load_task, parse_model

MakeTask = Callable[..., ArmTaskEnv]

# Measured on seeds 0-5 at width 1 (docs/tasks.md has the 20-episode table): reach 4/6 (the
# misses are goals whose pose puts the wrist on the obstacle), push 5/6, press 6/6. The
# trade-off test uses seeds 0-9 for reach: 7/10 at width 0 against 8/10 at width 1.
SOLVES_AT_WIDTH_1 = {"reach": 0.5, "reach_joint": 0.5, "push": 0.5, "press": 0.8}


@pytest.mark.parametrize("task", sorted(SOLVES_AT_WIDTH_1))
def test_scripted_controller_solves_its_task_at_width_1(task: str) -> None:
    r = evaluate_scripted(task, width=1.0, episodes=6, seed=0)
    assert r["success_rate"] >= SOLVES_AT_WIDTH_1[task], r
    assert 0 < r["mean_steps_to_success"] <= 100


@pytest.mark.parametrize(("task", "episodes"), [("reach", 10), ("push", 6), ("press", 6)])
def test_width_trades_success_for_cost(task: str, episodes: int) -> None:
    """The trade-off of issue 2 item 6: the start bounds cost success, the caps cost safety."""
    tight = evaluate_scripted(task, width=0.0, episodes=episodes, seed=0)
    loose = evaluate_scripted(task, width=1.0, episodes=episodes, seed=0)
    # Reach's 2 s episodes: the start bounds cost success; Push's and Press's 6 s episodes
    # leave the task doable there (so a learner can earn the widening): they cost time
    if task == "reach":
        assert tight["success_rate"] < loose["success_rate"], (tight, loose)
    assert tight["success_rate"] <= loose["success_rate"], (tight, loose)
    assert tight["cost_rate"] < loose["cost_rate"], (tight, loose)
    # where the tight envelope succeeds at all, it takes far longer (NaN: it never did)
    assert not tight["mean_steps_to_success"] < 1.5 * loose["mean_steps_to_success"], (tight, loose)
    # at the caps the end effector moves faster than the task's safe speed
    assert loose["cost/ee_speed"] > 0.0, loose


def test_evaluation_reports_every_cost_term() -> None:
    data = load_task("press").model_dump(mode="json")
    data["robot"]["max_episode_steps"] = 60  # runs out of time at the start bound (~90 steps)
    r = evaluate_scripted(parse_model(data, TaskSpec, "press"), width=0.0, episodes=1, seed=0)
    assert set(r) == {
        "success_rate",
        "cost_rate",
        "mean_steps_to_success",
        "intervention_rate",
        "cost/contact_force",
        "cost/obstacle",
        "cost/joint_limit",
        "cost/ee_speed",
    }
    assert r["success_rate"] == 0.0 and math.isnan(r["mean_steps_to_success"])
    assert r["intervention_rate"] > 0.5  # the start bounds hold the saturated controller back
    with pytest.raises(ValueError, match="episodes"):
        evaluate_scripted("press", width=0.0, episodes=0)


@pytest.mark.parametrize("task", ["reach", "reach_joint"])
def test_ee_velocity_action_commands_that_velocity(make_task: MakeTask, task: str) -> None:
    env = make_task(task)
    env.reset(seed=1)
    v = np.array([0.05, -0.03, 0.02])
    a = ee_velocity_action(env, v)
    M, c = env.action_map()
    qd = M @ (a * env.action_scale) + c
    np.testing.assert_allclose(env.physics.ee_jacobian() @ qd, v, atol=2e-3)


@pytest.mark.parametrize("task", ["reach", "reach_joint"])
def test_ee_velocity_action_saturates_keeping_the_direction(make_task: MakeTask, task: str) -> None:
    env = make_task(task)
    env.reset(seed=1)
    v = np.array([30.0, -10.0, 5.0])
    a = ee_velocity_action(env, v)
    assert np.max(np.abs(a)) == pytest.approx(1.0)
    if task == "reach":
        np.testing.assert_allclose(a, v / np.max(np.abs(v)), rtol=1e-6)


def test_policies_work_through_wrappers_and_reject_other_tasks(make_task: MakeTask) -> None:
    assert set(POLICIES) == {"reach", "push", "press"}
    reach = Shield(make_task("reach"))
    reach.reset(seed=0)
    a = POLICIES["reach"](reach)
    assert a.shape == (3,) and np.all(np.abs(a) <= 1.0)
    for policy in (push_policy, press_policy):
        with pytest.raises(TypeError, match="needs the"):
            policy(reach)


def test_entry_point_prints_a_markdown_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["press", "--episodes", "1", "--widths", "1"]) == 0
    out = capsys.readouterr().out
    assert "| width | success | cost rate |" in out
    assert "\n| 1 | 100% |" in out
    with pytest.raises(SystemExit) as err:
        main(["press", "--episodes", "0"])
    assert err.value.code == 2
