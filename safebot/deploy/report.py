"""What one deploy run reports, whichever vendor client ran it (pylibfranka, ur_rtde).

:class:`DeployReport` lives here so that every client returns the same thing.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

ExitReason = Literal[
    "completed",  # ran for the requested time and stopped cleanly
    "fault",  # the controller raised error flags (Reflex / protective stop / watchdog)
    "stub_lost",  # no state from the controller for longer than the tolerance
    "nonfinite_command",  # the policy or filter returned NaN / inf: nothing was sent
    "policy_error",  # the policy or filter raised, or returned the wrong shape
    "connect_failed",  # no controller answered, or it speaks another protocol version
]

EXIT_CODES: dict[str, int] = {
    "completed": 0,
    "fault": 1,
    "stub_lost": 3,
    "nonfinite_command": 4,
    "policy_error": 5,
    "connect_failed": 6,
}


@dataclass
class DeployReport:
    """What happened in one deploy run; ``to_json()`` writes it out.

    ``max_commanded[kind] = [value, limit]`` is taken on the joint and cycle with
    the highest value/limit ratio (``limit`` is ``None`` where the profile
    publishes none; ``value`` then is the largest absolute value). Acceleration
    and jerk are finite differences against the controller's ``dq_d`` / ``ddq_d``,
    as the controller computes them.
    """

    profile: str
    rate_hz: float
    seconds: float
    exit_reason: ExitReason
    message: str
    cycles: int = 0
    missed_deadlines: int = 0
    states_skipped: int = 0
    compute_us: dict[str, float] = field(default_factory=dict)
    response_us: dict[str, float] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    success: bool | None = None
    max_commanded: dict[str, list[float | None]] = field(default_factory=dict)
    duration_s: float = 0.0
    stop_cycles: int = 0
    stub_overruns: int = 0
    sends_dropped: int = 0
    final_mode: str = ""
    realtime: bool = False
    #: longest run of consecutive lost cycles (the Franka reflex fires at 20)
    lost_run_max: int = 0
    #: lowest ``control_command_success_rate`` libfranka reported during the run
    command_success_rate: float | None = None
    #: the controller library that ran the loop (e.g. ``"pylibfranka 0.21.3"``)
    client: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_reason == "completed" and not self.faults

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else EXIT_CODES.get(self.exit_reason, 1) or 1

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["ok"] = self.ok
        d["exit_code"] = self.exit_code
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def percentiles(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {}
    a = np.asarray(xs)
    p50, p99, p999 = np.percentile(a, [50, 99, 99.9])
    return {
        "p50": round(float(p50), 1),
        "p99": round(float(p99), 1),
        "p999": round(float(p999), 1),
        "max": round(float(a.max()), 1),
    }


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr for a while (C-level prints included).

    stdout carries the JSON report; libfranka and pybullet print to it from C.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
