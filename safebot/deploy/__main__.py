"""``python -m safebot.deploy``: run a built-in policy against a controller stub.

Spawns a stub for the profile (or talks to one already running with
``--port``), runs a joint-space sinusoid reach for ``--seconds``, prints the
:class:`~safebot.deploy.client.DeployReport` as JSON and exits with its
``exit_code`` (0 only for a clean run without faults).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from safebot.deploy.client import run_loop
from safebot.deploy.policies import SinusoidReach
from safebot.deploy.profiles import load_profile
from safebot.deploy.stubs.plant import Box
from safebot.deploy.stubs.server import StubProcess
from safebot.spec import SpecError


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m safebot.deploy", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--controller", default="franka_fr3", help="profile: path or shipped name")
    ap.add_argument("--seconds", type=float, default=2.0, help="how long to run the policy")
    ap.add_argument("--port", type=int, default=None, help="use a running stub on 127.0.0.1:PORT")
    ap.add_argument("--amplitude", type=float, default=0.3, help="sinusoid amplitude (rad)")
    ap.add_argument("--period", type=float, default=2.0, help="sinusoid period (s)")
    ap.add_argument(
        "--obstacle", action="append", default=[], type=Box.parse, metavar="X,Y,Z,HX,HY,HZ"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    ap.add_argument("--recover", action="store_true", help="clear latched controller errors first")
    ap.add_argument(
        "--realtime", action="store_true", help="SCHED_FIFO for client and stub where permitted"
    )
    args = ap.parse_args(argv)
    try:
        profile = load_profile(args.controller)
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    policy = SinusoidReach(profile, amplitude=args.amplitude, period_s=args.period)

    def go(port: int) -> int:
        report = run_loop(
            profile, policy, args.seconds, port=port, recover=args.recover, realtime=args.realtime
        )
        text = report.to_json()
        print(text)
        if args.json is not None:
            args.json.write_text(text + "\n", encoding="utf-8")
        if not report.ok:
            print(f"deploy failed ({report.exit_reason}): {report.message}", file=sys.stderr)
        return report.exit_code

    if args.port is not None:
        return go(args.port)
    with StubProcess(args.controller, obstacles=args.obstacle, realtime=args.realtime) as stub:
        code = go(stub.port)
        stats = stub.terminate()
    if stats is not None:
        print(f"stub: {stats}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
