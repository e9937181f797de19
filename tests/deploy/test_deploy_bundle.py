"""Deploying a bundle: caps intersected with the robot, the observation the policy was trained on,
the held command and its stale stop, and refusals (runs end to end: franka/test_deploy_robot.py, test_retarget.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
import pytest
from typer.testing import CliRunner

from safebot import kernels
from safebot.cli import app
from safebot.deploy.bundle import Bundle
from safebot.deploy.export import export_run
from safebot.deploy.profiles import ControllerProfile, load_profile
from safebot.deploy.run import (
    EE_AXIS_TO_NORM,
    STALE_PERIODS,
    BundlePolicy,
    DeployError,
    PolicyWorkerError,
    ShieldedPolicy,
    Tick,
    check_compatible,
    deploy,
    intersect_envelope,
    intersect_joint_limits,
    parse_goal,
)
from safebot.deploy.state import RobotMode, RobotState
from safebot.envelope import Envelope
from safebot.spec import load_task
from safebot.train import RunOptions, final_width, load_policy, load_run_config, make_env
from safebot.train import train as run_train

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deploy_run") / "run"
    opts = RunOptions(steps=128, eval_every=64, eval_episodes=1, checkpoint_every=64)
    run_train("reach", opts, out=out, progress=False)
    return out


@pytest.fixture(scope="module")
def bundle(run_dir: Path) -> Bundle:
    return export_run(run_dir, run_dir.parent / "bundle").bundle


def tight_profile(velocity: float = 0.3, translation: float | None = 0.2) -> ControllerProfile:
    """FR3 with much lower published velocity limits than the task's caps."""
    fr3 = load_profile("franka_fr3")
    joint = fr3.limits.joint.model_copy(update={"velocity": [velocity] * 7})
    cart = fr3.limits.cartesian.model_copy(update={"translation_velocity": translation})
    return fr3.model_copy(
        update={"limits": fr3.limits.model_copy(update={"joint": joint, "cartesian": cart})}
    )


def at_width(bundle: Bundle, width: float) -> Bundle:
    shield = replace(bundle.shield, width=dict.fromkeys(bundle.shield.width, width))
    return replace(bundle, shield=shield)


# ----------------------------------------------------------------------------- caps


@pytest.mark.parametrize("name", ["franka_fr3", "franka_panda"])
def test_intersected_bounds_stay_within_the_shipped_profiles(name: str) -> None:
    profile = load_profile(name)
    env = intersect_envelope(Envelope.from_spec(load_task("reach").limits), profile)
    vel = np.asarray(profile.limits.joint.velocity)
    trans = profile.limits.cartesian.translation_velocity
    assert trans is not None
    for w in np.linspace(0.0, 1.0, 11):
        b = env.bounds(float(w))
        assert b.joint_velocity is not None and b.ee_speed is not None
        assert np.all(b.joint_velocity <= vel)
        assert np.all(b.ee_speed * EE_AXIS_TO_NORM <= trans + 1e-12)
    if name == "franka_panda":  # 1.7 m/s / sqrt(3) = 0.98 < the task's 1.0 m/s cap
        np.testing.assert_allclose(env.limits["ee_speed"].cap, 1.7 / np.sqrt(3))


def test_intersection_lowers_caps_and_starts_and_keeps_the_rest() -> None:
    base = Envelope.from_spec(load_task("reach").limits, width=0.3)
    env = intersect_envelope(base, tight_profile(0.3, 0.2))
    jv, ee = env.limits["joint_velocity"], env.limits["ee_speed"]
    np.testing.assert_allclose(jv.cap, 0.3)
    np.testing.assert_allclose(jv.start, 0.3)  # the task's start 0.4 came down to the new cap
    np.testing.assert_allclose(ee.cap, 0.2 / np.sqrt(3))
    np.testing.assert_allclose(ee.start, 0.2 / np.sqrt(3))
    assert env.width == base.width
    for kind in ("workspace", "keepout", "joint_position"):
        np.testing.assert_array_equal(env.limits[kind].cap, base.limits[kind].cap)
        np.testing.assert_array_equal(env.limits[kind].start, base.limits[kind].start)
    # a loose profile changes nothing
    same = intersect_envelope(base, tight_profile(10.0, None))
    for kind in base.kinds:
        np.testing.assert_array_equal(same.limits[kind].cap, base.limits[kind].cap)


def test_an_envelope_without_joint_velocity_gets_the_profiles() -> None:
    limits = dict(Envelope.from_spec(load_task("reach").limits).limits)
    del limits["joint_velocity"]
    env = intersect_envelope(Envelope(limits), load_profile("franka_fr3"))
    b = env.bounds()
    assert b.joint_velocity is not None
    np.testing.assert_allclose(b.joint_velocity, load_profile("franka_fr3").limits.joint.velocity)


def test_joint_limits_are_intersected() -> None:
    fr3 = load_profile("franka_fr3")
    env = make_env(load_task("reach"))
    lo, hi = intersect_joint_limits(env.unwrapped.q_low, env.unwrapped.q_high, fr3)  # type: ignore[attr-defined]
    assert lo[5] == pytest.approx(0.5445) and hi[3] == pytest.approx(-0.1518)  # FR3's, tighter
    assert hi[5] == pytest.approx(3.7525)  # the Panda model's, tighter than the FR3's 4.5169
    assert np.all(lo >= np.asarray(fr3.limits.joint.position_min))
    assert np.all(hi <= np.asarray(fr3.limits.joint.position_max))


@pytest.mark.parametrize("width", [0.0, 1.0])
def test_shielded_commands_never_exceed_a_tight_robot(bundle: Bundle, width: float) -> None:
    profile = tight_profile(0.3, 0.2)
    policy = ShieldedPolicy(at_width(bundle, width), profile)
    rng = np.random.default_rng(0)
    home = policy.home
    worst_qd, worst_v = 0.0, 0.0
    for _ in range(150):
        q = home + rng.uniform(-0.3, 0.3, 7)
        policy.observation(q, np.zeros(7))
        u = rng.choice([-1.0, 1.0], 3) * rng.uniform(0.5, 1.0, 3) * policy.scale
        qd, status, _, _ = policy.project(u)
        assert status == kernels.STATUS_OK
        J = policy.physics.ee_jacobian()
        worst_qd = max(worst_qd, float(np.max(np.abs(qd))))
        worst_v = max(worst_v, float(np.linalg.norm(J @ qd)))
    assert worst_qd <= 0.3 + 1e-6
    assert worst_v <= 0.2 + 1e-6
    assert worst_qd > 0.1  # the actions were large: the bound, not the policy, held them


def test_non_finite_action_is_a_safe_stop(bundle: Bundle) -> None:
    policy = ShieldedPolicy(bundle, load_profile("franka_fr3"))
    policy.observation(policy.home, np.zeros(7))
    qd, status, intervened, _ = policy.project(np.array([np.nan, 0.0, 0.0]))
    assert status == kernels.STATUS_NONFINITE and intervened
    np.testing.assert_array_equal(qd, 0.0)


# ----------------------------------------------------------------------------- observation


def test_observation_and_action_match_the_training_env(run_dir: Path, bundle: Bundle) -> None:
    spec, _ = load_run_config(run_dir)
    _, model = load_policy(run_dir)
    env = make_env(spec, width=final_width(run_dir))
    inner: Any = env.unwrapped
    policy = ShieldedPolicy(bundle, load_profile("franka_fr3"))
    rng = np.random.default_rng(1)
    for _ in range(10):
        env.reset(seed=int(rng.integers(1000)))
        inner._goal = policy.goal.copy()
        q = policy.home + rng.uniform(-0.3, 0.3, 7)
        dq = rng.uniform(-0.5, 0.5, 7)
        inner.data.qpos[inner.physics.qpos_adr] = q
        inner.data.qvel[:] = 0.0
        inner.data.qvel[inner.physics.dof_adr] = dq
        mujoco.mj_forward(inner.model, inner.data)
        expected = inner._obs()
        widths = np.array([env.envelope.width[k] for k in env.envelope.kinds])
        expected["observation"] = np.concatenate([expected["observation"], widths])
        ours = policy.observation(q, dq)
        for key in expected:
            np.testing.assert_allclose(ours[key], expected[key], atol=1e-12, err_msg=key)
        sb3, _ = model.predict(expected, deterministic=True)
        np.testing.assert_allclose(policy.act(ours), sb3, atol=1e-5)


def test_the_task_goal_is_the_default_and_bad_goals_are_refused(bundle: Bundle) -> None:
    fr3 = load_profile("franka_fr3")
    policy = ShieldedPolicy(bundle, fr3)
    g = bundle.spec.goal
    assert np.all(policy.goal >= g.low) and np.all(policy.goal <= g.high)
    ours = ShieldedPolicy(bundle, fr3, goal=np.array([0.35, 0.2, 0.3]))
    np.testing.assert_array_equal(ours.goal, [0.35, 0.2, 0.3])
    with pytest.raises(DeployError, match="outside the task's goal region"):
        ShieldedPolicy(bundle, fr3, goal=np.array([2.0, 0.0, 0.3]))
    with pytest.raises(DeployError, match="keep-out box"):
        ShieldedPolicy(bundle, fr3, goal=np.array([0.5, 0.0, 0.2]))
    with pytest.raises(DeployError, match="three numbers"):
        parse_goal("0.4,nope,0.3")
    np.testing.assert_array_equal(parse_goal("0.4, 0.1, 0.3"), [0.4, 0.1, 0.3])


def test_ur5e_is_refused_for_a_full_observation_bundle_before_anything_starts(
    reach_bundle: Callable[[str], Bundle],
) -> None:
    # a policy that observes the Panda's joints cannot run on the UR (a Cartesian one can:
    # test_retarget.py)
    full = reach_bundle("full")
    with pytest.raises(DeployError, match=r"UR5e \(6 joints\).*Franka Panda.*franka_fr3"):
        check_compatible(full, load_profile("ur5e"))
    with pytest.raises(DeployError, match="UR5e"):
        deploy(full.root, "ur5e", seconds=1.0)


# ----------------------------------------------------------------------------- the held command


def _state(t_s: float, dof: int = 7) -> RobotState:
    z = np.zeros(dof)
    return RobotState(
        seq=int(t_s * 1000), t_ns=int(t_s * 1e9), t_echo_ns=0, cmd_seq=0, mode=RobotMode.MOVE,
        lost_consecutive=0, lost_total=0, overruns=0, errors=0, q=z, dq=z, dq_d=z, ddq_d=z,
        tau_ext=z, wrench=np.zeros(6), ee_pos=np.array([0.3, 0.0, 0.5]),
    )  # fmt: skip


class FakeWorker:
    """Answers the first ``answers`` requests after ``delay`` polls; then stays silent (a stall)."""

    realtime = False

    def __init__(self, answers: int, delay: int = 1, fail: bool = False) -> None:
        self.info = {"goal": [0.5, 0.2, 0.3], "goal_threshold_m": 0.05}
        self.answers, self.delay, self.fail = answers, delay, fail
        self.requests: list[int] = []
        self._polls = 0

    def request(self, seq: int, q: Any, dq: Any, ee: Any) -> None:
        self.requests.append(seq)
        self._polls = 0

    def ready(self) -> bool:
        self._polls += 1
        return len(self.requests) <= self.answers and self._polls > self.delay

    def receive(self) -> tuple[int, Tick]:
        if self.fail:
            raise PolicyWorkerError("policy worker failed: boom")
        qd = np.full(7, 0.1 * self.requests[-1])
        return self.requests[-1], Tick(qd, kernels.STATUS_OK, False, 0, 1.0, 1.0, 0.0)


def test_command_is_held_between_ticks_and_stopped_when_stale() -> None:
    worker = FakeWorker(answers=2, delay=1)
    policy = BundlePolicy(worker, control_hz=25.0, dof=7)  # type: ignore[arg-type]
    out = [policy(_state(k * 1e-3)).copy() for k in range(200)]  # 0.2 s at 1 kHz
    # ticks every 40 ms on the controller's clock; the third is never answered, so the ticks
    # at 120 and 160 ms find the worker busy and are skipped, not queued
    assert worker.requests == [1, 2, 3]
    assert policy.stats.ticks == 2 and policy.stats.late_ticks == 2
    np.testing.assert_array_equal(out[0], 0.0)  # nothing before the first answer
    np.testing.assert_allclose(out[2], 0.1)  # first answer, one cycle after the request
    np.testing.assert_allclose(out[39], 0.1)  # held
    np.testing.assert_allclose(out[42], 0.2)  # second tick's answer
    # the worker goes silent after two answers: the command is stopped after STALE_PERIODS
    stale = int(42 + STALE_PERIODS * 40)
    np.testing.assert_allclose(out[stale], 0.2)
    np.testing.assert_array_equal(out[stale + 2], 0.0)
    assert policy.stats.stale_stops == 1


def test_a_failing_worker_raises_into_the_client() -> None:
    policy = BundlePolicy(FakeWorker(answers=1, delay=0, fail=True), control_hz=25.0, dof=7)  # type: ignore[arg-type]
    policy(_state(0.0))
    with pytest.raises(PolicyWorkerError, match="boom"):
        policy(_state(0.001))


# ----------------------------------------------------------------------------- runs


@pytest.mark.slow
def test_a_bad_goal_stops_the_worker_at_start(bundle: Bundle) -> None:
    with pytest.raises(DeployError, match="keep-out box"):
        deploy(bundle.root, "fr3", seconds=1.0, goal=np.array([0.5, 0.0, 0.2]))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--robot", "ur5e"], "UR5e"),  # the UR refuses a policy that observes the Panda's joints
        (["--robot", "fr3", "--controller", "{bad}"], "bad.toml: ["),
        (["--robot", "fr3", "--controller", "no_such"], "not found"),
        (["--robot", "fr3", "--controller", "ur5e"], "not --robot fr3"),
        (["--robot", "kuka"], "--robot must be one of fr3, panda, ur5e"),
        (["--controller", "franka_fr3"], "give --robot fr3, panda or ur5e"),
    ],
)
def test_cli_deploy_refusals_are_one_line_exit_2(
    reach_bundle: Callable[[str], Bundle], tmp_path: Path, args: list[str], needle: str
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n')
    full = reach_bundle("full")
    result = runner.invoke(app, ["deploy", str(full.root), *[a.format(bad=bad) for a in args]])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_deploy_bad_goal_is_exit_2(bundle: Bundle) -> None:
    result = runner.invoke(app, ["deploy", str(bundle.root), "--robot", "fr3", "--goal", "1,2"])
    assert result.exit_code == 2 and "--goal" in result.output
