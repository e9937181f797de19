"""Retargeting a Cartesian Reach bundle (trained on the Panda) to the UR5e: the observation comes
from the UR's model, the shield's caps stay within the UR profile, full-observation bundles are
refused, and a short deploy on the UR stub is clean."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import mujoco
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from safebot import kernels
from safebot.cli import app
from safebot.deploy.bundle import Bundle
from safebot.deploy.profiles import ControllerProfile, load_profile
from safebot.deploy.retarget import RetargetedArm, RetargetError, retarget_envelope
from safebot.deploy.run import (
    EE_AXIS_TO_NORM,
    DeployError,
    ShieldedPolicy,
    check_compatible,
    deploy,
    intersect_envelope,
)
from safebot.envelope import Envelope
from safebot.shield import ROW_KINDS
from safebot.shield import rows as constraints

from .conftest import TIMING_RERUNS

MakeBundle = Callable[[str], Bundle]
UR = load_profile("ur5e")
runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(reach_bundle: MakeBundle) -> Bundle:
    b = reach_bundle("cartesian")
    assert b.spec.robot.observation == "cartesian" and b.shield.action_mode == "ee_velocity"
    return b


@pytest.fixture(scope="module")
def policy(bundle: Bundle) -> ShieldedPolicy:
    return ShieldedPolicy(bundle, UR)


def slow_ur(velocity: float = 0.5, translation: float | None = 0.3) -> ControllerProfile:
    """The UR5e profile with lower published limits than the bundle's caps."""
    joint = UR.limits.joint.model_copy(update={"velocity": [velocity] * 6})
    cart = UR.limits.cartesian.model_copy(update={"translation_velocity": translation})
    return UR.model_copy(
        update={"limits": UR.limits.model_copy(update={"joint": joint, "cartesian": cart})}
    )


# ----------------------------------------------------------------------------- compatibility


def test_cartesian_bundle_runs_retargeted_on_the_ur_only(bundle: Bundle) -> None:
    assert check_compatible(bundle, UR) is True
    assert check_compatible(bundle, load_profile("franka_fr3")) is False


def test_full_observation_bundle_is_refused_with_the_reason(reach_bundle: MakeBundle) -> None:
    full = reach_bundle("full")
    with pytest.raises(DeployError) as err:
        check_compatible(full, UR)
    msg = str(err.value)
    assert "\n" not in msg
    assert "UR5e (6 joints)" in msg and "observation = 'full'" in msg
    assert 'observation = "cartesian"' in msg and "franka_fr3" in msg
    with pytest.raises(DeployError, match="observation = 'full'"):
        deploy(full.root, "ur5e", seconds=1.0)  # refused before a process starts
    result = runner.invoke(app, ["deploy", str(full.root), "--robot", "ur5e"])
    assert result.exit_code == 2, result.output
    assert "cartesian" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_profile_without_an_arm_model_is_refused(bundle: Bundle) -> None:
    bare = UR.model_copy(update={"arm": None})
    with pytest.raises(DeployError, match=r"no \[arm\] table"):
        check_compatible(bundle, bare)
    with pytest.raises(RetargetError, match=r"no \[arm\] table"):
        RetargetedArm(bare, action_scale=bundle.shield.action_scale, dt=0.04, boxes=[])


def test_an_arm_model_without_the_listed_sites_is_refused(bundle: Bundle) -> None:
    assert UR.arm is not None
    arm = UR.arm.model_copy(update={"keepout_sites": ["ee_site", "site_hand"]})
    with pytest.raises(DeployError, match="site named 'site_hand'"):
        ShieldedPolicy(bundle, UR.model_copy(update={"arm": arm}))


# ----------------------------------------------------------------------------- the UR's model


def test_observation_is_the_ur_end_effector_as_the_stub_sees_it(policy: ShieldedPolicy) -> None:
    from safebot.deploy.stubs.plant import PybulletPlant

    plant = PybulletPlant(UR)
    try:
        rng = np.random.default_rng(3)
        for _ in range(20):
            q = policy.home + rng.uniform(-0.5, 0.5, 6)
            dq = rng.uniform(-0.5, 0.5, 6)
            plant.reset(q)
            obs = policy.observation(q, dq)
            ee, ee_vel = obs["observation"][:3], obs["observation"][3:6]
            # the PyBullet plant's tool0 (what the stub reports) is MuJoCo's ee_site
            np.testing.assert_allclose(ee, plant.read().ee_pos, atol=1e-6)
            np.testing.assert_array_equal(obs["achieved_goal"], ee)
            # ee velocity by finite differences of the UR model's forward kinematics
            h = 1e-6
            q2 = q + h * dq
            ee2 = policy.observation(q2, dq)["observation"][:3]
            np.testing.assert_allclose(ee_vel, (ee2 - ee) / h, atol=1e-5)
            np.testing.assert_array_equal(obs["observation"][6:], policy.widths)
            assert obs["observation"].shape == (6 + len(policy.widths),)
    finally:
        plant.close()


def test_the_shield_uses_the_urs_joints_limits_and_keepout_sites(policy: ShieldedPolicy) -> None:
    assert UR.arm is not None
    d = policy.describe()
    assert d["retargeted"] is True and d["arm_scene"] == UR.arm.scene
    assert d["keepout_sites"] == UR.arm.keepout_sites
    # joint ranges: the UR model's (±2π, elbow ±π), within the profile's
    assert len(d["q_low"]) == 6
    assert np.all(policy.q_low >= np.asarray(UR.limits.joint.position_min) - 1e-12)
    assert np.all(policy.q_high <= np.asarray(UR.limits.joint.position_max) + 1e-12)
    np.testing.assert_allclose(policy.q_high[2], np.pi, atol=1e-6)
    # one keep-out row per (UR site, box) in the rows the projection sees
    policy.observation(policy.home, np.zeros(6))
    st_ = policy.filter.view.state()
    assert len(st_.sites) == len(UR.arm.keepout_sites) and len(st_.boxes) == 1
    rows = constraints.build(st_, policy.envelope, policy.scale, policy.bounds)
    n_keepout = int(np.sum(rows.kind == ROW_KINDS.index("keepout")))
    assert n_keepout == len(UR.arm.keepout_sites)
    assert rows.A.shape[1] == 3  # rows act on the end-effector velocity command


# ----------------------------------------------------------------------------- caps


@settings(max_examples=40, deadline=None)
@given(
    widths=st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5),
    velocity=st.floats(0.05, 4.0),
    translation=st.one_of(st.none(), st.floats(0.05, 2.0)),
)
def test_retargeted_caps_never_exceed_the_ur_profile(
    reach_bundle: MakeBundle, widths: list[float], velocity: float, translation: float | None
) -> None:
    shield = reach_bundle("cartesian").shield
    kinds = list(shield.limits)
    base = Envelope(
        shield.limits,
        dict(zip(kinds, widths[: len(kinds)], strict=False)),
        joint_gain=shield.joint_gain,
        barrier_gain=shield.barrier_gain,
    )
    for prof in (UR, slow_ur(velocity, translation)):
        env = intersect_envelope(retarget_envelope(base, prof), prof)
        vel = np.asarray(prof.limits.joint.velocity)
        for b in (env.bounds(), env.bounds(0.0), env.bounds(1.0)):
            assert b.joint_velocity is not None and b.joint_velocity.shape == (6,)
            assert np.all(b.joint_velocity <= vel + 1e-12)
            assert b.ee_speed is not None and b.ee_speed.shape == (3,)
            assert np.all(b.ee_speed <= shield.limits["ee_speed"].cap + 1e-12)
            t = prof.limits.cartesian.translation_velocity
            if t is not None:
                assert np.all(b.ee_speed * EE_AXIS_TO_NORM <= t + 1e-9)
        # the Cartesian limits and margins are the bundle's, at the bundle's widths
        ours, theirs = env.bounds(), base.bounds()
        np.testing.assert_array_equal(ours.workspace_low, theirs.workspace_low)
        np.testing.assert_array_equal(ours.workspace_high, theirs.workspace_high)
        assert ours.keepout_margin == theirs.keepout_margin
        assert ours.joint_margin == theirs.joint_margin


@pytest.mark.parametrize("w", [0.0, 0.3, 1.0])
def test_joint_velocity_keeps_the_bundles_start_and_width(bundle: Bundle, w: float) -> None:
    jv = bundle.shield.limits["joint_velocity"]
    base = bundle.shield.envelope()
    base.set_width(w)
    env = retarget_envelope(base, UR)
    start, cap = float(np.min(jv.start)), np.asarray(UR.limits.joint.velocity)
    assert env.width == base.width
    bound = env.bounds().joint_velocity
    assert bound is not None and bound.shape == (6,)
    np.testing.assert_allclose(bound, start + w * (cap - start))


def test_shielded_commands_stay_within_the_slow_urs_limits(bundle: Bundle) -> None:
    prof = slow_ur(velocity=0.3, translation=0.2)
    policy = ShieldedPolicy(bundle, prof)
    vel = np.asarray(prof.limits.joint.velocity)
    rng = np.random.default_rng(0)
    m, d = policy._m, policy._d
    jac = np.zeros((3, m.nv))
    bound = policy.bounds.ee_speed
    assert bound is not None
    worst_qd = 0.0
    for _ in range(150):
        q = policy.home + rng.uniform(-0.4, 0.4, 6)
        policy.observation(q, np.zeros(6))
        u_raw = rng.choice([-1.0, 1.0], 3) * rng.uniform(0.5, 1.0, 3) * policy.scale
        qd, status, _, _ = policy.project(u_raw)
        assert status == kernels.STATUS_OK
        assert np.all(np.abs(qd) <= vel + 1e-6), (qd, vel)
        mujoco.mj_jacSite(m, d, jac, None, policy.physics.ee_site_id)
        v = jac[:, policy._dadr] @ qd  # the UR's own ee velocity under the command
        assert np.all(np.abs(v) <= bound + 1e-6), (v, bound)
        assert np.linalg.norm(v) <= 0.2 + 1e-6
        worst_qd = max(worst_qd, float(np.max(np.abs(qd))))
    assert worst_qd > 0.1  # the actions were large: the bound, not the policy, held them


# ----------------------------------------------------------------------------- on the stub


@pytest.mark.slow
@TIMING_RERUNS
def test_deploy_ur5e_retargeted_end_to_end_5s_zero_faults(bundle: Bundle, tmp_path: Path) -> None:
    """The Cartesian bundle on the UR5e through ur_rtde (speedJ, 500 Hz) against the UR stub."""
    report = tmp_path / "ur.json"
    result = runner.invoke(
        app,
        [
            "deploy", str(bundle.root), "--robot", "ur5e", "--seconds", "5",
            "--realtime", "--json", str(report),
        ],
    )  # fmt: skip
    d = json.loads(report.read_text())
    assert result.exit_code == 0, d["message"]
    assert d["exit_reason"] == "completed" and d["faults"] == []
    assert d["client"].startswith("ur_rtde") and d["cycles"] > 1250  # 2500 at 500 Hz
    for kind in ("velocity", "acceleration"):
        value, limit = d["max_commanded"][kind]
        assert limit is not None and value <= limit + 1e-9
    dep = d["deploy"]
    assert dep["retargeted"] is True and dep["observation"] == "cartesian"
    assert dep["kinematics_max_error_m"] < 1e-6  # MuJoCo's UR and the PyBullet plant agree
    assert dep["robot"] == "ur5e" and dep["host"] is None
    assert dep["policy"]["ticks"] >= 80  # 125 at 25 Hz
    assert dep["shield"]["status"].get("ok", 0) == dep["policy"]["ticks"]
    assert dep["stub_obstacles"] == [[0.5, 0.0, 0.15, 0.05, 0.15, 0.15]]
    assert max(dep["shield"]["joint_velocity_bound"]) <= np.pi + 1e-9
    assert dep["shield"]["keepout_sites"] == UR.arm.keepout_sites  # type: ignore[union-attr]
