"""libfranka protocol v10 layouts: sizes and orders that pylibfranka 0.21.3 checks."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from safebot.deploy.franka import protocol as fp
from safebot.deploy.profiles import load_profile
from safebot.deploy.state import FRANKA_FLAGS


def test_struct_sizes_match_libfranka() -> None:
    # libfranka refuses a state of another size ("incorrect object size"): 1377 is the
    # v10 RobotState with the accelerometer arrays (measured: 1233 is refused)
    assert fp.STATE_DTYPE.itemsize == 1377
    assert fp.COMMAND_DTYPE.itemsize == 371  # u64 + MotionGeneratorCommand + ControllerCommand
    assert fp.MOVE_REQUEST.size == 56
    assert fp.COLLISION_REQUEST.size == 52 * 8
    assert fp.HEADER.size == 12


def test_error_order_extends_the_home_made_flags() -> None:
    assert len(fp.ERRORS) == fp.N_ERRORS == 41
    assert fp.ERRORS[: len(FRANKA_FLAGS)] == FRANKA_FLAGS
    assert fp.ERROR_INDEX["communication_constraints_violation"] == 25


def test_errors_round_trip() -> None:
    names = ["joint_reflex", "communication_constraints_violation"]
    arr = fp.errors_array(names)
    assert arr.dtype == np.uint8 and arr.sum() == 2
    assert fp.error_names(arr) == names
    with pytest.raises(KeyError):
        fp.errors_array(["no_such_flag"])


def test_message_header_counts_itself() -> None:
    msg = fp.pack_message(fp.Command.CONNECT, 7, b"\x00\x0a\x00")
    assert fp.HEADER.unpack_from(msg) == (0, 7, 15)


@pytest.mark.parametrize("robot", ["fr3", "panda"])
def test_robot_urdf_carries_the_profile_limits(robot: str) -> None:
    pytest.importorskip("pybullet")
    from safebot.deploy.franka.stub import ROBOT_PROFILES, robot_urdf

    profile = load_profile(ROBOT_PROFILES[robot])
    root = ET.fromstring(robot_urdf(profile, robot))
    joints = root.findall("joint")
    assert len(joints) == 7
    for i, j in enumerate(joints):
        assert f"joint{i + 1}" in j.get("name", "")  # libfranka matches by substring
        lim = j.find("limit")
        pb = j.find("position_based_velocity_limits")
        assert lim is not None and pb is not None
        assert float(lim.get("velocity", "nan")) == profile.limits.joint.velocity[i]
        assert float(lim.get("lower", "nan")) == profile.limits.joint.position_min[i]
        assert float(lim.get("upper", "nan")) == profile.limits.joint.position_max[i]
        assert float(pb.get("deceleration_limit", "nan")) > 0
