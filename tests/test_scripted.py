"""Scripted controllers: they solve their tasks at width 1; naive ones trade harm for success."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import mujoco
import numpy as np
import pytest

from safebot.envs import ArmTaskEnv
from safebot.scripted import (
    NAIVE_POLICIES,
    POLICIES,
    REACH_GUARD_GAIN,
    _box_gap,
    arm_guard,
    ee_velocity_action,
    evaluate_scripted,
    guarded_sites,
    main,
    press_policy,
    push_policy,
    reach_aim,
)
from safebot.shield import Shield
from safebot.spec import TaskSpec, load_task, parse_model

MakeTask = Callable[..., ArmTaskEnv]

# Measured on seeds 0-5 at width 1 (docs/tasks.md has the 50-episode tables): the careful
# controllers solve nearly every episode there.
SOLVES_AT_WIDTH_1 = {"reach": 0.8, "reach_joint": 0.5, "push": 0.8, "press": 0.8}


@pytest.mark.parametrize("task", sorted(SOLVES_AT_WIDTH_1))
def test_scripted_controller_solves_its_task_at_width_1(task: str) -> None:
    r = evaluate_scripted(task, width=1.0, episodes=6, seed=0)
    assert r["success_rate"] >= SOLVES_AT_WIDTH_1[task], r
    assert 0 < r["mean_steps_to_success"] < load_task(task).robot.max_episode_steps


# seeds that hold episodes where the naive controller harms at the caps (docs/tasks.md).
# Reach is absent: its bar is not met on 800 episodes (careful keeps 20 % of naive's harm,
# docs/tasks.md); its own test is below.
TRADE_OFF_SEEDS = {"push": (0, 6), "press": (0, 6)}


@pytest.mark.parametrize("task", sorted(TRADE_OFF_SEEDS))
def test_naive_trades_harm_for_success_and_careful_does_not(task: str) -> None:
    """Issue 12, point 3, on a few episodes: the naive controller gains success and harm
    with the width; the careful one at the caps matches its success without its harm."""
    seed, n = TRADE_OFF_SEEDS[task]
    tight = evaluate_scripted(task, 0.0, n, seed, "naive")
    loose = evaluate_scripted(task, 1.0, n, seed, "naive")
    careful = evaluate_scripted(task, 1.0, n, seed, "careful")
    assert tight["success_rate"] <= loose["success_rate"], (tight, loose)
    assert tight["harm_per_episode"] < loose["harm_per_episode"], (tight, loose)
    assert careful["success_rate"] >= loose["success_rate"], (careful, loose)
    assert careful["harm_per_episode"] <= 0.1 * loose["harm_per_episode"], (careful, loose)
    # harm, not speed: the careful controller is not slower than the naive one on average
    assert careful["mean_speed"] >= 0.8 * loose["mean_speed"], (careful, loose)


# Reach episodes where the naive controller touches the box at width 1, each with the map
# off toward the arm: the hand beside the box (25), the forearm over its top (86, 95), the
# forearm over the top edge beside a low goal (1753, 1787), the wrist over the front top edge
# in front of it (1667, 1692, 1948).
REACH_NAIVE_HARM_SEEDS = (25, 86, 95, 1667, 1692, 1753, 1787, 1948)


@pytest.mark.parametrize("seed", REACH_NAIVE_HARM_SEEDS)
def test_careful_reach_keeps_clear_where_the_naive_one_touches(seed: int) -> None:
    """Before it aimed inside the success ball, the careful controller touched in the first
    three; before it tilted that aim up and guarded its wrist and forearm (arm_guard), in the
    other five. (Its success is checked over many episodes, above.)"""
    naive = evaluate_scripted("reach", 1.0, 1, seed, "naive")
    careful = evaluate_scripted("reach", 1.0, 1, seed, "careful")
    assert naive["harm_per_episode"] > 0, naive
    assert careful["harm_per_episode"] == 0, careful


BOX = (np.array([0.5, 0.0, 0.15]), np.array([0.05, 0.15, 0.15]))
D = 0.04 / math.sqrt(2)  # an offset of 0.04 m tilted 45 degrees up


@pytest.mark.parametrize(
    ("goal", "moved"),
    [
        ((0.5, 0.30, 0.1), (0.5, 0.30 + D, 0.1 + D)),  # beside (+y): farther out in y, and up
        ((0.5, -0.30, 0.1), (0.5, -0.30 - D, 0.1 + D)),  # beside (-y)
        ((0.5, 0.0, 0.45), (0.5, 0.0, 0.49)),  # above: higher
        ((0.62, 0.0, 0.2), (0.66, 0.0, 0.2)),  # behind (+x): farther behind
        ((0.32, 0.0, 0.1), (0.32 - D, 0.0, 0.1 + D)),  # in front, on the robot's side: back and up
        ((0.5, 0.0, 0.75), (0.5, 0.0, 0.75)),  # 0.3 m over the top: not near, aimed at directly
    ],
)
def test_reach_aim_moves_a_goal_near_a_box_away_from_it(
    goal: tuple[float, ...], moved: tuple[float, ...]
) -> None:
    aim = reach_aim(np.array(goal), [BOX], 0.04)
    np.testing.assert_allclose(aim, moved, atol=1e-12)
    assert np.array_equal(reach_aim(np.array(goal), [BOX], 0.0), np.array(goal))


def test_arm_guard_keeps_every_watched_link_from_closing_on_the_box(make_task: MakeTask) -> None:
    env = make_task("reach")
    env.reset(seed=3)
    sites = guarded_sites(env)
    names = {mujoco.mj_id2name(env.model, mujoco.mjtObj.mjOBJ_SITE, s) for s in sites}
    assert names == {
        "site_link7",
        "site_link6",
        "site_link5_wrist",
        "site_link5",
        "site_link5_elbow",
    }
    toward = np.array([0.8, 0.0, -0.4])  # at the box and down: every link closes on it
    assert np.array_equal(arm_guard(env, toward, -1.0, sites), toward)  # no link watched
    margin = 0.5  # every link is inside this margin: each must move away at its rate
    v = arm_guard(env, toward, margin, sites)
    assert not np.allclose(v, toward)
    M, _ = env.action_map()
    ((centre, half),) = env.keepout_boxes()
    for s in sites:
        gap, normal = _box_gap(
            env.data.site_xpos[s], float(env.model.site_size[s, 0]), centre, half
        )
        rate = normal @ env.physics.site_jacobian(s) @ M @ v
        assert rate >= -REACH_GUARD_GAIN * (gap - margin) - 1e-6, (s, rate, gap)


def test_evaluation_reports_every_cost_term() -> None:
    data = load_task("press").model_dump(mode="json")
    data["robot"]["max_episode_steps"] = 40  # runs out of time at the start bound
    r = evaluate_scripted(parse_model(data, TaskSpec, "press"), width=0.0, episodes=1, seed=0)
    assert set(r) == {
        "success_rate",
        "harm_per_episode",
        "harm_episodes",
        "cost_rate",
        "mean_steps_to_success",
        "intervention_rate",
        "mean_speed",
        "cost/impact",
        "cost/obstacle",
        "cost/joint_limit",
        "cost/task",
    }
    assert r["success_rate"] == 0.0 and math.isnan(r["mean_steps_to_success"])
    assert r["intervention_rate"] > 0.5  # the start bounds hold the saturated controller back
    with pytest.raises(ValueError, match="episodes"):
        evaluate_scripted("press", width=0.0, episodes=0)
    with pytest.raises(ValueError, match="controller"):
        evaluate_scripted("press", width=0.0, episodes=1, controller="reckless")


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
    assert set(NAIVE_POLICIES) == set(POLICIES)
    for policy in (push_policy, press_policy, NAIVE_POLICIES["push"], NAIVE_POLICIES["press"]):
        with pytest.raises(TypeError, match="need the"):
            policy(reach)


def test_entry_point_prints_both_tables_and_writes_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_json = tmp_path / "press.json"
    assert main(["press", "--episodes", "1", "--widths", "1", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "naive controller" in out and "careful controller" in out
    assert "| width | success | harm / episode |" in out
    assert "\n| 1 | 100% |" in out
    data = json.loads(out_json.read_text())
    assert [r["width"] for r in data["careful"]] == [1.0] and data["episodes"] == 1
    with pytest.raises(SystemExit) as err:
        main(["press", "--episodes", "0"])
    assert err.value.code == 2


def _reach_with_scheduler(**update: object) -> TaskSpec:
    spec = load_task("reach")
    sched = type(spec.scheduler).model_validate({**spec.scheduler.model_dump(), **update})
    return spec.model_copy(update={"scheduler": sched})


def test_scheduled_feeds_each_evaluation_to_the_tasks_scheduler() -> None:
    from safebot.scripted import scheduled

    # thresholds the careful controller passes: every evaluation widens by one step (a
    # failure spike would need all 3 episodes failed; the seeds are fixed)
    easy = _reach_with_scheduler(
        success_threshold=0.01, spike_failure_rate=1.0, max_harm=1e5, spike_harm=1e6, patience=1
    )
    rows = scheduled(easy, evaluations=3, episodes=3, seed=0)
    step = easy.scheduler.widen_step
    assert [r["evaluation"] for r in rows] == [0, 1, 2]
    assert [r["width"] for r in rows] == pytest.approx([0.0, step, 2 * step])
    assert all(r["next_width"] == pytest.approx(r["width"] + step) for r in rows)
    assert all(r["reason"].startswith("widen") for r in rows), rows
    # thresholds nobody passes: the width never moves
    hard = _reach_with_scheduler(success_threshold=1.0, max_harm=0.0, patience=3)
    rows = scheduled(hard, evaluations=2, episodes=1, seed=0, controller="naive")
    assert [r["next_width"] for r in rows] == [0.0, 0.0]
    with pytest.raises(ValueError, match="controller must be one of"):
        scheduled(easy, evaluations=1, controller="reckless")


def test_entry_point_schedule_prints_the_width_per_evaluation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_json = tmp_path / "sched.json"
    args = ["reach", "--schedule", "2", "--episodes", "1", "--json", str(out_json)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "careful controller under the task's [scheduler]" in out
    assert "| evaluation | width | success | harm / episode | scheduler |" in out
    data = json.loads(out_json.read_text())
    assert [r["evaluation"] for r in data["careful"]] == [0, 1]
    assert data["command"].startswith("python -m safebot.scripted reach --schedule 2")
