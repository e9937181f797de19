"""``safebot deploy BUNDLE --robot ur5e --host HOST``: bad input through ur_rtde is one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from safebot.deploy.bundle import Bundle
from safebot.deploy.ur.stub import free_loopback_host

from ..franka.conftest import error_lines

pytestmark = pytest.mark.slow

pytest.importorskip("rtde_control")


def _deploy(bundle: Bundle, host: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ["deploy", str(bundle.root), "--robot", "ur5e", "--host", host, "--seconds", "1"]
    return subprocess.run(
        [sys.executable, "-m", "safebot.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, lines
    return lines[0]


def test_a_host_that_does_not_answer_is_one_line_exit_2(
    reach_bundle: Callable[[str], Bundle],
) -> None:
    host = free_loopback_host()
    line = _one_line(_deploy(reach_bundle("cartesian"), host))
    assert f"no RTDE server at {host}:30004" in line


def test_a_server_of_another_protocol_version_is_one_line_exit_2(
    reach_bundle: Callable[[str], Bundle], ur_stub
) -> None:
    stub = ur_stub(extra_args=["--protocol-versions", "1"])
    line = _one_line(_deploy(reach_bundle("cartesian"), stub.host))
    assert "refused RTDE protocol version 2" in line
    assert stub.alive()
