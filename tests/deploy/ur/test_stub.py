"""ur_rtde 1.6.5's own interfaces against the UR stub in its own process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from safebot.deploy.profiles import load_profile
from safebot.deploy.ur import rtde
from safebot.deploy.ur.stub import EXIT_PORT_IN_USE, StubProcess

rtde_receive = pytest.importorskip("rtde_receive")
rtde_control = pytest.importorskip("rtde_control")
dashboard_client = pytest.importorskip("dashboard_client")

HOME = np.asarray(load_profile("ur5e").plant.home)


def test_receive_interface_reads_the_plant(ur_stub) -> None:
    stub = ur_stub()
    r = rtde_receive.RTDEReceiveInterface(stub.host)  # ur_rtde's default (full) recipe
    try:
        assert r.isConnected()
        np.testing.assert_allclose(r.getActualQ(), HOME, atol=5e-3)
        t0 = r.getTimestamp()
        time.sleep(0.2)
        assert r.getTimestamp() > t0  # the stream runs
        assert r.getSafetyMode() == rtde.SAFETY_NORMAL
        assert r.getRobotMode() == rtde.ROBOT_MODE_RUNNING
        assert r.getRuntimeState() == rtde.RUNTIME_STOPPED  # no program yet
        assert not r.isProtectiveStopped() and not r.isEmergencyStopped()
        # the cheap getter the client calls several times a cycle
        n = 20000
        t = time.perf_counter()
        for _ in range(n):
            r.getActualQ()
        assert (time.perf_counter() - t) / n < 50e-6  # loose: a loaded CI machine
    finally:
        r.disconnect()


def test_dashboard_answers_ur_rtde(ur_stub) -> None:
    stub = ur_stub()
    db = dashboard_client.DashboardClient(stub.host)
    db.connect()
    try:
        assert db.polyscopeVersion().startswith("5.")  # ur_rtde parses "URSoftware 5.x..."
        assert db.getSerialNumber().isdigit()
        assert db.isInRemoteControl()
        assert "NORMAL" in db.safetystatus()
    finally:
        db.disconnect()


def test_control_interface_speedj_servoj_and_stops(ur_stub) -> None:
    stub = ur_stub()
    r = rtde_receive.RTDEReceiveInterface(stub.host)
    c = rtde_control.RTDEControlInterface(stub.host)  # uploads its script to 30003
    try:
        assert c.isProgramRunning()
        assert c.setWatchdog(2.0)
        for _ in range(150):
            t = c.initPeriod()
            assert c.speedJ([0, 0, 0, 0, 0, 0.4], 2.0, 0.002)
            c.waitPeriod(t)
        assert r.getTargetQd()[5] == pytest.approx(0.4, abs=1e-6)
        assert r.getActualQd()[5] == pytest.approx(0.4, abs=0.05)
        assert c.speedStop(5.0)  # returns once the script reports the arm stopped
        assert np.allclose(r.getTargetQd(), 0.0)
        q0 = np.asarray(r.getActualQ())
        target = q0 + np.array([0, 0, 0, 0, 0, -0.05])
        for _ in range(200):
            t = c.initPeriod()
            c.servoJ(target.tolist(), 0.5, 0.5, 0.002, 0.1, 300)
            c.waitPeriod(t)
        assert not r.isProtectiveStopped()
        assert r.getActualQ()[5] == pytest.approx(target[5], abs=5e-3)
        assert c.servoStop(5.0)
        c.stopScript()
        assert not c.isProgramRunning()
    finally:
        c.disconnect()
        r.disconnect()
    stats = stub.terminate()
    assert stats is not None
    assert stats["commands"]["speedj"] >= 100 and stats["commands"]["servoj"] >= 100
    assert any("stop script" in e for e in stats["events"])


def test_port_in_use_is_one_line_and_exit_code_2(ur_stub) -> None:
    stub = ur_stub()
    proc = subprocess.run(
        [sys.executable, "-m", "safebot.deploy.ur.stub", "--host", stub.host, "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == EXIT_PORT_IN_USE
    err = [ln for ln in proc.stderr.splitlines() if ln and not ln.startswith("pybullet")]
    assert len(err) == 1 and "already in use" in err[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_probe_of_a_silent_server_fails_in_time() -> None:
    srv = socket.socket()
    host = "127.0.0.77"
    try:
        srv.bind((host, rtde.RTDE_PORT))
    except OSError:
        pytest.skip("address taken")
    srv.listen(1)
    try:
        t = time.monotonic()
        with pytest.raises(rtde.ProbeError, match="did not answer"):
            rtde.probe(host, timeout_s=0.5)
        assert time.monotonic() - t < 2.0
    finally:
        srv.close()


def test_stub_process_context_cleans_up() -> None:
    with StubProcess() as stub:
        assert stub.alive()
        pid = stub.pid
    assert not stub.alive()
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)
