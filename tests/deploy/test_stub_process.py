"""Client against real stub processes over loopback UDP, in real time, with injected faults.

Each test spawns its own stub (``spawn_stub`` ends it afterwards) and runs for
well under a second of stub time.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from safebot.deploy import __main__ as deploy_main
from safebot.deploy.client import FaultInjection, probe_state, run_loop
from safebot.deploy.policies import JointReach
from safebot.deploy.profiles import load_profile
from safebot.deploy.protocol import (
    Command,
    CommandFlag,
    MsgType,
    RobotMode,
    RobotState,
    pack_command,
    pack_control,
    unpack,
)
from safebot.deploy.ratelimit import RateLimiter
from safebot.deploy.stubs.server import StubProcess

pytestmark = pytest.mark.slow

Spawn = Callable[..., StubProcess]
FR3 = load_profile("franka_fr3")
UR = load_profile("ur5e")
REPORT_KEYS = {"cycles", "missed_deadlines", "compute_us", "faults", "success", "max_commanded"}


def step_policy(profile_dof: int, joint: int, value: float) -> Callable[[RobotState], np.ndarray]:
    """The naive policy: jump straight to ``value`` rad/s on one joint."""
    qd = np.zeros(profile_dof)
    qd[joint] = value

    def policy(state: RobotState) -> np.ndarray:
        return qd

    return policy


def cruise(
    profile_dof: int,
    joint: int,
    value: float,
    *,
    nan_at: int | None = None,
    sleep_at: tuple[int, float] | None = None,
) -> Callable[[RobotState], np.ndarray]:
    """Constant target velocity on one joint; optionally NaN or a stall at a given call."""
    calls = 0

    def policy(state: RobotState) -> np.ndarray:
        nonlocal calls
        calls += 1
        qd = np.zeros(profile_dof)
        qd[joint] = value
        if nan_at is not None and calls >= nan_at:
            qd[joint] = np.nan
        if sleep_at is not None and calls == sleep_at[0]:
            time.sleep(sleep_at[1])
        return qd

    return policy


def test_naive_step_trips_reflex_rate_limited_does_not(spawn_stub: Spawn) -> None:
    """The test that proves the stub bites: same policy, with and without limitRate."""
    stub = spawn_stub("franka_fr3")
    policy = step_policy(7, 0, FR3.limits.joint.velocity[0])  # J1 straight to dq_max
    naive = run_loop(FR3, policy, 0.5, port=stub.port, rate_limit=False)
    assert naive.exit_reason == "fault" and naive.exit_code == 1 and not naive.ok
    assert "joint_motion_generator_acceleration_discontinuity" in naive.faults
    assert "joint_motion_generator_velocity_discontinuity" in naive.faults
    assert naive.cycles <= 2  # the first command is rejected
    state = probe_state(stub.port)
    assert state is not None and state.mode is RobotMode.REFLEX

    # without recovery the latched reflex ends the run before anything is sent
    blocked = run_loop(FR3, policy, 0.5, port=stub.port)
    assert blocked.exit_reason == "fault" and blocked.cycles == 0 and "recover" in blocked.message

    limited = run_loop(FR3, policy, 0.6, port=stub.port, recover=True)
    assert limited.ok, limited.to_json()
    assert limited.faults == [] and limited.exit_code == 0 and limited.cycles > 300
    for kind, (value, limit) in limited.max_commanded.items():
        assert limit is not None and value is not None and value < limit, kind
    assert limited.max_commanded["velocity"][0] == pytest.approx(2.62 - 1e-3, abs=1e-6)
    assert limited.final_mode == "IDLE" and limited.stop_cycles > 0
    assert set(limited.to_dict()) >= REPORT_KEYS
    json.loads(limited.to_json())


def test_packet_loss_burst_beyond_tolerance(spawn_stub: Spawn) -> None:
    stub = spawn_stub("franka_fr3")
    policy = cruise(7, 0, 0.3)
    short = run_loop(FR3, policy, 0.4, port=stub.port, inject=FaultInjection(drop_sends=(100, 8)))
    assert short.ok, short.to_json()
    assert short.sends_dropped == 8 and short.missed_deadlines >= 8
    burst = run_loop(FR3, policy, 0.6, port=stub.port, inject=FaultInjection(drop_sends=(100, 40)))
    assert burst.exit_reason == "fault" and burst.exit_code == 1
    assert burst.faults == ["communication_constraints_violation"], burst.to_json()
    assert "communication_constraints_violation" in burst.message


def test_latency_spikes(spawn_stub: Spawn) -> None:
    stub = spawn_stub("franka_fr3")
    # a 6 ms stall in the policy: the controller extrapolates, the client answers the newest state
    short = run_loop(FR3, cruise(7, 0, 0.5, sleep_at=(150, 0.006)), 0.4, port=stub.port)
    assert short.ok, short.to_json()
    assert short.missed_deadlines >= 4 and short.states_skipped >= 4
    # a command held back 4 ms while accelerating at the limit, then sent
    late = run_loop(
        FR3, cruise(7, 0, 2.0), 0.3, port=stub.port, inject=FaultInjection(delay_send=(60, 0.004))
    )
    assert late.ok, late.to_json()
    # a 60 ms stall is 60 lost cycles: communication_constraints_violation
    long = run_loop(FR3, cruise(7, 0, 0.5, sleep_at=(150, 0.06)), 0.5, port=stub.port)
    assert long.exit_reason == "fault" and long.faults == ["communication_constraints_violation"]


def _newest(s: socket.socket) -> RobotState:
    s.settimeout(0.5)
    msg = unpack(s.recv(4096))
    s.setblocking(False)
    try:
        while True:
            msg = unpack(s.recv(4096))
    except BlockingIOError:
        pass
    assert isinstance(msg, RobotState)
    return msg


def test_stub_drops_a_command_that_answers_an_old_state(spawn_stub: Spawn) -> None:
    """Raw protocol: accelerate at the limit, then send one command computed from a state
    5 cycles old. Applied, it would be a velocity jump back (a reflex); the stub must
    treat it as a late, lost packet instead."""
    stub = spawn_stub("franka_fr3")
    lim = RateLimiter(FR3)
    target = np.array([2.0, 0, 0, 0, 0, 0, 0])
    history: list[RobotState] = []
    seq = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", stub.port))
        s.send(pack_control(MsgType.HELLO, 0, 0))

        def answer(state: RobotState) -> None:
            nonlocal seq
            seq += 1
            qd = lim(target, state.dq_d, state.ddq_d)
            s.send(
                pack_command(
                    Command(seq, time.perf_counter_ns(), state.seq, CommandFlag.NONE, 0.0, qd)
                )
            )

        for _ in range(120):
            history.append(_newest(s))
            answer(history[-1])
        assert history[-1].errors == 0
        assert max(h.ddq_d[0] for h in history[-10:]) > 5.0  # accelerating hard
        answer(history[-6])  # the late one, alone in its cycle
        for _ in range(30):
            history.append(_newest(s))
            answer(history[-1])
        assert history[-1].errors == 0, history[-1].faults
        s.send(pack_control(MsgType.BYE, seq + 1, 0))
    stats = stub.terminate()
    # >= 1: on a loaded machine one of the test's own answers may also arrive late
    assert stats is not None and int(stats["commands_stale"]) >= 1 and stats["errors"] == 0  # type: ignore[call-overload]


def test_nan_policy_stops_safely_and_never_reaches_the_stub(spawn_stub: Spawn) -> None:
    stub = spawn_stub("franka_fr3")
    report = run_loop(FR3, cruise(7, 3, 1.0, nan_at=200), 1.0, port=stub.port)
    assert report.exit_reason == "nonfinite_command", report.to_json()
    assert report.exit_code == 4 and not report.ok and "NaN" in report.message
    # a command computed while a newer state arrived is dropped, not counted: <= 199 sent
    assert 0 < report.cycles < 200 and report.stop_cycles > 10, report.to_json()  # ramped down
    state = probe_state(stub.port)
    assert state is not None
    assert state.errors == 0 and state.mode is RobotMode.IDLE, state.faults
    stats = stub.terminate()
    assert stats is not None and stats["commands_rejected"] == 0 and stats["errors"] == 0, stats


def test_stub_killed_is_detected(spawn_stub: Spawn) -> None:
    stub = spawn_stub("franka_fr3")
    timer = threading.Timer(0.3, stub.kill)
    timer.start()
    t0 = time.perf_counter()
    try:
        report = run_loop(FR3, cruise(7, 0, 0.3), 3.0, port=stub.port)
    finally:
        timer.cancel()
    assert report.exit_reason == "stub_lost" and report.exit_code == 3 and not report.ok
    assert time.perf_counter() - t0 < 1.5  # detected within the tolerance, not at the end
    assert "no state from the controller" in report.message
    assert report.cycles > 50


def test_collision_reflex_in_the_stub(spawn_stub: Spawn) -> None:
    from .test_plant import OBSTACLES

    stub = spawn_stub("franka_fr3", obstacles=[OBSTACLES["franka_fr3"]])
    report = run_loop(FR3, cruise(7, 1, 0.5), 3.0, port=stub.port)
    assert report.exit_reason == "fault"
    assert {"cartesian_reflex", "joint_reflex"} & set(report.faults), report.to_json()


def test_ur_reach_succeeds(spawn_stub: Spawn) -> None:
    stub = spawn_stub("ur5e")
    target = np.asarray(UR.plant.home) + np.array([0.15, -0.1, 0.1, 0.0, 0.1, 0.2])
    policy = JointReach(UR, target, gain=4.0)
    report = run_loop(UR, policy, 1.2, port=stub.port, success_fn=policy.success)
    assert report.ok, report.to_json()
    assert report.success is True and report.final_mode == "IDLE"
    assert report.max_commanded["velocity"][0] <= UR.limits.joint.velocity[0]  # type: ignore[operator]


def test_ur_protective_stop_needs_acknowledgement(spawn_stub: Spawn) -> None:
    stub = spawn_stub("ur5e")
    naive = run_loop(UR, step_policy(6, 0, 3.3), 0.3, port=stub.port, rate_limit=False)
    assert naive.exit_reason == "fault"
    assert set(naive.faults) == {"joint_velocity_violation", "protective_stop"}
    before = probe_state(stub.port)
    assert before is not None and before.mode is RobotMode.PROTECTIVE_STOP
    # plain speedJ commands are ignored while protective-stopped
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(20):
            cmd = Command(
                1000 + i,
                time.perf_counter_ns(),
                0,
                CommandFlag.NONE,
                1.4,
                np.array([0.3, 0, 0, 0, 0, 0.0]),
            )
            s.sendto(pack_command(cmd), ("127.0.0.1", stub.port))
            time.sleep(0.002)
    after = probe_state(stub.port)
    assert after is not None and after.mode is RobotMode.PROTECTIVE_STOP
    assert not after.dq_d.any() and abs(after.q[0] - before.q[0]) < 1e-3
    # acknowledged (unlock protective stop), it moves again
    ok = run_loop(UR, cruise(6, 0, 0.3), 0.3, port=stub.port, recover=True)
    assert ok.ok, ok.to_json()


def test_ur_watchdog_stops_the_program(spawn_stub: Spawn) -> None:
    stub = spawn_stub("ur5e")
    t0 = time.perf_counter()
    report = run_loop(
        UR, cruise(6, 0, 0.3), 2.0, port=stub.port, inject=FaultInjection(drop_sends=(50, 10**6))
    )
    assert report.exit_reason == "fault" and report.faults == ["watchdog_timeout"], report.to_json()
    assert report.final_mode == "STOPPED"
    assert time.perf_counter() - t0 < 1.0  # 50 cycles at 500 Hz + 0.1 s watchdog
    state = probe_state(stub.port)
    assert state is not None and not state.dq_d.any()


def test_module_main_runs_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    code = deploy_main.main(
        ["--controller", "franka_panda", "--seconds", "0.4", "--json", str(out)]
    )
    report = json.loads(out.read_text())
    assert code == 0, report
    assert report["ok"] is True and report["faults"] == [] and set(report) >= REPORT_KEYS
    assert json.loads(capsys.readouterr().out) == report


def test_module_main_exits_nonzero_on_fault(
    spawn_stub: Spawn, capsys: pytest.CaptureFixture[str]
) -> None:
    stub = spawn_stub("franka_fr3")
    run_loop(
        FR3, step_policy(7, 0, 2.0), 0.2, port=stub.port, rate_limit=False
    )  # leave it in Reflex
    code = deploy_main.main(
        ["--controller", "franka_fr3", "--seconds", "0.2", "--port", str(stub.port)]
    )
    assert code == 1
    assert "deploy failed (fault)" in capsys.readouterr().err
