"""Physics accessors (safebot.envs.physics.ArmPhysics) against MuJoCo and published data."""

from __future__ import annotations

from collections.abc import Callable

import mujoco
import numpy as np
import pytest

from safebot.envs import ArmTaskEnv

# Franka Emika Panda, published limits (shared/reference/robot_limits.md), typed in here.
Q_MIN = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
Q_MAX = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])

MakeTask = Callable[..., ArmTaskEnv]


def _random_config(env: ArmTaskEnv, rng: np.random.Generator) -> np.ndarray:
    lo, hi = env.physics.joint_limits()
    return rng.uniform(lo + 0.2, hi - 0.2)


def _set_q(env: ArmTaskEnv, q: np.ndarray) -> None:
    env.data.qpos[env.physics.qpos_adr] = q
    mujoco.mj_kinematics(env.model, env.data)
    mujoco.mj_comPos(env.model, env.data)


def _site_rot(env: ArmTaskEnv) -> np.ndarray:
    return env.data.site_xmat[env.physics.ee_site_id].reshape(3, 3).copy()


@pytest.mark.parametrize("seed", range(5))
def test_ee_jacobian_matches_finite_differences(make_task: MakeTask, seed: int) -> None:
    env = make_task("reach")
    env.reset(seed=seed)
    phys = env.physics
    q0 = _random_config(env, np.random.default_rng(seed))
    _set_q(env, q0)
    J3 = phys.ee_jacobian()
    J6 = phys.ee_jacobian(rotation=True)
    assert J3.shape == (3, 7)
    assert J6.shape == (6, 7)
    np.testing.assert_array_equal(J6[:3], J3)
    h = 1e-6
    fd = np.zeros((6, 7))
    for j in range(7):
        dq = np.zeros(7)
        dq[j] = h
        _set_q(env, q0 + dq)
        p_plus, R_plus = phys.ee_pos(), _site_rot(env)
        _set_q(env, q0 - dq)
        p_minus, R_minus = phys.ee_pos(), _site_rot(env)
        fd[:3, j] = (p_plus - p_minus) / (2 * h)
        # R+ R-^T ~ I + [w]x * 2h: read the angular velocity off the skew part
        S = R_plus @ R_minus.T
        fd[3:, j] = np.array([S[2, 1] - S[1, 2], S[0, 2] - S[2, 0], S[1, 0] - S[0, 1]]) / (4 * h)
    np.testing.assert_allclose(J6, fd, atol=1e-6)
    # and the Jacobian is not trivially zero: every joint moves the end effector
    assert np.all(np.linalg.norm(J6, axis=0) > 0.05)


@pytest.mark.parametrize("seed", range(3))
def test_ee_vel_is_jacobian_times_arm_qvel(make_task: MakeTask, seed: int) -> None:
    env = make_task("push")
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    phys = env.physics
    _set_q(env, _random_config(env, rng))
    qd = rng.uniform(-1.0, 1.0, 7)
    env.data.qvel[:] = 0.0
    env.data.qvel[phys.dof_adr] = qd
    mujoco.mj_forward(env.model, env.data)
    np.testing.assert_allclose(phys.qvel(), qd)
    v = phys.ee_vel()
    np.testing.assert_allclose(v, phys.ee_jacobian() @ qd, atol=1e-12)
    # independently: MuJoCo's own site velocity (world frame, rotation first)
    res = np.zeros(6)
    mujoco.mj_objectVelocity(env.model, env.data, mujoco.mjtObj.mjOBJ_SITE, phys.ee_site_id, res, 0)
    np.testing.assert_allclose(v, res[3:], atol=1e-10)
    np.testing.assert_allclose(phys.ee_jacobian(rotation=True)[3:] @ qd, res[:3], atol=1e-10)
    assert np.linalg.norm(v) > 1e-3


def test_qpos_reads_the_arm_joints(make_task: MakeTask) -> None:
    env = make_task("push")  # the block's free joint shares qpos with the arm
    env.reset(seed=0)
    q = _random_config(env, np.random.default_rng(1))
    _set_q(env, q)
    np.testing.assert_array_equal(env.physics.qpos(), q)
    for i, name in enumerate(f"panda_joint{k}" for k in range(1, 8)):
        assert env.data.joint(name).qpos[0] == q[i]


@pytest.mark.parametrize("task", ["reach", "push", "press"])
def test_joint_limits_are_the_published_panda_limits(make_task: MakeTask, task: str) -> None:
    env = make_task(task)
    lo, hi = env.physics.joint_limits()
    np.testing.assert_array_equal(lo, Q_MIN)
    np.testing.assert_array_equal(hi, Q_MAX)


def test_block_resting_on_the_table_weighs_m_g(make_task: MakeTask) -> None:
    env = make_task("push")
    env.reset(seed=0)
    for _ in range(10):
        env.step(np.zeros(env.action_space.shape))
    block = [c for c in env.physics.contacts() if {c.geom1, c.geom2} == {"block_geom", "table_top"}]
    assert block, "the block does not touch the table"
    total = sum(c.force for c in block)
    # [uncertainty] object_mass draws the block's mass per episode: weigh the drawn one
    mass = float(env.model.body_mass[env.model.body("block").id])
    assert 0.05 <= mass <= 0.3
    assert total == pytest.approx(mass * 9.81, rel=0.2)
    for c in block:
        assert c.arm_side == 0
        assert np.linalg.norm(c.normal) == pytest.approx(1.0)
        # normal from geom1 toward geom2: up if the table is geom1
        up = 1.0 if c.geom1 == "table_top" else -1.0
        np.testing.assert_allclose(c.normal, [0.0, 0.0, up], atol=1e-6)
        # on the true table top: z = this episode's table height error (0 when believed)
        assert abs(c.pos[2] - env.surface_error) < 5e-3


def test_arm_contact_is_attributed_to_the_arm(make_task: MakeTask) -> None:
    # press straight down on the plate: the arm's contacts carry arm_side and a force
    env = make_task("press")
    env.reset(seed=0)
    down = np.array([0.0, 0.0, -0.3]) / env.action_scale
    arm_contacts = []
    for _ in range(60):
        env.step(down)
        arm_contacts = [c for c in env.physics.contacts() if c.arm_side]
        if arm_contacts and max(c.force for c in arm_contacts) > 1.0:
            break
    assert arm_contacts, "the arm never touched the plate"
    arm_max, any_max = env.physics.max_contact_force()
    assert arm_max == pytest.approx(max(c.force for c in arm_contacts))
    assert any_max >= arm_max
    for c in arm_contacts:
        arm_geom = c.geom1 if c.arm_side == 1 else c.geom2
        gid = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_GEOM, arm_geom)
        assert env.physics.arm_geom[gid]


def test_unknown_names_raise_key_error(make_task: MakeTask) -> None:
    env = make_task("reach")
    with pytest.raises(KeyError, match="no_such_site"):
        env.physics.site_id("no_such_site")
