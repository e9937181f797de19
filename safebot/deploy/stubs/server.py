"""A controller stub: one process, loopback UDP, a PyBullet plant stepped in real time.

Run one with::

    python -m safebot.deploy.stubs.server --profile franka_fr3 --port 0

It binds ``127.0.0.1`` only (``--port 0``: the OS picks a free port), prints one
line ``SAFEBOT-STUB READY port=<N> profile=<name> rate_hz=<R>`` on stdout, and
then runs the controller cycle at the profile's rate until SIGTERM / SIGINT or
``--seconds`` have passed; on exit it prints ``SAFEBOT-STUB STATS {json}``.

Timing: each cycle sleeps until ``t0 + k dt`` (``time.sleep`` for all but the
last ``--spin-us`` microseconds, then a busy wait on ``time.perf_counter``).
When the process wakes up a whole cycle late or more, it steps the plant by
all the elapsed cycles at once (so simulated time keeps up with wall time),
counts an overrun, and treats them as one communication cycle: the stub's own
hiccups never count as the client's lost packets.

From Python, :class:`StubProcess` spawns a stub and always cleans it up.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from safebot.deploy.profiles import ControllerProfile, coerce_profile
from safebot.deploy.protocol import (
    Command,
    Control,
    MsgType,
    ProtocolError,
    RobotState,
    pack_state,
    seq_newer,
    unpack,
)
from safebot.deploy.rt import enter_realtime
from safebot.deploy.stubs.controller import ControllerCore, PlantState
from safebot.deploy.stubs.plant import Box, PybulletPlant

READY_PREFIX = "SAFEBOT-STUB READY"
STATS_PREFIX = "SAFEBOT-STUB STATS"
LOOPBACK = "127.0.0.1"


class StubServer:
    """The cycle loop: receive newest command -> controller checks -> plant step -> send state."""

    def __init__(
        self,
        profile: ControllerProfile | str | Path,
        *,
        port: int = 0,
        obstacles: Sequence[Box] = (),
        spin_us: float = 200.0,
    ) -> None:
        self.profile = coerce_profile(profile)
        self.core = ControllerCore(self.profile)
        self.plant = PybulletPlant(self.profile, obstacles=obstacles)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, port))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.spin_s = spin_us * 1e-6
        self.client: tuple[str, int] | None = None
        self._stop = False
        self.cycles = 0
        self.overruns = 0
        self.skipped_cycles = 0
        self.bad_datagrams = 0
        self.states_sent = 0
        self._late_us: list[float] = []
        self._work_us: list[float] = []
        self._newest: Command | None = None

    def stop(self) -> None:
        self._stop = True

    # -- receive ---------------------------------------------------------------------------
    def _drain(self) -> Command | None:
        newest: Command | None = None
        while True:
            try:
                data, addr = self.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return newest
            except OSError:
                return newest
            try:
                msg = unpack(data)
            except ProtocolError:
                self.bad_datagrams += 1
                continue
            if isinstance(msg, Control):
                if msg.kind is MsgType.HELLO:
                    self.client = addr
                    self._newest = None  # a new session numbers its commands afresh
                elif msg.kind is MsgType.BYE and addr == self.client:
                    self.client = None
            elif isinstance(msg, Command):
                if addr != self.client:
                    self.client = addr
                    self._newest = None
                # keep the newest; drop duplicates and reordered old commands
                if self._newest is None or seq_newer(msg.seq, self._newest.seq):
                    self._newest = msg
                    newest = msg

    # -- send ------------------------------------------------------------------------------
    def _send(self, ps: PlantState) -> None:
        if self.client is None:
            return
        c = self.core
        state = RobotState(
            seq=self.cycles,
            t_ns=time.perf_counter_ns(),
            t_echo_ns=c.cmd_t_ns,
            cmd_seq=c.cmd_seq,
            mode=c.mode,
            lost_consecutive=c.lost_consecutive,
            lost_total=c.lost_total,
            overruns=self.overruns,
            errors=c.errors,
            q=ps.q,
            dq=ps.dq,
            dq_d=c.dq_d,
            ddq_d=c.ddq_d,
            tau_ext=ps.tau_ext,
            wrench=ps.wrench,
            ee_pos=ps.ee_pos,
        )
        try:
            self.sock.sendto(pack_state(state), self.client)
            self.states_sent += 1
        except OSError:
            pass  # the client vanished; its silence is what the controller reacts to

    # -- loop ------------------------------------------------------------------------------
    def run(self, seconds: float | None = None) -> None:
        dt = self.profile.dt
        t_next = time.perf_counter()
        t_end = None if seconds is None else t_next + seconds
        while not self._stop:
            now = time.perf_counter()
            wait = t_next - now
            if wait > 0:
                if wait > self.spin_s:
                    time.sleep(wait - self.spin_s)
                while time.perf_counter() < t_next:
                    pass
                now = time.perf_counter()
            if t_end is not None and now >= t_end:
                break
            late = now - t_next
            n = 1
            if late >= dt:
                n = 1 + int(late / dt)
                self.overruns += 1
                self.skipped_cycles += n - 1
            t_next += n * dt
            self._late_us.append(late * 1e6)
            last_seq = self.cycles - 1 if self.states_sent else None
            self.core.command(self._drain(), now, last_state_seq=last_seq)
            self.plant.step(self.core.target, n)
            ps = self.plant.read()
            self.core.observe(ps)
            self._send(ps)
            self.cycles += 1
            self._work_us.append((time.perf_counter() - now) * 1e6)

    def stats(self) -> dict[str, object]:
        def pct(xs: list[float]) -> dict[str, float]:
            if not xs:
                return {}
            a = np.asarray(xs)
            return {
                "p50": round(float(np.percentile(a, 50)), 1),
                "p99": round(float(np.percentile(a, 99)), 1),
                "p999": round(float(np.percentile(a, 99.9)), 1),
                "max": round(float(a.max()), 1),
            }

        return {
            "profile": self.profile.name,
            "cycles": self.cycles,
            "overruns": self.overruns,
            "skipped_cycles": self.skipped_cycles,
            "late_us": pct(self._late_us),
            "work_us": pct(self._work_us),
            "states_sent": self.states_sent,
            "commands_applied": self.core.commands_applied,
            "commands_rejected": self.core.commands_rejected,
            "commands_stale": self.core.commands_stale,
            "lost_total": self.core.lost_total,
            "bad_datagrams": self.bad_datagrams,
            "mode": self.core.mode.name,
            "errors": self.core.errors,
        }

    def close(self) -> None:
        self.sock.close()
        self.plant.close()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m safebot.deploy.stubs.server", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--profile", required=True, help="controller profile: path or shipped name")
    ap.add_argument("--port", type=int, default=0, help="UDP port on 127.0.0.1 (0: any free port)")
    ap.add_argument(
        "--obstacle",
        action="append",
        default=[],
        type=Box.parse,
        metavar="X,Y,Z,HX,HY,HZ",
        help="static box obstacle (centre, half extents; m); repeatable",
    )
    ap.add_argument("--seconds", type=float, default=None, help="exit after this long")
    ap.add_argument("--spin-us", type=float, default=200.0, help="busy-wait before each cycle")
    ap.add_argument("--realtime", action="store_true", help="run under SCHED_FIFO where permitted")
    args = ap.parse_args(argv)
    server = StubServer(args.profile, port=args.port, obstacles=args.obstacle, spin_us=args.spin_us)

    def _on_signal(signum: int, frame: object) -> None:
        server.stop()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    p = server.profile
    rt = args.realtime and enter_realtime() is not None
    print(
        f"{READY_PREFIX} port={server.port} profile={p.name} rate_hz={p.rate_hz:g} realtime={int(rt)}",
        flush=True,
    )
    try:
        server.run(args.seconds)
    finally:
        print(f"{STATS_PREFIX} {json.dumps(server.stats())}", flush=True)
        server.close()
    return 0


class StubError(RuntimeError):
    """A stub process failed to start."""


class StubProcess:
    """A stub in its own process; a context manager that always ends it.

    Example:
        >>> with StubProcess("franka_fr3") as stub:
        ...     report = run_loop("franka_fr3", policy, 1.0, port=stub.port)
    """

    def __init__(
        self,
        profile: str | Path,
        *,
        obstacles: Sequence[Box] = (),
        seconds: float | None = None,
        spin_us: float = 200.0,
        realtime: bool = False,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.profile = str(profile)
        cmd = [sys.executable, "-m", "safebot.deploy.stubs.server", "--profile", self.profile]
        cmd += ["--port", "0", "--spin-us", str(spin_us)]
        for b in obstacles:
            cmd += ["--obstacle", ",".join(f"{v:g}" for v in (*b.center, *b.half_extents))]
        if seconds is not None:
            cmd += ["--seconds", str(seconds)]
        if realtime:
            cmd.append("--realtime")
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=_child_env()
        )
        self.realtime = False
        self.port = self._await_ready(start_timeout_s)
        self.stats: dict[str, object] | None = None

    def _await_ready(self, timeout_s: float) -> int:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith(READY_PREFIX):
                    fields = dict(kv.split("=", 1) for kv in line.split()[2:])
                    self.realtime = fields.get("realtime") == "1"
                    return int(fields["port"])
                if not line and self.proc.poll() is not None:
                    break
            elif self.proc.poll() is not None:
                break
        self.proc.kill()
        self.proc.wait(timeout=10)
        err = self.stderr_text()[-2000:]
        self.terminate()
        raise StubError(f"stub for {self.profile!r} did not start: {err}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_text(self) -> str:
        if self._stderr.closed:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as when the controller dies (no stats line)."""
        if self.alive():
            self.proc.kill()
        self.proc.wait(timeout=10)

    def terminate(self, timeout_s: float = 5.0) -> dict[str, object] | None:
        """SIGTERM (SIGKILL after ``timeout_s``); returns the stub's stats when it printed them."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            for line in self.proc.stdout.read().splitlines():
                if line.startswith(STATS_PREFIX):
                    self.stats = json.loads(line[len(STATS_PREFIX) :])
            self.proc.stdout.close()
        self._stderr.close()
        return self.stats

    def __enter__(self) -> StubProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # the stub must not compete with the client for the 2 cores through BLAS threads
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    return env


if __name__ == "__main__":
    raise SystemExit(main())
