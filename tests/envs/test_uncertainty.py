"""Perception error (docs/design.md, rule 6): the shield's rows see the estimate, physics the truth."""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np
import pytest

from safebot.envs import ArmTaskEnv, PushEnv
from safebot.envs import make as make_env
from safebot.shield import Shield
from safebot.spec import SpecError, TaskSpec, load_task, parse_model


def _spec(task: str, **uncertainty: Any) -> TaskSpec:
    data = load_task(task).model_dump(mode="json")
    data["uncertainty"] = uncertainty
    return parse_model(data, TaskSpec, task)


def _obstacle(env: ArmTaskEnv) -> int:
    return mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_GEOM, "obstacle")


def test_rows_see_the_estimate_and_physics_the_truth() -> None:
    env = make_env(_spec("reach", keepout_sigma=0.012))
    g = _obstacle(env)
    true_pos = env.model.geom_pos[g].copy()
    errors = []
    for seed in (3, 4):
        env.reset(seed=seed)
        # the true geom never moves; the map the shield reads is offset from it
        np.testing.assert_array_equal(env.model.geom_pos[g], true_pos)
        np.testing.assert_allclose(env.data.geom_xpos[g], true_pos)
        believed = env.kinematics.boxes[0]
        np.testing.assert_allclose(believed[:3], true_pos + env.keepout_error[0])
        np.testing.assert_allclose(believed[3:], env.model.geom_size[g])
        assert np.all(np.abs(env.keepout_error) <= 3.0 * 0.012 + 1e-12)
        errors.append(env.keepout_error.copy())
    assert not np.allclose(errors[0], errors[1])
    assert np.linalg.norm(errors[0]) > 1e-4
    env.reset(seed=3)  # seeded: the same episode seed draws the same error
    np.testing.assert_array_equal(env.keepout_error, errors[0])


def test_surfaces_move_in_truth_and_objects_are_randomised() -> None:
    env = make_env(
        _spec("push", surface_sigma=0.01, object_mass=[0.05, 0.3], object_friction=[0.3, 0.8])
    )
    assert isinstance(env, PushEnv)
    table = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_BODY, "table")
    block = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_BODY, "block")
    geom = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_GEOM, "block_geom")
    masses = set()
    for seed in range(5):
        env.reset(seed=seed)
        assert env.model.body_pos[table][2] == pytest.approx(env.surface_error)
        assert abs(env.surface_error) <= 0.03 + 1e-12 and env.surface_error != 0.0
        # the block rests on the true table
        assert env._achieved_goal()[2] == pytest.approx(0.025 + env.surface_error, abs=2e-3)
        assert 0.05 <= env.model.body_mass[block] <= 0.3
        assert 0.3 <= env.model.geom_friction[geom, 0] <= 0.8
        masses.add(float(env.model.body_mass[block]))
    assert len(masses) == 5


def test_no_uncertainty_unless_declared() -> None:
    spec = _spec("reach")  # an empty [uncertainty] table
    env = make_env(spec)
    g = _obstacle(env)
    env.reset(seed=0)
    assert not np.any(env.keepout_error) and env.surface_error == 0.0
    np.testing.assert_allclose(env.kinematics.boxes[0, :3], env.data.geom_xpos[g])
    # nothing is drawn: the episode is the one it was before [uncertainty] existed
    a = env.reset(seed=7)[0]["desired_goal"]
    b = make_env(_spec("reach")).reset(seed=7)[0]["desired_goal"]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"keepout_sigma": -0.01}, "keepout_sigma"),
        ({"object_mass": [0.3, 0.1]}, "object_mass"),
        ({"object_friction": [0.0, 0.5]}, "object_friction"),
        ({"surface_sigma": float("nan")}, "surface_sigma"),
        ({"keepout_sigma": 0.05}, "3 x uncertainty.keepout_sigma"),  # start 0.08 < 0.15
    ],
)
def test_bad_uncertainty_is_a_spec_error(table: dict[str, Any], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        _spec("reach", **table)


def test_object_ranges_need_an_object() -> None:
    with pytest.raises(SpecError, match="object_mass"):
        make_env(_spec("reach", object_mass=[0.1, 0.2]))


def _closer_obstacle_seed(env: ArmTaskEnv) -> int:
    """A seed whose map puts the obstacle's near (-x) face >= 2 sigma farther than it is."""
    for seed in range(500):
        env.reset(seed=seed)
        if env.keepout_error[0, 0] > 0.025:
            return seed
    raise AssertionError("no seed with a large enough map error")


def _approach(width: float, seed: int) -> tuple[float, float]:
    """Hand at the obstacle's height, then straight at it along +x through the shield.

    Returns the most obstacle contact seen and the hand's closest approach (m) to the
    true face."""
    env = Shield(make_env(_spec("reach", keepout_sigma=0.012)))
    env.set_width(width)
    env.reset(seed=seed)
    inner = env.unwrapped
    assert isinstance(inner, ArmTaskEnv)
    g = _obstacle(inner)
    face = inner.data.geom_xpos[g][0] - inner.model.geom_size[g][0]
    start = np.array([face - 0.12, 0.0, 0.15])
    for _ in range(40):
        v = 4.0 * (start - inner.physics.ee_pos())
        env.step(np.clip(v / inner.action_scale, -1, 1))
    contact, closest = 0.0, np.inf
    for _ in range(40):
        _, _, _, _, info = env.step(np.array([0.3, 0.0, 0.0]) / inner.action_scale)
        contact = max(contact, info["cost/obstacle"])
        closest = min(closest, face - inner.physics.ee_pos()[0])
    return contact, closest


def test_cap_margin_touches_a_closer_obstacle_the_start_margin_does_not() -> None:
    seed = _closer_obstacle_seed(make_env(_spec("reach", keepout_sigma=0.012)))
    cap_contact, cap_gap = _approach(1.0, seed)
    start_contact, start_gap = _approach(0.0, seed)
    assert cap_contact == 1.0, cap_gap
    assert start_contact == 0.0 and start_gap > 0.03, start_gap


# -- a perception error that changes at run time (the reversibility experiment) --------


def test_scale_one_draws_what_the_spec_alone_draws() -> None:
    from gymnasium.utils import seeding

    env = make_env("reach")  # the shipped keepout_sigma = 0.015
    env.set_perception_scale(1.0)
    env.reset(seed=11)
    # the stream the reset draws from, replayed by hand: home noise, then the map error
    rng, _ = seeding.np_random(11)
    rng.uniform(-env.task.robot.home_noise, env.task.robot.home_noise, env.physics.n)
    cap = env.task.uncertainty.max_sigmas
    want = 0.015 * np.clip(rng.standard_normal(env.keepout_error.shape), -cap, cap)
    np.testing.assert_array_equal(env.keepout_error, want)
    untouched = make_env("reach")
    untouched.reset(seed=11)
    np.testing.assert_array_equal(untouched.keepout_error, env.keepout_error)
    np.testing.assert_array_equal(untouched.goal, env.goal)


def test_the_scale_multiplies_the_sigmas_from_the_next_episode_on() -> None:
    spec = _spec("push", keepout_sigma=0.01, surface_sigma=0.005, object_mass=[0.05, 0.3])
    plain, scaled = make_env(spec), make_env(spec)
    plain.reset(seed=5)
    scaled.reset(seed=5)
    drawn = scaled.keepout_error.copy()
    scaled.set_perception_scale(2.0)
    np.testing.assert_array_equal(scaled.keepout_error, drawn)  # this episode keeps its draw
    for seed in (5, 6):
        plain.reset(seed=seed)
        scaled.reset(seed=seed)
        np.testing.assert_allclose(scaled.keepout_error, 2.0 * plain.keepout_error, rtol=1e-15)
        assert scaled.surface_error == pytest.approx(2.0 * plain.surface_error, rel=1e-15)
        assert plain.surface_error != 0.0
        # the rest of the stream (mass, goal) is untouched: same number of draws (the goal's
        # height follows the table's, which the scale moved)
        np.testing.assert_array_equal(scaled.model.body_mass, plain.model.body_mass)
        np.testing.assert_array_equal(scaled.goal[:2], plain.goal[:2])


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -0.5])
def test_a_bad_perception_scale_is_refused(scale: float) -> None:
    env = make_env("reach")
    with pytest.raises(ValueError, match=f"perception scale .* got {scale}"):
        env.set_perception_scale(scale)
    assert env.perception_scale == 1.0
