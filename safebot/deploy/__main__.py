"""``python -m safebot.deploy``: run a built-in policy against a controller (stub).

With ``--robot fr3|panda`` the loop runs through pylibfranka against ``--host`` (or a
stub it starts on loopback); otherwise against the home-made loopback stub of
``--controller`` (or one already running with ``--port``). It runs a joint-space
sinusoid (or, with ``--step J:V``, a constant velocity on one joint) for ``--seconds``,
prints the :class:`~safebot.deploy.report.DeployReport` as JSON and exits with its
``exit_code`` (0 only for a clean run without faults; 2 for bad input).

The fault options exist to show what the controller does with a bad client:
``--no-rate-limit`` sends the policy's output unlimited (a step becomes a reflex),
``--stall-at CYCLE:SECONDS`` holds one command back (>= 20 ms: a communication reflex).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from safebot.deploy.client import FaultInjection, run_loop
from safebot.deploy.policies import SinusoidReach
from safebot.deploy.profiles import ControllerProfile, load_profile
from safebot.deploy.protocol import RobotState
from safebot.deploy.report import DeployReport
from safebot.deploy.stubs.plant import Box
from safebot.spec import SpecError

FRANKA_PROFILES = {"fr3": "franka_fr3", "panda": "franka_panda"}


def _pair(text: str, kinds: tuple[type, type]) -> tuple[int | float, float]:
    a, _, b = text.partition(":")
    try:
        return kinds[0](a), float(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A:B, got {text!r}") from None


def _step_policy(dof: int, joint: int, value: float) -> Callable[[RobotState], np.ndarray]:
    qd = np.zeros(dof)
    qd[joint] = value
    return lambda state: qd


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m safebot.deploy", description=__doc__.split("\n")[0]
    )
    ap.add_argument(
        "--robot",
        choices=sorted(FRANKA_PROFILES),
        default=None,
        help="run through pylibfranka (libfranka's protocol)",
    )
    ap.add_argument("--host", default=None, help="robot / stub address for --robot")
    ap.add_argument("--controller", default="franka_fr3", help="profile: path or shipped name")
    ap.add_argument("--seconds", type=float, default=2.0, help="how long to run the policy")
    ap.add_argument("--port", type=int, default=None, help="use a running stub on 127.0.0.1:PORT")
    ap.add_argument("--amplitude", type=float, default=0.3, help="sinusoid amplitude (rad)")
    ap.add_argument("--period", type=float, default=2.0, help="sinusoid period (s)")
    ap.add_argument(
        "--step",
        default=None,
        type=lambda t: _pair(t, (int, float)),
        metavar="J:V",
        help="constant velocity V (rad/s) on joint J instead",
    )
    ap.add_argument("--no-rate-limit", action="store_true", help="send the policy unlimited")
    ap.add_argument(
        "--stall-at",
        default=None,
        type=lambda t: _pair(t, (int, float)),
        metavar="CYCLE:SECONDS",
        help="hold one command back this long",
    )
    ap.add_argument(
        "--obstacle", action="append", default=[], type=Box.parse, metavar="X,Y,Z,HX,HY,HZ"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    ap.add_argument("--recover", action="store_true", help="clear latched controller errors first")
    ap.add_argument(
        "--realtime", action="store_true", help="SCHED_FIFO for client and stub where permitted"
    )
    args = ap.parse_args(argv)
    name = FRANKA_PROFILES[args.robot] if args.robot else args.controller
    try:
        profile = load_profile(name)
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.step is not None:
        joint, value = int(args.step[0]), float(args.step[1])
        if not 0 <= joint < profile.dof:
            print(f"error: --step joint must be 0..{profile.dof - 1}, got {joint}", file=sys.stderr)
            return 2
        policy: Callable[[RobotState], np.ndarray] = _step_policy(profile.dof, joint, value)
    else:
        policy = SinusoidReach(profile, amplitude=args.amplitude, period_s=args.period)
    inject = None
    if args.stall_at is not None:
        inject = FaultInjection(delay_send=(int(args.stall_at[0]), float(args.stall_at[1])))
    if args.robot is not None:
        return _franka(args, profile, policy, inject)
    if args.host is not None:
        print("error: --host needs --robot fr3|panda", file=sys.stderr)
        return 2

    def go(port: int) -> int:
        report = run_loop(
            profile,
            policy,
            args.seconds,
            port=port,
            recover=args.recover,
            realtime=args.realtime,
            rate_limit=not args.no_rate_limit,
            inject=inject,
        )
        return _emit(report, args.json)

    if args.port is not None:
        return go(args.port)
    with _quiet():
        from safebot.deploy.stubs.server import StubProcess
    with StubProcess(args.controller, obstacles=args.obstacle, realtime=args.realtime) as stub:
        code = go(stub.port)
        stats = stub.terminate()
    if stats is not None:
        print(f"stub: {stats}", file=sys.stderr)
    return code


def _franka(
    args: argparse.Namespace,
    profile: ControllerProfile,
    policy: Callable[[RobotState], np.ndarray],
    inject: FaultInjection | None,
) -> int:
    from safebot.deploy.franka.client import run_loop as franka_loop
    from safebot.deploy.franka.stub import FrankaStubError, spawn_on_free_loopback

    def go(host: str) -> DeployReport:
        with _quiet():  # libfranka logs to stdout; stdout carries the report
            return franka_loop(
                profile,
                policy,
                args.seconds,
                host=host,
                recover=args.recover,
                realtime=args.realtime,
                rate_limit=not args.no_rate_limit,
                inject=inject,
            )

    stats: dict[str, object] | None = None
    if args.host is not None:
        report = go(args.host)
    else:
        try:
            stub = spawn_on_free_loopback(
                args.robot, obstacles=args.obstacle, realtime=args.realtime
            )
        except FrankaStubError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        with stub:
            report = go(stub.host)
            stats = stub.terminate()
    if report.exit_reason == "connect_failed":
        print(f"error: {report.message}", file=sys.stderr)
        return 2
    return _emit(report, args.json, stub=stats)


def _emit(
    report: DeployReport, json_path: Path | None, stub: dict[str, object] | None = None
) -> int:
    d = report.to_dict()
    if stub is not None:
        d["stub"] = stub  # the controller's side: its lost cycles, success rate, reflexes
    text = json.dumps(d, indent=2)
    print(text, flush=True)
    if json_path is not None:
        json_path.write_text(text + "\n", encoding="utf-8")
    if not report.ok:
        print(f"deploy failed ({report.exit_reason}): {report.message}", file=sys.stderr)
    return report.exit_code


def _quiet():  # type: ignore[no-untyped-def]
    from safebot.deploy.run import stdout_to_stderr

    return stdout_to_stderr()


if __name__ == "__main__":
    raise SystemExit(main())
