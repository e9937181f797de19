"""``python -m safebot.deploy``: a built-in policy through the vendor's client (Franka or UR).

``--robot fr3|panda`` runs through pylibfranka, ``--robot ur5e`` through ur_rtde, against
``--host`` or, without it, a stub of that robot started on loopback (another process).
It runs a joint-space sinusoid (or, with ``--step J:V``, a constant velocity on one
joint) for ``--seconds``, prints the :class:`~safebot.deploy.report.DeployReport` as
JSON and exits with its ``exit_code`` (0 only for a clean run without faults; 2 for bad
input: an unknown robot or profile, a host that does not answer, another protocol
version, a stub address in use).

The fault options exist to show what the controller does with a bad client:
``--no-rate-limit`` sends the policy's output unlimited (a step becomes a reflex),
``--stall-at CYCLE:SECONDS`` holds one command back (>= 20 ms: a communication reflex
on a Franka, >= 0.1 s the RTDE watchdog on a UR), ``--stall-finish SECONDS`` holds back
the Franka command that ends the motion (its first send then misses its cycle).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from safebot.deploy.loop import FaultInjection
from safebot.deploy.policies import SinusoidReach
from safebot.deploy.profiles import ControllerProfile
from safebot.deploy.report import DeployReport, stdout_to_stderr
from safebot.deploy.robots import ROBOT_CLIENTS, ROBOT_PROFILES, DeployError, robot_profile
from safebot.deploy.state import RobotState
from safebot.deploy.stubs.plant import Box
from safebot.resources import resolve
from safebot.spec import SpecError

Policy = Callable[[RobotState], np.ndarray]


def _pair(text: str, kinds: tuple[type, type]) -> tuple[int | float, float]:
    a, _, b = text.partition(":")
    try:
        return kinds[0](a), float(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A:B, got {text!r}") from None


def _step_policy(dof: int, joint: int, value: float) -> Policy:
    qd = np.zeros(dof)
    qd[joint] = value
    return lambda state: qd


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m safebot.deploy", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("--robot", required=True, choices=list(ROBOT_PROFILES), help="which arm")
    ap.add_argument("--host", default=None, help="robot address; without it a stub starts here")
    ap.add_argument(
        "--controller", default=None, help="a profile (path or shipped name) for that robot"
    )
    ap.add_argument("--seconds", type=float, default=2.0, help="how long to run the policy")
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
        "--stall-finish",
        default=None,
        type=float,
        metavar="SECONDS",
        help="hold the command that ends the motion back this long (Franka)",
    )
    ap.add_argument(
        "--obstacle", action="append", default=[], type=Box.parse, metavar="X,Y,Z,HX,HY,HZ"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    ap.add_argument("--recover", action="store_true", help="clear latched controller errors first")
    ap.add_argument(
        "--realtime", action="store_true", help="SCHED_FIFO for client and stub where permitted"
    )
    return ap


def _policy(args: argparse.Namespace, profile: ControllerProfile) -> Policy:
    if args.step is None:
        return SinusoidReach(profile, amplitude=args.amplitude, period_s=args.period)
    joint, value = int(args.step[0]), float(args.step[1])
    if not 0 <= joint < profile.dof:
        raise DeployError(f"--step joint must be 0..{profile.dof - 1}, got {joint}")
    return _step_policy(profile.dof, joint, value)


def _faults(args: argparse.Namespace) -> FaultInjection | None:
    """The fault options as a :class:`FaultInjection` (``None`` without any).

    Raises:
        DeployError: a negative delay or cycle, or ``--stall-finish`` for an arm whose
            client has no finishing command (ur_rtde ends with ``speedStop``).
    """
    if args.stall_at is None and args.stall_finish is None:
        return None
    if args.stall_at is not None and (args.stall_at[0] < 0 or args.stall_at[1] < 0):
        raise DeployError(f"--stall-at needs CYCLE >= 0 and SECONDS >= 0, got {args.stall_at}")
    if args.stall_finish is not None:
        if ROBOT_CLIENTS[args.robot] != "franka":
            raise DeployError(
                f"--stall-finish holds back the Franka command that ends the motion; "
                f"--robot {args.robot} has none (ur_rtde stops with speedStop)"
            )
        if not args.stall_finish >= 0:
            raise DeployError(f"--stall-finish needs SECONDS >= 0, got {args.stall_finish}")
    return FaultInjection(
        delay_send=None if args.stall_at is None else (int(args.stall_at[0]), args.stall_at[1]),
        delay_finish=args.stall_finish,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        profile, _ = robot_profile(args.robot, args.controller)
        policy = _policy(args, profile)
        inject = _faults(args)
    except (SpecError, DeployError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        report, stats = _run(args, profile, policy, inject)
    except DeployError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if report.exit_reason == "connect_failed":
        print(f"error: {report.message}", file=sys.stderr)
        return 2
    if stats is not None:
        print(f"stub: {stats}", file=sys.stderr)
    return _emit(report, args.json, stub=stats)


def _run(
    args: argparse.Namespace,
    profile: ControllerProfile,
    policy: Policy,
    inject: FaultInjection | None,
) -> tuple[DeployReport, dict[str, object] | None]:
    """The loop through the robot's vendor client, on ``--host`` or a stub started here."""
    if ROBOT_CLIENTS[args.robot] == "franka":
        from safebot.deploy.franka.client import run_loop
    else:
        from safebot.deploy.ur.client import run_loop  # type: ignore[no-redef]

    def go(host: str) -> DeployReport:
        with stdout_to_stderr():  # libfranka logs to stdout; stdout carries the report
            return run_loop(
                profile,
                policy,
                args.seconds,
                host=host,
                recover=args.recover,
                realtime=args.realtime,
                rate_limit=not args.no_rate_limit,
                inject=inject,
            )

    if args.host is not None:
        return go(args.host), None
    path = resolve("controllers", args.controller or ROBOT_PROFILES[args.robot])
    with start_stub(args.robot, path, obstacles=args.obstacle, realtime=args.realtime) as stub:
        report = go(stub.host)
        return report, stub.terminate()


def start_stub(robot: str, profile: Path, *, obstacles: Sequence[Box], realtime: bool) -> Any:
    """A stub of ``robot`` on a free loopback address, in its own process (a context manager).

    The UR stub takes its limits from ``profile``; the Franka stub from the robot's shipped
    profile (libfranka's robot publishes its own limits).

    Raises:
        DeployError: it did not start (e.g. no free address), one line.
    """
    if ROBOT_CLIENTS[robot] == "franka":
        from safebot.deploy.franka.stub import FrankaStubError, spawn_on_free_loopback

        try:
            return spawn_on_free_loopback(robot, obstacles=obstacles, realtime=realtime)
        except FrankaStubError as err:
            raise DeployError(str(err)) from None
    from safebot.deploy.ur.stub import StubError, StubProcess

    try:
        return StubProcess(str(profile), obstacles=obstacles, realtime=realtime)
    except StubError as err:
        raise DeployError(str(err).splitlines()[0]) from None


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


if __name__ == "__main__":
    raise SystemExit(main())
