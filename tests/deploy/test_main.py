"""``python -m safebot.deploy`` and ``safebot stub``: both vendors, and bad input on each.

Bad input is one line on stderr, exit status 2 and nothing left running: a host that
does not answer, a server of another protocol version, a stub address in use, a robot or
profile that does not exist or does not fit.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import TIMING_RERUNS
from .franka.conftest import error_lines, random_loopback, run_client

pytestmark = pytest.mark.slow

REPORT_KEYS = {"cycles", "missed_deadlines", "compute_us", "faults", "success", "max_commanded"}


def _one_line(stderr: str) -> str:
    lines = error_lines(stderr)
    assert len(lines) == 1, lines
    assert "Traceback" not in stderr
    return lines[0]


def _bindable(host: str, port: int) -> bool:
    """Whether ``host:port`` is free for a TCP listener (nothing left running on it)."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


@TIMING_RERUNS  # a real-time loop on the shared machine: a stall loses cycles and the stub faults
@pytest.mark.parametrize(("robot", "client"), [("panda", "pylibfranka"), ("ur5e", "ur_rtde")])
def test_module_main_starts_the_stub_runs_and_writes_json(
    tmp_path: Path, robot: str, client: str
) -> None:
    pytest.importorskip("pylibfranka" if robot == "panda" else "rtde_control")
    out = tmp_path / "report.json"
    run = run_client(["--robot", robot, "--seconds", "0.6", "--json", str(out)])
    report = json.loads(out.read_text())
    assert run.code == 0, run.stderr
    assert report["ok"] is True and report["faults"] == [] and set(report) >= REPORT_KEYS
    assert report["client"].startswith(client)
    assert report["stub"] is not None  # the stub this run started, and ended
    assert run.report == report


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--robot", "fr3", "--controller", "ur5e"], "not --robot fr3"),
        (["--robot", "ur5e", "--controller", "franka_fr3"], "not --robot ur5e"),
        (["--robot", "fr3", "--controller", "no_such"], "not found"),
        (["--robot", "ur5e", "--step", "6:0.1"], "--step joint must be 0..5"),
        (["--robot", "ur5e", "--stall-finish", "0.01"], "--robot ur5e has none"),
        (["--robot", "fr3", "--stall-finish", "-0.01"], "--stall-finish needs SECONDS >= 0"),
        (["--robot", "fr3", "--stall-finish", "nan"], "--stall-finish needs SECONDS >= 0"),
        (["--robot", "panda", "--stall-at", "5:-1"], "--stall-at needs CYCLE >= 0"),
    ],
)
def test_module_main_bad_input_is_one_line_exit_2(args: list[str], needle: str) -> None:
    run = run_client([*args, "--seconds", "0.2"])
    assert run.code == 2 and run.report is None
    assert needle in _one_line(run.stderr)


def test_module_main_needs_a_robot() -> None:
    run = run_client(["--seconds", "0.2"])
    assert run.code == 2 and "--robot" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize(("robot", "port"), [("fr3", 1337), ("ur5e", 30004)])
def test_a_host_that_does_not_answer_is_one_line_exit_2(robot: str, port: int) -> None:
    host = random_loopback()
    run = run_client(["--robot", robot, "--host", host, "--seconds", "1"])
    assert run.code == 2 and run.report is None
    line = _one_line(run.stderr)
    assert line.startswith("error: ") and f"{host}:{port}" in line


def test_a_ur_server_of_another_protocol_version_is_one_line_exit_2() -> None:
    from safebot.deploy.ur.stub import StubProcess

    with StubProcess(extra_args=["--protocol-versions", "1"]) as stub:
        run = run_client(["--robot", "ur5e", "--host", stub.host, "--seconds", "1"])
        assert stub.alive()  # the client's failure leaves the robot's side alone
    assert run.code == 2
    assert "refused RTDE protocol version 2" in _one_line(run.stderr)


@pytest.mark.parametrize(("robot", "port"), [("fr3", 1337), ("ur5e", 30004)])
def test_safebot_stub_on_a_taken_address_is_one_line_exit_2(robot: str, port: int) -> None:
    first: object
    if robot == "fr3":
        from safebot.deploy.franka.stub import spawn_on_free_loopback

        first = spawn_on_free_loopback("fr3")
    else:
        from safebot.deploy.ur.stub import StubProcess

        first = StubProcess()
    with first:  # type: ignore[attr-defined]
        host = first.host  # type: ignore[attr-defined]
        proc = subprocess.Popen(
            [sys.executable, "-m", "safebot.cli", "stub", robot, "--host", host],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 2, err
        line = _one_line(err)
        assert "already in use" in line and host in line
        assert first.alive()  # type: ignore[attr-defined]  # the first stub is untouched
    assert _bindable(host, port)  # neither stub left anything listening
