"""``safebot deploy BUNDLE --robot fr3``: the bundle's shielded policy through pylibfranka."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from safebot.deploy.bundle import Bundle

from ..conftest import TIMING_RERUNS
from .conftest import Spawn, error_lines, random_loopback

pytestmark = pytest.mark.slow

pytest.importorskip("pylibfranka")


def _safebot(*args: str, timeout_s: float = 180.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "safebot.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
    )


@TIMING_RERUNS  # 1 kHz through pylibfranka: a scheduling stall loses cycles and the stub faults
def test_deploy_fr3_end_to_end_5s_zero_faults(
    reach_bundle: Callable[[str], Bundle], tmp_path: Path
) -> None:
    """The bundle's shielded policy through pylibfranka at 1 kHz against the FR3 stub."""
    bundle = reach_bundle("full")
    out = tmp_path / "fr3.json"
    proc = _safebot(
        "deploy",
        str(bundle.root),
        "--robot",
        "fr3",
        "--seconds",
        "5",
        "--realtime",
        "--json",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    d = json.loads(out.read_text())
    assert json.loads(proc.stdout) == d
    assert d["ok"] and d["faults"] == [] and d["exit_reason"] == "completed"
    assert d["client"] == "pylibfranka 0.21.3" and d["final_mode"] == "Idle"
    assert d["cycles"] > 2500  # 5000 at 1 kHz on a quiet machine
    assert set(d["compute_us"]) >= {"p50", "p99", "p999"}
    assert isinstance(d["success"], bool)
    for kind in ("velocity", "acceleration", "jerk"):
        value, limit = d["max_commanded"][kind]
        assert limit is not None and value <= limit
    dep = d["deploy"]
    assert dep["robot"] == "fr3" and dep["host"] is None
    assert dep["bundle"]["hash"] == bundle.digest
    # 25 Hz for 5 s; ticks that find the worker busy are skipped (load-dependent, so loose)
    assert 80 <= dep["policy"]["ticks"] <= 135
    assert dep["policy"]["ticks"] + dep["policy"]["late_ticks"] >= 110
    assert dep["kinematics_max_error_m"] < 1e-6  # MuJoCo and PyBullet agree on the arm
    assert dep["shield"]["status"].get("ok", 0) == dep["policy"]["ticks"]
    assert isinstance(dep["final_distance_m"], float)
    assert dep["stub"]["reflexes"] == [] and dep["stub"]["motions"] == 1
    # the task's keep-out box is in the plant
    assert dep["stub_obstacles"] == [[0.5, 0.0, 0.15, 0.05, 0.15, 0.15]]


def test_bundle_for_another_arm_is_one_line_exit_2(reach_bundle: Callable[[str], Bundle]) -> None:
    # a policy that observes the Panda's joints cannot run on the UR5e's six
    proc = _safebot("deploy", str(reach_bundle("full").root), "--robot", "ur5e", "--seconds", "1")
    assert proc.returncode == 2
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "ur5e" in lines[0].lower() or "UR5e" in lines[0]


def test_deploy_to_a_host_that_does_not_answer_is_one_line_exit_2(
    reach_bundle: Callable[[str], Bundle],
) -> None:
    host = random_loopback()
    proc = _safebot(
        "deploy",
        str(reach_bundle("full").root),
        "--robot",
        "fr3",
        "--host",
        host,
        "--seconds",
        "1",
    )
    assert proc.returncode == 2
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and f"{host}:1337" in lines[0]


def test_deploy_to_a_server_of_another_protocol_version_is_one_line_exit_2(
    reach_bundle: Callable[[str], Bundle], franka_stub: Spawn
) -> None:
    stub = franka_stub("fr3", protocol_version=9)
    proc = _safebot(
        "deploy", str(reach_bundle("full").root), "--robot", "fr3", "--host", stub.host,
        "--seconds", "1",
    )  # fmt: skip
    assert proc.returncode == 2
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "ncompatible" in lines[0] and "9" in lines[0]
    assert stub.alive()  # the refused client leaves the robot's side alone
