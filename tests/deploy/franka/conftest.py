"""Fixtures for the Franka tests: stub processes on random loopback addresses, always ended.

libfranka always connects to TCP port 1337, so each stub gets its own 127.x.y.z; a
random one keeps tests of other checkouts on the same machine out of the way.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from safebot.deploy.franka.stub import FrankaStubError, FrankaStubProcess

Spawn = Callable[..., FrankaStubProcess]


def random_loopback() -> str:
    r = random.Random()
    return f"127.{r.randint(1, 254)}.{r.randint(1, 254)}.{r.randint(2, 254)}"


@pytest.fixture
def franka_stub() -> Iterator[Spawn]:
    """``franka_stub("fr3", **kw)`` starts a stub process; all are ended after the test."""
    started: list[FrankaStubProcess] = []

    def spawn(robot: str = "fr3", **kw: Any) -> FrankaStubProcess:
        kw.setdefault("realtime", True)  # SCHED_FIFO where permitted (shared 2-core machine)
        for _ in range(5):
            try:
                stub = FrankaStubProcess(robot, host=random_loopback(), **kw)
            except FrankaStubError as err:
                if "in use" in str(err):
                    continue
                raise
            started.append(stub)
            return stub
        raise RuntimeError("no free loopback address for a stub")

    yield spawn
    for stub in started:
        stub.terminate()


class Run:
    """One client process: exit code, the JSON report (if any), stderr."""

    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.stderr = proc.stderr
        out = proc.stdout.strip()
        self.report: dict[str, Any] | None = json.loads(out) if out.startswith("{") else None


def run_client(args: list[str], timeout_s: float = 90.0) -> Run:
    """``python -m safebot.deploy ARGS`` in its own process (pylibfranka holds the GIL
    while it blocks, so a hung client must not be this process)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "safebot.deploy", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
    )
    return Run(proc)


def error_lines(stderr: str) -> list[str]:
    """stderr without pybullet's banner and the stub's stats line."""
    skip = ("pybullet build time", "stub: ")
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(skip)]
