"""The Franka Panda model and its task scenes (assets/panda/).

Limits are typed in here from the published Panda data rather than imported
from scripts/build_panda.py, so a wrong constant in the build script fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mujoco
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PANDA_DIR = REPO / "assets" / "panda"
PANDA_XML = PANDA_DIR / "panda.xml"
SCENES = sorted((REPO / "assets").glob("**/scene*.xml"))  # every robot's scenes
PANDA_SCENES = sorted(PANDA_DIR.glob("scene*.xml"))

ARM_JOINTS = [f"panda_joint{i}" for i in range(1, 8)]
# Franka Emika Panda, published limits (shared/reference/robot_limits.md).
Q_MIN = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
Q_MAX = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
DQ_MAX = np.array([2.175] * 4 + [2.61] * 3)
TAU_MAX = np.array([87.0] * 4 + [12.0] * 3)
READY = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])

# pybullet's panda.urdf: joint/link index i drives link i; the fixed link
# panda_grasptarget (index 11) is the frame that ee_site reproduces.
PYBULLET_EE_LINK = 11


@pytest.fixture(scope="module")
def panda() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(PANDA_XML))


@pytest.fixture(scope="module")
def scene() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(PANDA_DIR / "scene.xml"))


def test_expected_scenes_exist() -> None:
    names = {p.name for p in PANDA_SCENES}
    assert {"scene.xml", "scene_reach.xml", "scene_push.xml", "scene_press.xml"} <= names


def test_robot_file_has_no_keyframe(panda: mujoco.MjModel) -> None:
    # Keyframes live in the scenes: a robot-only key would not fit their qpos.
    assert panda.nkey == 0


@pytest.mark.parametrize("path", SCENES, ids=lambda p: str(p.relative_to(REPO)))
def test_scene_steps_one_second_without_warnings(path: Path) -> None:
    """menagerie's model_test: deterministic noisy controls, no warning, finite state."""
    model = mujoco.MjModel.from_xml_path(str(path))
    data = mujoco.MjData(model)
    assert model.opt.timestep == pytest.approx(0.002)
    assert model.opt.integrator == mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_KEY, "home") >= 0:
        mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    rng = np.random.default_rng(0)
    low, high = model.actuator_ctrlrange.T
    for _ in range(round(1.0 / model.opt.timestep)):
        data.ctrl[:] = rng.uniform(low, high)
        mujoco.mj_step(model, data)
    warnings = {
        w.name: data.warning[w].number
        for w in map(mujoco.mjtWarning, range(mujoco.mjtWarning.mjNWARNING))
    }
    assert not any(warnings.values()), warnings
    for field in ("qpos", "qvel", "qacc", "sensordata"):
        assert np.isfinite(getattr(data, field)).all(), field


def test_published_joint_limits(panda: mujoco.MjModel) -> None:
    for i, name in enumerate(ARM_JOINTS):
        joint = panda.joint(name)
        assert panda.jnt_limited[joint.id], name
        np.testing.assert_allclose(joint.range, [Q_MIN[i], Q_MAX[i]], atol=1e-12, err_msg=name)


def test_names_match_the_urdf(panda: mujoco.MjModel) -> None:
    bodies = {panda.body(i).name for i in range(panda.nbody)}
    links = {f"panda_link{i}" for i in range(8)} | {"panda_hand"}
    assert links | {"panda_leftfinger", "panda_rightfinger"} <= bodies
    joints = [panda.joint(i).name for i in range(panda.njnt)]
    assert joints == [*ARM_JOINTS, "panda_finger_joint1", "panda_finger_joint2"]


def test_arm_bodies_are_gravity_compensated(panda: mujoco.MjModel) -> None:
    moving = [b for b in range(panda.nbody) if panda.body_weldid[b] != 0]
    assert len(moving) == 10  # link1..7, hand, two fingers
    assert all(panda.body_gravcomp[b] == 1.0 for b in moving)


def test_velocity_servos(panda: mujoco.MjModel) -> None:
    for i, joint in enumerate(ARM_JOINTS):
        act = panda.actuator(f"act_{joint}")
        assert act.trntype == mujoco.mjtTrn.mjTRN_JOINT
        assert panda.joint(act.trnid[0]).name == joint
        kv = act.gainprm[0]
        assert kv > 0 and act.biasprm[2] == -kv  # MuJoCo's <velocity>: kv (ctrl - qvel)
        assert panda.actuator_ctrllimited[act.id] and panda.actuator_forcelimited[act.id]
        np.testing.assert_allclose(act.ctrlrange, [-DQ_MAX[i], DQ_MAX[i]], err_msg=joint)
        np.testing.assert_allclose(act.forcerange, [-TAU_MAX[i], TAU_MAX[i]], err_msg=joint)


def test_gripper_is_one_coupled_position_servo(panda: mujoco.MjModel) -> None:
    assert panda.nu == 8
    act = panda.actuator("act_gripper")
    np.testing.assert_allclose(act.ctrlrange, [0.0, 0.04])
    assert act.gainprm[0] > 0 and act.biasprm[1] == -act.gainprm[0]  # position servo
    eq = panda.equality("finger_coupling")
    assert eq.type == mujoco.mjtEq.mjEQ_JOINT
    assert {panda.joint(eq.obj1id[0]).name, panda.joint(eq.obj2id[0]).name} == {
        "panda_finger_joint1",
        "panda_finger_joint2",
    }
    data = mujoco.MjData(panda)
    data.qpos[:] = [*READY, 0.04, 0.04]
    data.ctrl[7] = 0.01
    for _ in range(500):
        mujoco.mj_step(panda, data)
    np.testing.assert_allclose(data.qpos[7:9], [0.01, 0.01], atol=1e-3)


def test_sites_and_sensors(panda: mujoco.MjModel) -> None:
    sites = ["ee_site", "wrist_site", "site_link3", "site_link4", "site_link5", "site_link6"]
    for name in [*sites, "site_link7", "site_hand", *HAND_SITES[1:], *FOREARM_SITES]:
        panda.site(name)  # raises KeyError when missing
    assert panda.body(panda.site("ee_site").bodyid[0]).name == "panda_hand"
    np.testing.assert_allclose(panda.site("ee_site").pos, [0.0, 0.0, 0.105])
    assert panda.body(panda.site("wrist_site").bodyid[0]).name == "panda_hand"
    np.testing.assert_allclose(panda.site("wrist_site").pos, 0.0)

    def sensor(name: str) -> tuple[int, str]:
        s = panda.sensor(name)
        obj = (
            panda.joint(s.objid[0]).name
            if s.objtype == mujoco.mjtObj.mjOBJ_JOINT
            else panda.site(s.objid[0]).name
        )
        return int(s.type[0]), obj

    for joint in ARM_JOINTS:
        assert sensor(f"{joint}_pos") == (mujoco.mjtSensor.mjSENS_JOINTPOS, joint)
        assert sensor(f"{joint}_vel") == (mujoco.mjtSensor.mjSENS_JOINTVEL, joint)
    assert sensor("wrist_force") == (mujoco.mjtSensor.mjSENS_FORCE, "wrist_site")
    assert sensor("wrist_torque") == (mujoco.mjtSensor.mjSENS_TORQUE, "wrist_site")


HAND_SITES = ["site_hand", "site_hand_left", "site_hand_right", "ee_site"]
FINGER_SITES = {"panda_leftfinger": "site_finger_left", "panda_rightfinger": "site_finger_right"}
FOREARM_SITES = ["site_link5_elbow", "site_link5_wrist"]


def _mesh_vertices(model: mujoco.MjModel, body: str) -> np.ndarray:
    """The body's collision-mesh vertices in the body frame."""
    (g,) = [g for g in range(model.ngeom) if model.geom_bodyid[g] == model.body(body).id]
    mesh = model.geom_dataid[g]
    start, count = model.mesh_vertadr[mesh], model.mesh_vertnum[mesh]
    rot = np.zeros(9)
    mujoco.mju_quat2Mat(rot, model.geom_quat[g])
    return model.mesh_vert[start : start + count] @ rot.reshape(3, 3).T + model.geom_pos[g]


def _slack(points: np.ndarray, spheres: list[tuple[np.ndarray, float]]) -> float:
    """How far the farthest point lies outside every sphere (m)."""
    gaps = [np.linalg.norm(points - c, axis=1) - r for c, r in spheres]
    return float(np.max(np.min(gaps, axis=0)))


def test_keepout_spheres_cover_the_hand_and_forearm(panda: mujoco.MjModel) -> None:
    # The Reach keep-out (tasks/reach.toml) guards the arm with these spheres only: a part
    # far outside them touches the obstacle while the shield believes it clear.
    def sphere(name: str, offset: np.ndarray | float = 0.0) -> tuple[np.ndarray, float]:
        return panda.site(name).pos + offset, float(panda.site(name).size[0])

    fingers = []
    spheres = [sphere(n) for n in HAND_SITES]
    for body, site in FINGER_SITES.items():
        # the fingers as the tasks hold them: each slide at 0.01 m (GRIPPER_OPENING)
        offset = panda.body(body).pos + np.array([0.0, 0.01 if "left" in body else -0.01, 0.0])
        fingers.append(_mesh_vertices(panda, body) + offset)
        spheres.append(sphere(site, offset))
    hand = _mesh_vertices(panda, "panda_hand")
    assert _slack(hand, [sphere("site_hand")]) > 0.06  # one sphere misses the hand's sides
    assert _slack(np.vstack([hand, *fingers]), spheres) < 0.016  # the cap margin's size
    forearm = _mesh_vertices(panda, "panda_link5")
    assert _slack(forearm, [sphere("site_link5")]) > 0.08
    assert _slack(forearm, [sphere(n) for n in ["site_link5", *FOREARM_SITES]]) < 0.035


@pytest.mark.parametrize("path", PANDA_SCENES, ids=lambda p: p.name)
def test_home_keyframe_is_the_ready_pose_and_collision_free(path: Path) -> None:
    model = mujoco.MjModel.from_xml_path(str(path))
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    np.testing.assert_allclose(data.qpos[:9], [*READY, 0.04, 0.04])
    np.testing.assert_allclose(data.ctrl, [0.0] * 7 + [0.04])
    mujoco.mj_forward(model, data)
    robot = {b for b in range(model.nbody) if model.body_rootid[b] == model.body("panda_link0").id}
    touching = [
        (model.geom(c.geom1).name, model.geom(c.geom2).name)
        for c in data.contact[: data.ncon]
        if {model.geom_bodyid[c.geom1], model.geom_bodyid[c.geom2]} & robot
    ]
    assert not touching
    # Task objects and goals sit at their declared poses.
    np.testing.assert_allclose(data.qpos, model.key("home").qpos)
    np.testing.assert_allclose(data.qpos[9:], model.qpos0[9:])
    np.testing.assert_allclose(data.mocap_pos, model.body_pos[model.body_mocapid >= 0])


def test_velocity_servo_tracks_a_step(scene: mujoco.MjModel) -> None:
    """1 rad/s on joint 1 from rest in the ready pose: within 5 % inside 50 ms."""
    data = mujoco.MjData(scene)
    mujoco.mj_resetDataKeyframe(scene, data, scene.key("home").id)
    data.ctrl[0] = 1.0
    for step in range(1, 51):  # 100 ms
        mujoco.mj_step(scene, data)
        if step * scene.opt.timestep >= 0.05 - 1e-9:
            assert abs(data.qvel[0] - 1.0) < 0.05, (data.time, data.qvel[0])
    assert np.abs(data.qvel[1:7]).max() < 0.05  # the other servos hold still


def test_zero_command_holds_the_pose(scene: mujoco.MjModel) -> None:
    data = mujoco.MjData(scene)
    mujoco.mj_resetDataKeyframe(scene, data, scene.key("home").id)
    for _ in range(500):
        mujoco.mj_step(scene, data)
    np.testing.assert_allclose(data.qpos[:7], READY, atol=1e-6)


def test_kinematics_match_pybullet(panda: mujoco.MjModel) -> None:
    """ee_site == pybullet's panda_grasptarget, and every link frame agrees."""
    pybullet = pytest.importorskip("pybullet")
    pybullet_data = pytest.importorskip("pybullet_data")
    client = pybullet.connect(pybullet.DIRECT)
    try:
        urdf = Path(pybullet_data.getDataPath()) / "franka_panda" / "panda.urdf"
        robot = pybullet.loadURDF(str(urdf), [0, 0, 0], useFixedBase=True, physicsClientId=client)
        info = pybullet.getJointInfo(robot, PYBULLET_EE_LINK, physicsClientId=client)
        assert info[12].decode() == "panda_grasptarget"
        data = mujoco.MjData(panda)
        site = panda.site("ee_site").id
        rng = np.random.default_rng(42)
        for _ in range(20):
            q = rng.uniform(Q_MIN, Q_MAX)
            fingers = rng.uniform(0.0, 0.04)
            for j in range(7):
                pybullet.resetJointState(robot, j, q[j], physicsClientId=client)
            for j in (9, 10):
                pybullet.resetJointState(robot, j, fingers, physicsClientId=client)
            data.qpos[:] = [*q, fingers, fingers]
            mujoco.mj_kinematics(panda, data)

            state = pybullet.getLinkState(
                robot, PYBULLET_EE_LINK, computeForwardKinematics=True, physicsClientId=client
            )
            np.testing.assert_allclose(data.site_xpos[site], state[4], rtol=0, atol=1e-6)
            rot = np.array(pybullet.getMatrixFromQuaternion(state[5])).reshape(3, 3)
            np.testing.assert_allclose(data.site_xmat[site].reshape(3, 3), rot, atol=1e-6)
            for link in (*range(7), 8, 9, 10):  # 7 is the folded-away panda_link8
                name = pybullet.getJointInfo(robot, link, physicsClientId=client)[12].decode()
                state = pybullet.getLinkState(
                    robot, link, computeForwardKinematics=True, physicsClientId=client
                )
                np.testing.assert_allclose(
                    data.xpos[panda.body(name).id], state[4], atol=1e-6, err_msg=name
                )
    finally:
        pybullet.disconnect(client)


def test_press_plate_spring_reads_the_force() -> None:
    """F = -2e4 N/m * plate_deflection, the relation scene_press.xml documents."""
    model = mujoco.MjModel.from_xml_path(str(PANDA_DIR / "scene_press.xml"))
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    data.xfrc_applied[model.body("plate").id, 2] = -20.0
    for _ in range(500):
        mujoco.mj_step(model, data)
    deflection = data.sensor("plate_deflection").data[0]
    assert deflection == pytest.approx(-20.0 / 2e4, rel=0.02)


def test_push_block_rests_on_the_table() -> None:
    model = mujoco.MjModel.from_xml_path(str(PANDA_DIR / "scene_push.xml"))
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    for _ in range(250):
        mujoco.mj_step(model, data)
    block = model.body("block")
    assert model.body_mass[block.id] == pytest.approx(0.1)
    np.testing.assert_allclose(data.site("block_site").xpos, [0.5, 0.0, 0.025], atol=2e-3)


def test_goal_markers_do_not_collide() -> None:
    for name in ("scene_reach.xml", "scene_push.xml", "scene_press.xml"):
        model = mujoco.MjModel.from_xml_path(str(PANDA_DIR / name))
        goal = model.body("goal")
        assert model.body_mocapid[goal.id] >= 0, name
        assert model.site("goal_site").bodyid[0] == goal.id
        geoms = [g for g in range(model.ngeom) if model.geom_bodyid[g] == goal.id]
        assert all(model.geom_contype[g] == model.geom_conaffinity[g] == 0 for g in geoms)


def test_assets_are_small() -> None:
    size = sum(p.stat().st_size for p in PANDA_DIR.rglob("*") if p.is_file())
    assert size < 3e6, f"assets/panda is {size / 1e6:.1f} MB"
    assert "Apache License" in (PANDA_DIR / "LICENSE").read_text()


def test_build_script_reproduces_the_committed_model() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_panda.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
