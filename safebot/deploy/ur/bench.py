"""Benchmark: the UR loop through ur_rtde 1.6.5 against the stub, N seconds at 500 Hz.

    python -m safebot.deploy.ur.bench --seconds 60 --out docs/results/deploy_ur5e_rtde_60s.json

Writes client compute time percentiles (policy + rate limiting + ``speedJ``),
controller cycles without a new command (from the RTDE timestamps the client
answered), the longest run of consecutive ones, the stub's own view (overruns,
cycles it stepped without a new speedJ package), the cost of one
``getActualQ()`` call, and the machine's load: the figures depend on what else
runs on the machine, so they are reported with it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from safebot.deploy.profiles import load_profile
from safebot.deploy.state import RobotState
from safebot.deploy.ur.client import run_loop
from safebot.deploy.ur.stub import StubProcess


def _getter_cost_us(host: str, n: int = 100_000) -> float:
    import rtde_receive

    r = rtde_receive.RTDEReceiveInterface(host)
    try:
        r.getActualQ()
        t = time.perf_counter()
        for _ in range(n):
            r.getActualQ()
        return (time.perf_counter() - t) / n * 1e6
    finally:
        r.disconnect()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m safebot.deploy.ur.bench", description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--out", type=Path, default=None, help="JSON result file")
    ap.add_argument("--no-realtime", action="store_true", help="no SCHED_FIFO for stub and loop")
    args = ap.parse_args(argv)
    realtime = not args.no_realtime
    prof = load_profile("ur5e")
    dt = prof.dt

    def policy(s: RobotState) -> np.ndarray:
        # every joint swings +-0.19 rad at 0.25 Hz: motion without reaching any limit
        t = s.seq * dt
        return 0.3 * np.sin(2 * math.pi * 0.25 * t + np.arange(6))

    load_before = os.getloadavg()
    with StubProcess(realtime=realtime) as stub:
        getter_us = _getter_cost_us(stub.host)
        extra: dict[str, Any] = {}
        report = run_loop(
            prof, policy, args.seconds, host=stub.host, realtime=realtime, stats=extra
        )
        stub_stats = stub.terminate()
    load_after = os.getloadavg()
    result = {
        "command": "python -m safebot.deploy.ur.bench --seconds "
        f"{args.seconds:g}{' --no-realtime' if not realtime else ''}",
        "ur_rtde": "1.6.5",
        "rate_hz": prof.rate_hz,
        "seconds": args.seconds,
        "cycles": report.cycles,
        "expected_cycles": round(args.seconds * prof.rate_hz),
        "compute_us": report.compute_us,
        "speedj_call_us": extra.get("speedj_us"),
        "response_us": report.response_us,
        "lost_cycles": {
            "client_unanswered_states": report.missed_deadlines,
            "client_longest_run": extra.get("longest_lost_run"),
            "controller_cycles_without_new_command": (stub_stats or {}).get(
                "cycles_without_new_command"
            ),
            "controller_longest_run": (stub_stats or {}).get("longest_run_without_new_command"),
            "definitions": (
                "client: controller states (RTDE timestamps) the loop never answered; "
                "controller: stub cycles, while the arm moved, in which no new speedJ package "
                "had arrived (a late package lands in the next cycle with the one after it)"
            ),
        },
        "exit_reason": report.exit_reason,
        "message": report.message,
        "realtime": {"client": report.realtime, "stub": stub.realtime},
        "getActualQ_us": round(getter_us, 3),
        "stub": stub_stats,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in load_after],
            "note": "shared with other agents' jobs during the run: figures include their load",
        },
    }
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0 if report.ok else report.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
