"""run_loop through ur_rtde 1.6.5 against the UR stub: a clean run and every fault."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from safebot.deploy.profiles import load_profile
from safebot.deploy.state import RobotState
from safebot.deploy.ur.client import run_loop

from ..conftest import TIMING_RERUNS

pytest.importorskip("rtde_control")

PROFILE = load_profile("ur5e")
V_MAX = np.asarray(PROFILE.limits.joint.velocity)


def wrist(speed: float) -> np.ndarray:
    return np.array([0, 0, 0, 0, 0, speed], dtype=np.float64)


def tasks() -> int:
    return len(os.listdir("/proc/self/task"))


def assert_one_line(report) -> None:
    assert report.message and "\n" not in report.message
    assert "Traceback" not in report.message


def test_two_second_speedj_loop_completes(ur_stub) -> None:
    stub = ur_stub()
    n_tasks = tasks()
    seen: list[RobotState] = []

    def policy(s: RobotState) -> np.ndarray:
        seen.append(s)
        return wrist(0.5)

    stats: dict = {}
    report = run_loop(PROFILE, policy, 2.0, host=stub.host, realtime=True, stats=stats)
    assert report.ok, report.message
    assert report.exit_code == 0
    assert report.cycles > 500  # 1000 nominal; a loaded machine drops some
    assert report.compute_us["p50"] > 0
    v, lim = report.max_commanded["velocity"]
    assert v == pytest.approx(0.5) and lim == pytest.approx(V_MAX[5])
    # states come from RTDE: the plant's joints, advancing controller cycles
    assert seen[0].q.shape == (6,) and seen[-1].seq > seen[0].seq
    assert report.lost_run_max == stats["longest_lost_run"] < 20
    assert seen[-1].q[5] > seen[0].q[5] + 0.3
    assert report.final_mode in ("IDLE", "MOVE")
    assert tasks() == n_tasks  # ur_rtde's threads are gone
    st = stub.terminate()
    assert st is not None
    sent = report.cycles + report.stop_cycles - 1  # the last stop cycle is the speedStop
    # each speedJ is one RTDE package; two landing in one controller cycle count once
    assert 0.9 * sent <= st["commands"]["speedj"] <= sent
    assert any("stop script" in e for e in st["events"])


def test_velocity_step_is_rate_limited_not_faulted(ur_stub) -> None:
    stub = ur_stub()
    report = run_loop(PROFILE, lambda s: wrist(5.0), 0.5, host=stub.host, realtime=True)
    assert report.ok, report.message
    v, lim = report.max_commanded["velocity"]
    assert v < lim
    a, a_lim = report.max_commanded["acceleration"]
    assert a <= a_lim + 1e-9


def test_velocity_step_beyond_the_limit_is_a_protective_stop(ur_stub) -> None:
    stub = ur_stub()
    calls = []

    def policy(s: RobotState) -> np.ndarray:
        calls.append(1)
        return wrist(0.2 if len(calls) < 50 else 4.0)  # 4 rad/s > 3.14 rad/s

    report = run_loop(PROFILE, policy, 2.0, host=stub.host, rate_limit=False, realtime=True)
    assert report.exit_reason == "fault" and report.exit_code == 1
    assert report.faults[:1] == ["protective_stop"]
    assert "joint_velocity_violation" in report.faults
    assert "protective stop" in report.message
    assert_one_line(report)
    assert report.final_mode == "PROTECTIVE_STOP"


def test_client_stall_trips_the_watchdog(ur_stub) -> None:
    stub = ur_stub()
    calls = []

    def policy(s: RobotState) -> np.ndarray:
        calls.append(1)
        if len(calls) == 100:
            time.sleep(0.4)  # the client hangs for 4 watchdog periods
        return wrist(0.3)

    report = run_loop(PROFILE, policy, 3.0, host=stub.host, realtime=True)
    assert report.exit_reason == "fault", report.message
    assert report.faults == ["watchdog_timeout"]
    assert "RTDE watchdog" in report.message
    assert_one_line(report)
    st = stub.terminate()
    assert st is not None and any("watchdog" in e for e in st["events"])


def test_joint_limit_is_a_protective_stop(ur_stub) -> None:
    home = list(PROFILE.plant.home)
    home[5] = PROFILE.limits.joint.position_max[5] - 0.15
    stub = ur_stub(home=home)
    report = run_loop(PROFILE, lambda s: wrist(0.6), 3.0, host=stub.host, realtime=True)
    assert report.exit_reason == "fault", report.message
    assert "protective_stop" in report.faults
    assert "joint_position_limits_violation" in report.faults
    assert_one_line(report)


@TIMING_RERUNS
def test_collision_is_a_protective_stop(ur_stub) -> None:
    from safebot.deploy.stubs.plant import Box

    # a post beside the wrist, in the way of a shoulder-pan rotation
    stub = ur_stub(obstacles=[Box((0.282, 0.119, 0.52), (0.03, 0.03, 0.08))])
    report = run_loop(PROFILE, lambda s: np.array([0.4, 0, 0, 0, 0, 0]), 3.0, host=stub.host)
    assert report.exit_reason == "fault", report.message
    assert report.faults == ["protective_stop", "cartesian_reflex"]
    assert_one_line(report)
    st = stub.terminate()
    assert st is not None and any("cartesian_reflex" in e for e in st["events"])


def test_protective_stop_then_recover(ur_stub) -> None:
    stub = ur_stub(extra_args=["--unlock-delay", "0.3"])
    timer = threading.Timer(0.8, stub.signal, args=(signal.SIGUSR1,))
    timer.start()
    try:
        report = run_loop(PROFILE, lambda s: wrist(0.3), 3.0, host=stub.host, realtime=True)
    finally:
        timer.cancel()
    assert report.exit_reason == "fault"
    assert report.faults[:1] == ["protective_stop"]
    assert "unlock" in report.message
    assert_one_line(report)
    # without recover the stop stays; with it the dashboard unlocks it and the run goes on
    again = run_loop(PROFILE, lambda s: wrist(0.3), 0.5, host=stub.host)
    assert again.exit_reason == "fault" and "before the run" in again.message
    healed = run_loop(PROFILE, lambda s: wrist(0.3), 0.5, host=stub.host, recover=True)
    assert healed.ok, healed.message


def test_emergency_stop(ur_stub) -> None:
    stub = ur_stub()
    timer = threading.Timer(0.8, stub.signal, args=(signal.SIGUSR2,))
    timer.start()
    try:
        report = run_loop(PROFILE, lambda s: wrist(0.3), 3.0, host=stub.host, realtime=True)
    finally:
        timer.cancel()
    assert report.exit_reason == "fault"
    assert report.faults == ["emergency_stop"]
    assert "emergency stop" in report.message
    assert_one_line(report)


def test_stub_killed_mid_run(ur_stub) -> None:
    stub = ur_stub()
    n_tasks = tasks()
    timer = threading.Timer(0.8, stub.kill)
    timer.start()
    t = time.monotonic()
    try:
        report = run_loop(PROFILE, lambda s: wrist(0.3), 5.0, host=stub.host, realtime=True)
    finally:
        timer.cancel()
    assert time.monotonic() - t < 5.0  # ended on the loss, not at the run's end
    assert report.exit_reason == "stub_lost" and report.exit_code == 3
    assert "lost the UR" in report.message
    assert_one_line(report)
    assert tasks() == n_tasks


def test_nobody_at_the_host() -> None:
    t = time.monotonic()
    report = run_loop(PROFILE, lambda s: wrist(0.0), 1.0, host="127.0.0.253")
    assert time.monotonic() - t < 3.0
    assert report.exit_reason == "connect_failed" and report.exit_code == 6
    assert "no RTDE server at 127.0.0.253:30004" in report.message
    assert_one_line(report)


def test_wrong_protocol_version(ur_stub) -> None:
    stub = ur_stub(extra_args=["--protocol-versions", "1"])
    report = run_loop(PROFILE, lambda s: wrist(0.0), 1.0, host=stub.host)
    assert report.exit_reason == "connect_failed"
    assert "refused RTDE protocol version 2" in report.message
    assert_one_line(report)


def test_not_in_remote_control(ur_stub) -> None:
    stub = ur_stub(extra_args=["--local-mode"])
    n_tasks = tasks()
    report = run_loop(PROFILE, lambda s: wrist(0.0), 1.0, host=stub.host)
    assert report.exit_reason == "connect_failed"
    assert "remote control" in report.message
    assert_one_line(report)
    assert tasks() == n_tasks


def test_policy_error_stops_safely(ur_stub) -> None:
    stub = ur_stub()
    calls = []

    def policy(s: RobotState) -> np.ndarray:
        calls.append(1)
        if len(calls) > 200:
            return np.full(6, np.nan)
        return wrist(0.5)

    report = run_loop(PROFILE, policy, 3.0, host=stub.host, realtime=True)
    assert report.exit_reason == "nonfinite_command"
    assert report.stop_cycles > 0  # ramped down and speedStop'ed
    st = stub.terminate()
    assert st is not None and st["commands"]["stop"] == 1


def test_response_latency_survives_controller_clock_drift() -> None:
    from safebot.deploy.ur.client import _response_us

    stamps = [i * 0.002 for i in range(1000)]
    # 0.5 ms latency throughout; the controller's clock falls 70 ms behind at 500
    sent = [int((t + 0.0005 + (0.07 if i > 500 else 0.0)) * 1e9) for i, t in enumerate(stamps)]
    lat = np.asarray(_response_us(sent, stamps))
    assert lat.min() >= 0.0 and lat.max() < 10.0  # µs: the jump is not latency


# ------------------------------------------------------- ported from the home-made protocol's tests


def test_joint_reach_succeeds(ur_stub) -> None:
    from safebot.deploy.policies import JointReach

    stub = ur_stub()
    target = np.asarray(PROFILE.plant.home) + np.array([0.15, -0.1, 0.1, 0.0, 0.1, 0.2])
    policy = JointReach(PROFILE, target, gain=4.0)
    report = run_loop(
        PROFILE, policy, 1.2, host=stub.host, success_fn=policy.success, realtime=True
    )
    assert report.ok, report.message
    assert report.success is True
    assert report.max_commanded["velocity"][0] <= V_MAX[0]


def test_protective_stop_needs_acknowledgement(ur_stub) -> None:
    import rtde_receive

    stub = ur_stub(extra_args=["--unlock-delay", "0.3"])
    step = np.array([3.3, 0, 0, 0, 0, 0.0])  # > the UR5e's 3.14 rad/s on the base
    naive = run_loop(PROFILE, lambda s: step, 0.3, host=stub.host, rate_limit=False)
    assert naive.exit_reason == "fault", naive.message
    assert set(naive.faults) == {"joint_velocity_violation", "protective_stop"}
    r = rtde_receive.RTDEReceiveInterface(stub.host)
    try:
        assert r.isProtectiveStopped()
        before = np.asarray(r.getActualQ())
        # a client that does not acknowledge is refused before it commands anything
        again = run_loop(PROFILE, lambda s: wrist(0.3), 0.3, host=stub.host)
        assert again.exit_reason == "fault" and again.cycles == 0, again.message
        assert "before the run" in again.message
        assert r.isProtectiveStopped()
        assert np.abs(np.asarray(r.getActualQ()) - before).max() < 1e-3
        assert not np.any(r.getTargetQd())
    finally:
        r.disconnect()
    # acknowledged (unlock protective stop over the dashboard), it moves again
    ok = run_loop(PROFILE, lambda s: wrist(0.3), 0.3, host=stub.host, recover=True)
    assert ok.ok, ok.message


def test_lost_commands_trip_the_watchdog(ur_stub) -> None:
    from safebot.deploy.loop import FaultInjection

    stub = ur_stub()
    t0 = time.monotonic()
    report = run_loop(
        PROFILE,
        lambda s: wrist(0.3),
        5.0,
        host=stub.host,
        realtime=True,
        inject=FaultInjection(drop_sends=(50, 10**6)),
    )
    assert report.exit_reason == "fault" and report.faults == ["watchdog_timeout"], report.message
    assert report.final_mode == "STOPPED"
    assert time.monotonic() - t0 < 4.0  # 50 cycles + the 0.1 s watchdog, not the 5 s run
    assert_one_line(report)
