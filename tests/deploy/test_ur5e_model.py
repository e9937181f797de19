"""The UR5e URDF: generated from the DH table, loads in PyBullet, kinematics match DH."""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
