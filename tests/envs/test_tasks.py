"""The Reach, Push and Press tasks: API checks, determinism, rewards, physics costs, solvability."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import safebot.envs
from safebot.envs import COST_TERMS, TASK_IDS, ArmTaskEnv, PressEnv, PushEnv, ReachEnv
from safebot.envs.base import CONTACT_CLASSES
from safebot.resources import resolve
from safebot.scripted import _segment_hits_box
from safebot.shield import Shield
from safebot.spec import TaskSpec, load_task

MakeTask = Callable[..., ArmTaskEnv]
TASKS = ("reach", "reach_joint", "push", "press")
REACH_JOINT_TOML = str(resolve("tasks", "reach_joint"))


def _checked(fn: Callable[[], None]) -> None:
    """Run a checker with warnings as errors, except the one about unbounded observations."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # goal-conditioned observations are unbounded, as in gymnasium-robotics' Fetch tasks
        warnings.filterwarnings("ignore", message=r".*Box observation space .*infinity")
        fn()


# --------------------------------------------------------------------------- API checks


def test_registered_ids() -> None:
    assert set(TASK_IDS) == {"safebot/Reach-v0", "safebot/Push-v0", "safebot/Press-v0"}
    expected = {"safebot/Reach-v0": ReachEnv, "safebot/Push-v0": PushEnv}
    expected["safebot/Press-v0"] = PressEnv
    for env_id, cls in expected.items():
        assert env_id in gym.registry
        env = gym.make(env_id)
        assert type(env.unwrapped) is cls
        env.close()


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("safebot/Reach-v0", {}),
        ("safebot/Push-v0", {}),
        ("safebot/Press-v0", {}),
        ("safebot/Reach-v0", {"task": REACH_JOINT_TOML}),
    ],
    ids=["reach", "push", "press", "reach_joint.toml"],
)
def test_gymnasium_and_sb3_env_checkers(env_id: str, kwargs: dict[str, Any]) -> None:
    env = gym.make(env_id, **kwargs)
    if kwargs:
        assert env.unwrapped.action_mode == "joint_velocity"  # type: ignore[attr-defined]
        assert env.action_space.shape == (7,)
    # gymnasium 1.x wrappers no longer forward attributes such as compute_reward: check the env
    _checked(lambda: gym_check_env(env.unwrapped))
    _checked(lambda: sb3_check_env(env.unwrapped, warn=True))
    env.close()


@pytest.mark.parametrize("task", TASKS)
def test_spaces_and_goal_conditioned_observation(make_task: MakeTask, task: str) -> None:
    env = make_task(task)
    n = 7 if env.action_mode == "joint_velocity" else 3
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (n,), np.float32)
    assert set(env.observation_space.spaces) == {"observation", "achieved_goal", "desired_goal"}
    obs, _ = env.reset(seed=3)
    assert obs in env.observation_space
    np.testing.assert_array_equal(obs["desired_goal"], env.goal)
    for _ in range(3):
        obs, *_ = env.step(env.action_space.sample())
        assert obs in env.observation_space


def _with_observation(task: str, observation: str) -> TaskSpec:
    spec = load_task(task)
    robot = spec.robot.model_copy(update={"observation": observation})
    return TaskSpec.model_validate({**spec.model_dump(), "robot": robot.model_dump()})


@pytest.mark.parametrize(
    ("task", "observation", "size"),
    [
        ("reach", "cartesian", 6),  # ee_pos, ee_vel: what tasks/reach.toml ships
        ("reach", "full", 20),  # q, dq (7 each), ee_pos, ee_vel
        ("reach_joint", "full", 20),
        ("push", "full", 29),  # + block position, block - ee, block velocity
        ("push", "cartesian", 15),
    ],
)
def test_observation_size_by_mode(
    make_task: MakeTask, task: str, observation: str, size: int
) -> None:
    spec = load_task(task)
    if spec.robot.observation != observation:
        if observation == "cartesian" and spec.robot.action_mode != "ee_velocity":
            pytest.skip("cartesian needs ee_velocity")
        spec = _with_observation(task, observation)
    env = make_task(spec)
    assert env.observation_space["observation"].shape == (size,)
    obs, _ = env.reset(seed=0)
    assert obs["observation"].shape == (size,)


def test_cartesian_observation_is_the_end_effector_and_task_state(make_task: MakeTask) -> None:
    assert load_task("reach").robot.observation == "cartesian"
    cart, full = make_task("reach"), make_task(_with_observation("reach", "full"))
    rng = np.random.default_rng(0)
    for env in (cart, full):
        env.reset(seed=4)
    for _ in range(5):
        a = rng.uniform(-1, 1, 3)
        o_cart, *_ = cart.step(a)
        o_full, *_ = full.step(a)
        # same physics, same goal: the cartesian observation is the full one without q, dq
        np.testing.assert_array_equal(o_cart["observation"], o_full["observation"][14:])
        np.testing.assert_array_equal(o_cart["observation"][:3], cart.physics.ee_pos())
        np.testing.assert_array_equal(o_cart["desired_goal"], o_full["desired_goal"])
    assert np.abs(o_cart["observation"][3:6]).max() > 0  # the ee is moving: ee_vel is in


@pytest.mark.parametrize("task", ["reach", "push"])
def test_goals_are_sampled_in_the_goal_region(make_task: MakeTask, task: str) -> None:
    env = make_task(task)
    g = env.task.goal
    for seed in range(20):
        env.reset(seed=seed)
        goal = env.goal
        assert np.all(goal[:2] >= np.asarray(g.low)[:2]) and np.all(
            goal[:2] <= np.asarray(g.high)[:2]
        )
    if task == "reach":  # outside the keep-out box by the start margin
        margin = env.task.limits.keepout.start  # type: ignore[union-attr]
        for seed in range(50):
            env.reset(seed=seed)
            # outside the box the shield believes in this episode ([uncertainty])
            (centre, half), *_ = env.keepout_boxes()
            assert np.any(np.abs(env.goal - centre) > half + margin)


@pytest.mark.parametrize("task", TASKS)
def test_episode_truncates_at_max_steps(make_task: MakeTask, task: str) -> None:
    env = make_task(task)
    env.reset(seed=0)
    zero = np.zeros(env.action_space.shape)
    steps = env.task.robot.max_episode_steps
    for _ in range(steps - 1):
        _, _, terminated, truncated, _ = env.step(zero)
        assert not terminated and not truncated
    _, _, terminated, truncated, _ = env.step(zero)
    assert truncated and not terminated


# --------------------------------------------------------------------------- determinism


def _rollout(env: ArmTaskEnv, seed: int, steps: int = 30) -> list[Any]:
    obs, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    out: list[Any] = [obs, info]
    for _ in range(steps):
        out.append(env.step(env.action_space.sample()))
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return bool(a == b)


@pytest.mark.parametrize("task", TASKS)
def test_seeded_determinism(make_task: MakeTask, task: str) -> None:
    env_a, env_b = make_task(task), make_task(task)
    first = _rollout(env_a, seed=7)
    assert _same(first, _rollout(env_b, seed=7))  # a second instance
    _rollout(env_a, seed=123)
    assert _same(first, _rollout(env_a, seed=7))  # the same instance, after other episodes
    other = _rollout(env_b, seed=8)
    assert not _same(first[0], other[0])  # a different seed starts elsewhere
    assert not _same(first, other)


# --------------------------------------------------------------------------- rewards


def _dense(spec: TaskSpec) -> TaskSpec:
    data = copy.deepcopy(spec.model_dump())
    data["reward"]["type"] = "dense"
    return TaskSpec.model_validate(data).model_copy(update={"source": spec.source})


def _goal_batch(env: ArmTaskEnv, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Achieved/desired pairs from a rollout, half of them perturbed copies of the goal."""
    achieved, desired = [], []
    obs, _ = env.reset(seed=0)
    for _ in range(16):
        obs, *_ = env.step(env.action_space.sample())
        achieved.append(obs["achieved_goal"])
        desired.append(obs["desired_goal"])
    for _ in range(16):
        goal = env.goal
        achieved.append(goal + rng.normal(0.0, 0.01, goal.shape))
        desired.append(goal)
    return np.array(achieved), np.array(desired)


@pytest.mark.parametrize("reward", ["sparse", "dense"])
@pytest.mark.parametrize("task", TASKS)
def test_compute_reward_is_vectorised(make_task: MakeTask, task: str, reward: str) -> None:
    spec = load_task(task)
    env = make_task(_dense(spec) if reward == "dense" else spec)
    assert env.task.reward.type == reward
    env.action_space.seed(0)
    achieved, desired = _goal_batch(env, np.random.default_rng(0))
    B = len(achieved)
    infos = np.array([{} for _ in range(B)])
    batch = env.compute_reward(achieved, desired, infos)
    assert np.shape(batch) == (B,)
    single = [float(env.compute_reward(achieved[i], desired[i], infos[i])) for i in range(B)]
    np.testing.assert_array_equal(batch, single)
    # HER also calls it with extra leading axes
    assert np.shape(env.compute_reward(achieved[None], desired[None], infos[None])) == (1, B)
    if reward == "sparse":
        assert set(np.unique(batch)) == {-1.0, 0.0}  # the batch holds hits and misses
    else:
        assert np.all(batch <= 0.0) and len(np.unique(batch)) > B // 2
        if task != "press":
            np.testing.assert_allclose(batch, -np.linalg.norm(achieved - desired, axis=-1))


@pytest.mark.parametrize("task", TASKS)
def test_step_reward_is_compute_reward(make_task: MakeTask, task: str) -> None:
    env = make_task(task)
    env.reset(seed=1)
    for _ in range(5):
        obs, reward, _, _, info = env.step(env.action_space.sample())
        assert reward == env.compute_reward(obs["achieved_goal"], obs["desired_goal"], info)


# --------------------------------------------------------------------------- costs


@pytest.mark.parametrize("task", TASKS)
def test_info_has_costs_and_success(make_task: MakeTask, task: str) -> None:
    env = make_task(task)
    _, info = env.reset(seed=0)
    expected = {"cost", "is_success", *(f"cost/{t}" for t in COST_TERMS)}
    assert expected <= set(info)
    _, _, _, _, info = env.step(env.action_space.sample())
    assert expected | {"commanded_qvel"} <= set(info)
    assert set(COST_TERMS) == {"impact", "obstacle", "joint_limit", "task"}
    assert info["speed/ee"] >= 0.0 and {f"force/{k}" for k in CONTACT_CLASSES} <= set(info)
    for t in COST_TERMS:
        assert info[f"cost/{t}"] in (0.0, 1.0)
    assert info["cost"] == max(info[f"cost/{t}"] for t in COST_TERMS)
    assert isinstance(info["is_success"], bool)


@pytest.mark.parametrize("task", TASKS)
def test_resting_arm_has_zero_cost(make_task: MakeTask, task: str) -> None:
    env = make_task(task)
    env.reset(seed=0)
    for _ in range(25):
        _, _, _, _, info = env.step(np.zeros(env.action_space.shape))
        assert info["cost"] == 0.0, {k: v for k, v in info.items() if k.startswith("cost")}
    assert np.linalg.norm(env.physics.ee_vel()) < 0.01


def _ee_command(env: ArmTaskEnv, v: np.ndarray) -> np.ndarray:
    """Normalised action that commands the ee velocity ``v`` (m/s) in either action mode."""
    if env.action_mode == "joint_velocity":
        J = env.physics.ee_jacobian()
        v = J.T @ np.linalg.solve(J @ J.T + 0.05**2 * np.eye(3), v)
    return np.clip(v / env.action_scale, -1.0, 1.0)


@pytest.mark.parametrize("task", ["reach", "reach_joint"])
def test_driving_into_the_obstacle_costs(make_task: MakeTask, task: str) -> None:
    env = make_task(task)
    env.reset(seed=0)
    (centre, _), *_ = env.keepout_boxes()
    seen = []
    for _ in range(50):
        d = centre - env.physics.ee_pos()
        _, _, _, _, info = env.step(_ee_command(env, 0.3 * d / np.linalg.norm(d)))
        seen.append(info["cost/obstacle"])
        if info["cost/obstacle"]:
            break
    assert seen[-1] == 1.0 and info["cost"] == 1.0
    assert sum(seen[:5]) == 0.0  # not from the start: the arm had to get there


@pytest.mark.parametrize("task", TASKS)
def test_free_space_speed_at_the_caps_costs_nothing(make_task: MakeTask, task: str) -> None:
    """Rule 5: unshielded, the hand driven at the caps through free space is never harm."""
    env = make_task(task)
    env.reset(seed=0)
    # up, then sideways and back: clear of the table, the plate, the block and the obstacle
    moves = [np.array([0.0, 0.0, 1.0])] * 3 + [np.array([0.0, 1.0, 0.0])] * 4
    moves += [np.array([0.0, -1.0, 0.0])] * 4
    speeds = []
    for v in moves:
        _, _, _, _, info = env.step(_ee_command(env, 2.0 * v))
        assert info["cost"] == 0.0, {k: x for k, x in info.items() if k.startswith("cost")}
        speeds.append(info["speed/ee"])
    # the old speed cost (0.6 m/s) would have fired; speed stays a measurement
    assert max(speeds) > 0.6, speeds
    assert info["speed/ee"] == pytest.approx(float(np.linalg.norm(env.physics.ee_vel())))


@pytest.mark.parametrize("task", ["reach", "reach_joint"])
def test_hand_driven_into_the_table_at_speed_is_contact_harm(
    make_task: MakeTask, task: str
) -> None:
    env = make_task(task)
    env.reset(seed=0)
    costs, forces = [], []
    for _ in range(40):
        _, _, _, _, info = env.step(_ee_command(env, np.array([0.0, 0.0, -1.0])))
        costs.append(info["cost/impact"])
        forces.append(info["force/arm_table"])
    assert costs[0] == 0.0 and max(costs) == 1.0
    assert max(forces) > env.task.cost.arm_table_force


def test_joint_at_its_limit_costs(make_task: MakeTask) -> None:
    env = make_task("reach_joint")
    env.reset(seed=0)
    a = np.zeros(7)
    a[6] = 1.0  # joint 7 from 0.785 toward 2.8973 rad at 2.61 rad/s
    costs = []
    for _ in range(25):
        _, _, _, _, info = env.step(a)
        costs.append(info["cost/joint_limit"])
    assert costs[0] == 0.0 and costs[-1] == 1.0
    assert env.physics.qpos()[6] > env.q_high[6] - env.task.cost.joint_limit_tolerance - 1e-3


def test_hard_press_on_the_plate_is_task_harm(make_task: MakeTask) -> None:
    env = make_task("press")
    assert isinstance(env, PressEnv)
    env.reset(seed=0)
    plate = env.data.geom_xpos[env._plate()]
    for _ in range(40):  # over the plate first, clear of it
        ee = env.physics.ee_pos()
        target = np.array([plate[0], plate[1], env.plate_top() + 0.1])
        env.step(_ee_command(env, 4.0 * (target - ee)))
    harm = []
    for _ in range(40):
        _, _, _, _, info = env.step(_ee_command(env, np.array([0.0, 0.0, -0.5])))
        harm.append(info["cost/task"])
        if info["cost/task"]:
            break
    assert harm[-1] == 1.0 and harm[0] == 0.0
    assert info["force/arm_object"] > env.task.cost.plate_damage_force


# --------------------------------------------------------------------------- bad actions


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_action_raises_a_clear_value_error(make_task: MakeTask, bad: float) -> None:
    env = make_task("reach")
    env.reset(seed=0)
    a = np.zeros(3)
    a[1] = bad
    with pytest.raises(ValueError, match="NaN or inf") as exc:
        env.step(a)
    assert "Shield" in str(exc.value)  # says what to do instead


def test_wrong_action_shape_raises(make_task: MakeTask) -> None:
    env = make_task("reach")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(7,\), expected \(3,\)"):
        env.step(np.zeros(7))


# --------------------------------------------------------------------------- a scripted solution
# (its own simple controller; the slab test is shared with safebot.scripted)


def _reach_target(ee: np.ndarray, goal: np.ndarray, boxes: list[Any], clear: float = 0.06) -> Any:
    """Straight to the goal, or over the obstacle when the straight line would cross it."""
    for centre, half in boxes:
        lo, hi = centre - half - clear, centre + half + clear
        if _segment_hits_box(ee, goal, lo, hi):
            top = hi[2] + 0.02
            if ee[2] < top - 0.01:
                return np.array([ee[0], ee[1], top + 0.02])  # rise first
            return np.array([goal[0], goal[1], top])  # then over, above the goal
    return goal


def _scripted_reach(env: gym.Env[Any, Any], seeds: range) -> tuple[int, float]:
    """Proportional ee-velocity controller; returns (successes, cost rate)."""
    base = env.unwrapped
    assert isinstance(base, ArmTaskEnv)
    successes, cost, steps = 0, 0.0, 0
    for seed in seeds:
        env.reset(seed=seed)
        done = False
        while not done:
            ee = base.physics.ee_pos()
            v = 4.0 * (_reach_target(ee, base.goal, base.keepout_boxes()) - ee)
            v *= min(1.0, 0.5 / max(float(np.linalg.norm(v)), 1e-9))  # below the safe 0.6 m/s
            _, _, terminated, truncated, info = env.step(_ee_command(base, v))
            cost += info["cost"]
            steps += 1
            done = terminated or truncated
        successes += bool(info["is_success"])  # at the end of the episode, not in passing
    return successes, cost / steps


@pytest.mark.parametrize("task", ["reach", "reach_joint"])
def test_scripted_controller_solves_reach(make_task: MakeTask, task: str) -> None:
    env = Shield(make_task(task))
    env.set_width(1.0)
    successes, _ = _scripted_reach(env, range(10))
    assert successes >= 8


def test_make_accepts_name_path_and_spec(make_task: MakeTask) -> None:
    spec = load_task("reach_joint")
    for task in ("reach_joint", REACH_JOINT_TOML, spec):
        env = make_task(task)
        assert env.task == spec
        assert env.action_space.shape == (7,)
    assert safebot.envs.make is not None
