"""The UR5e: the URDF (generated from the DH table, loads in PyBullet, kinematics match DH) and
the MuJoCo model compiled from it (ee_site is the stub's tool0, servos, scene, build script)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import mujoco
import numpy as np
import pybullet as pb
import pytest

from safebot import resources

URDF = resources.resolve("assets", "ur5e/ur5e.urdf")


@pytest.fixture(scope="module")
def make_urdf():  # type: ignore[no-untyped-def]
    path = Path(URDF).with_name("make_urdf.py")
    spec = importlib.util.spec_from_file_location("ur5e_make_urdf", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def robot():  # type: ignore[no-untyped-def]
    cid = pb.connect(pb.DIRECT)
    body = pb.loadURDF(
        str(URDF), useFixedBase=True, flags=pb.URDF_USE_INERTIA_FROM_FILE, physicsClientId=cid
    )
    yield cid, body
    pb.disconnect(physicsClientId=cid)


def test_checked_in_urdf_is_what_the_generator_writes(make_urdf) -> None:  # type: ignore[no-untyped-def]
    assert URDF.read_text(encoding="utf-8") == make_urdf.build()


def test_joints_limits_and_masses(robot, make_urdf) -> None:  # type: ignore[no-untyped-def]
    cid, body = robot
    infos = [
        pb.getJointInfo(body, j, physicsClientId=cid)
        for j in range(pb.getNumJoints(body, physicsClientId=cid))
    ]
    revolute = [i for i in infos if i[2] == pb.JOINT_REVOLUTE]
    assert [i[1].decode() for i in revolute] == make_urdf.NAMES
    assert [i[10] for i in revolute] == [150.0, 150.0, 150.0, 28.0, 28.0, 28.0]
    assert all(i[11] == pytest.approx(np.pi, abs=1e-5) for i in revolute)
    assert revolute[2][8] == pytest.approx(-np.pi, abs=1e-5) and revolute[0][9] == pytest.approx(
        2 * np.pi, abs=1e-5
    )
    masses = [pb.getDynamicsInfo(body, j, physicsClientId=cid)[0] for j in range(6)]
    np.testing.assert_allclose(masses, make_urdf.MASS)
    assert infos[-1][12].decode() == "tool0"


def test_tool_pose_matches_dh_forward_kinematics(robot, make_urdf) -> None:  # type: ignore[no-untyped-def]
    cid, body = robot
    rng = np.random.default_rng(0)
    for _ in range(25):
        q = rng.uniform(-np.pi, np.pi, 6)
        for j in range(6):
            pb.resetJointState(body, j, q[j], physicsClientId=cid)
        pos, orn = pb.getLinkState(body, 6, computeForwardKinematics=True, physicsClientId=cid)[4:6]
        t = np.asarray(make_urdf.dh_forward(list(q)))
        np.testing.assert_allclose(pos, t[:3, 3], atol=2e-6)
        np.testing.assert_allclose(
            np.reshape(pb.getMatrixFromQuaternion(orn), (3, 3)), t[:3, :3], atol=2e-6
        )


def test_zero_pose_reach_is_the_published_arm_length(make_urdf) -> None:  # type: ignore[no-untyped-def]
    t = np.asarray(make_urdf.dh_forward([0.0] * 6))
    # stretched out: x = a2 + a3, y = -(d4 + d6), z = d1 - d5
    np.testing.assert_allclose(
        t[:3, 3], [-0.425 - 0.3922, -(0.1333 + 0.0996), 0.1625 - 0.0997], atol=1e-9
    )


# ----------------------------------------------------------------------------- the MuJoCo model

REPO = Path(__file__).resolve().parents[2]
UR_XML = resources.resolve("assets", "ur5e/ur5e.xml")
UR_SCENE = resources.resolve("assets", "ur5e/scene_reach.xml")
PANDA_SCENE = resources.resolve("assets", "panda/scene_reach.xml")
JOINTS = [
    "shoulder_pan_joint",
    "shoulder_lift_joint",
    "elbow_joint",
    "wrist_1_joint",
    "wrist_2_joint",
    "wrist_3_joint",
]


@pytest.fixture(scope="module")
def ur() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(UR_XML))


def test_mujoco_ee_site_is_the_stubs_tool0(robot, ur: mujoco.MjModel) -> None:  # type: ignore[no-untyped-def]
    """ee_site == PyBullet's tool0 (the stub's ee_pos), and every link origin agrees."""
    cid, body = robot
    data = mujoco.MjData(ur)
    site = ur.site("ee_site").id
    names = {
        pb.getJointInfo(body, j, physicsClientId=cid)[12].decode(): j
        for j in range(pb.getNumJoints(body, physicsClientId=cid))
    }
    rng = np.random.default_rng(7)
    lo, hi = ur.jnt_range[:6].T
    for _ in range(200):
        q = rng.uniform(lo, hi)
        for j in range(6):
            pb.resetJointState(body, j, q[j], physicsClientId=cid)
        data.qpos[:6] = q
        mujoco.mj_kinematics(ur, data)
        pos, orn = pb.getLinkState(
            body, names["tool0"], computeForwardKinematics=True, physicsClientId=cid
        )[4:6]
        np.testing.assert_allclose(data.site_xpos[site], pos, rtol=0, atol=1e-6)
        rot = np.reshape(pb.getMatrixFromQuaternion(orn), (3, 3))
        np.testing.assert_allclose(data.site_xmat[site].reshape(3, 3), rot, atol=1e-6)
        for link in ("shoulder_link", "upper_arm_link", "forearm_link", "wrist_3_link"):
            frame = pb.getLinkState(
                body, names[link], computeForwardKinematics=True, physicsClientId=cid
            )[4]
            np.testing.assert_allclose(
                data.xpos[ur.body(f"ur5e_{link}").id], frame, atol=1e-6, err_msg=link
            )


def test_joints_limits_and_velocity_servos(ur: mujoco.MjModel) -> None:
    # typed in from UR's published limits (robot_limits.md), not imported from the build script
    assert [ur.joint(j).name for j in range(ur.njnt)] == JOINTS
    limit = np.array([2 * np.pi, 2 * np.pi, np.pi, 2 * np.pi, 2 * np.pi, 2 * np.pi])
    np.testing.assert_allclose(ur.jnt_range, np.c_[-limit, limit], atol=1e-9)
    assert ur.nu == 6
    for i, joint in enumerate(JOINTS):
        act = ur.actuator(f"act_{joint}")
        assert ur.actuator_trnid[act.id, 0] == ur.joint(joint).id
        assert ur.actuator_biastype[act.id] == mujoco.mjtBias.mjBIAS_AFFINE  # velocity servo
        np.testing.assert_allclose(act.ctrlrange, [-np.pi, np.pi], atol=1e-9)
        tau = 150.0 if i < 3 else 28.0
        np.testing.assert_allclose(act.forcerange, [-tau, tau])
    arm = [b for b in range(ur.nbody) if ur.body(b).name.startswith("ur5e_")]
    assert len(arm) == 7 and all(ur.body_gravcomp[b] == 1 for b in arm[1:])


def test_keepout_sites_sit_on_the_links(ur: mujoco.MjModel) -> None:
    for name in ("ee_site", "site_wrist3", "site_wrist2", "site_wrist1", "site_forearm"):
        s = ur.site(name)
        assert ur.body(ur.site_bodyid[s.id]).name.startswith("ur5e_")
        assert 0.03 <= ur.site_size[s.id, 0] <= 0.06, name  # a link's cross-section


def test_reach_scene_has_the_panda_scenes_obstacle_and_table() -> None:
    ur, panda = (mujoco.MjModel.from_xml_path(str(p)) for p in (UR_SCENE, PANDA_SCENE))
    for geom in ("obstacle", "table_top", "pedestal", "floor"):
        np.testing.assert_array_equal(ur.geom(geom).pos, panda.geom(geom).pos, err_msg=geom)
        np.testing.assert_array_equal(ur.geom(geom).size, panda.geom(geom).size, err_msg=geom)
    np.testing.assert_array_equal(ur.body("ur5e_base_link").pos, [0.0, 0.0, 0.0])  # the stub's base


def test_home_is_the_profiles_over_the_table_and_collision_free() -> None:
    from safebot.deploy.profiles import load_profile

    home = load_profile("ur5e").plant.home
    model = mujoco.MjModel.from_xml_path(str(UR_SCENE))
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    np.testing.assert_allclose(data.qpos, home)
    mujoco.mj_forward(model, data)
    assert data.ncon == 0
    site = model.site("ee_site").id
    # near the Panda's ready-pose ee_site, the flange pointing down
    np.testing.assert_allclose(data.site_xpos[site], [0.306, 0.0, 0.473], atol=0.01)
    np.testing.assert_allclose(data.site_xmat[site].reshape(3, 3)[:, 2], [0, 0, -1], atol=1e-3)


def test_velocity_servo_tracks_a_step_and_holds() -> None:
    model = mujoco.MjModel.from_xml_path(str(UR_SCENE))
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    data.ctrl[0] = 1.0
    for _ in range(25):  # 50 ms
        mujoco.mj_step(model, data)
    assert abs(data.qvel[0] - 1.0) < 0.05 and np.abs(data.qvel[1:]).max() < 0.05
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    for _ in range(500):
        mujoco.mj_step(model, data)
    np.testing.assert_allclose(data.qpos, model.key("home").qpos, atol=1e-6)


def test_build_script_reproduces_the_committed_model() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_ur5e.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
