"""Controller profiles: shipped values, and validation errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import mujoco
import pytest

from safebot import resources
from safebot.deploy.profiles import ControllerProfile, load_profile
from safebot.spec import SpecError

SHIPPED = ["franka_fr3", "franka_panda", "ur5e"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_load_and_are_consistent(name: str) -> None:
    p = load_profile(name)
    assert p.name == name
    j = p.limits.joint
    for values in (j.position_min, j.position_max, j.velocity, j.torque, p.plant.home):
        assert len(values) == p.dof
    assert p.plant.urdf_path().is_file()
    assert p.tolerance_s() > 0


def test_published_values_match_robot_limits() -> None:
    fr3, panda, ur = (load_profile(n) for n in SHIPPED)
    assert fr3.rate_hz == panda.rate_hz == 1000.0 and ur.rate_hz == 500.0
    assert fr3.interface == panda.interface == "joint_velocity" and ur.interface == "speedj"
    assert fr3.limits.joint.velocity == [2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26]
    assert fr3.limits.joint.position_min[5] == 0.5445 and fr3.limits.joint.position_max[5] == 4.5169
    assert fr3.limits.joint.acceleration == [10.0] * 7 and fr3.limits.joint.jerk == [5000.0] * 7
    assert panda.limits.joint.jerk == [7500.0, 3750.0, 5000.0, 6250.0, 7500.0, 10000.0, 10000.0]
    assert panda.limits.joint.velocity == [2.175] * 4 + [2.61] * 3
    assert panda.limits.cartesian.translation_velocity == 1.7
    assert fr3.communication.lost_cycle_tolerance == 20
    assert ur.communication.watchdog_s == pytest.approx(0.1)
    assert ur.limits.joint.velocity == [pytest.approx(3.141593)] * 6
    assert ur.limits.joint.torque == [150.0, 150.0, 150.0, 28.0, 28.0, 28.0]
    assert ur.limits.joint.acceleration is None  # not published
    assert fr3.faults.command_jerk == "joint_motion_generator_acceleration_discontinuity"
    assert ur.faults.reaction == "protective_stop"


def _variant(tmp_path: Path, old: str, new: str, base: str = "franka_fr3") -> Path:
    text = resources.resolve("controllers", base).read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / "bad_profile.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def _error(path: Path) -> str:
    with pytest.raises(SpecError) as err:
        load_profile(path)
    msg = str(err.value)
    assert str(path) in msg
    return msg


def test_bad_toml_names_file(tmp_path: Path) -> None:
    assert "invalid TOML" in _error(_variant(tmp_path, "rate_hz = 1000.0", "rate_hz = = 1000"))


def test_unknown_key_is_named(tmp_path: Path) -> None:
    msg = _error(_variant(tmp_path, "[collision]\n", "[collision]\nforse = [1.0]\n"))
    assert "collision.forse" in msg and "unknown key" in msg


def test_wrong_length_list_is_named(tmp_path: Path) -> None:
    path = _variant(
        tmp_path, "velocity = [2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26]", "velocity = [2.62, 2.62]"
    )
    msg = _error(path)
    assert "limits.joint.velocity" in msg and "dof = 7" in msg


def test_ur_lists_must_have_six_entries(tmp_path: Path) -> None:
    path = _variant(
        tmp_path,
        "torque = [150.0, 150.0, 150.0, 28.0, 28.0, 28.0]",
        "torque = [150.0, 150.0, 150.0, 28.0, 28.0, 28.0, 1.0]",
        "ur5e",
    )
    assert "limits.joint.torque has 7 entries, expected dof = 6" in _error(path)


def test_min_above_max_is_named(tmp_path: Path) -> None:
    path = _variant(
        tmp_path,
        "position_min = [-2.7437, -1.7837, -2.9007, -3.0421",
        "position_min = [-2.7437, -1.7837, -2.9007, 3.0421",
    )
    msg = _error(path)
    assert "position_min[3]" in msg and "limits.joint" in msg


def test_non_positive_limit_rejected(tmp_path: Path) -> None:
    msg = _error(_variant(tmp_path, "acceleration = [10.0, ", "acceleration = [-10.0, "))
    assert "limits.joint.acceleration.0" in msg and "greater than 0" in msg


def test_unknown_flag_rejected(tmp_path: Path) -> None:
    path = _variant(tmp_path, 'joint_torque = "joint_reflex"', 'joint_torque = "joint_relfex"')
    msg = _error(path)
    assert "faults.joint_torque" in msg and "joint_relfex" in msg


def test_home_outside_limits_rejected(tmp_path: Path) -> None:
    path = _variant(tmp_path, "home = [0.0, -0.785", "home = [3.5, -0.785")
    assert "plant.home[0]" in _error(path)


def test_missing_file_is_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_profile(tmp_path / "nope.toml")


def test_profile_is_frozen() -> None:
    p = load_profile("franka_fr3")
    with pytest.raises(Exception, match="frozen"):
        p.rate_hz = 5.0  # type: ignore[misc]
    assert isinstance(p, ControllerProfile)


def test_ur_profile_names_its_mujoco_arm() -> None:
    arm = load_profile("ur5e").arm
    assert arm is not None and arm.scene_path().is_file()
    assert arm.scene == "ur5e/scene_reach.xml" and arm.body_prefix == "ur5e_"
    assert arm.keepout_sites[0] == "ee_site" and len(arm.keepout_sites) >= 3
    model = mujoco.MjModel.from_xml_path(str(arm.scene_path()))
    for site in (arm.ee_site, *arm.keepout_sites):
        assert mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, site) >= 0, site
    assert load_profile("franka_fr3").arm is None  # Franka bundles run on their own arm


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ('scene = "ur5e/scene_reach.xml"', 'scene = "ur5e/nope.xml"', "no MJCF scene"),
        ('"site_wrist1", "site_forearm"]', '"site_wrist1", "site_wrist1"]', "more than once"),
        ('keepout_sites = ["ee_site"', 'keepout_site = ["ee_site"', "arm.keepout_site"),
        ('body_prefix = "ur5e_"', 'body_prefix = ""', "arm.body_prefix"),
    ],
)
def test_bad_arm_table_rejected(tmp_path: Path, old: str, new: str, needle: str) -> None:
    assert needle in _error(_variant(tmp_path, old, new, base="ur5e"))
