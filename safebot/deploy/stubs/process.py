"""The lifecycle both vendor stubs share when run as a child process of the client.

pylibfranka's connect holds the GIL inside C++ and ur_rtde starts C++ threads of its
own, so a stub is never a thread of the client's process. A subclass starts
``self.proc`` (stdout a text pipe, stderr ``self._stderr``, a temporary file) and sets
:attr:`stats_prefix`; this class ends it (SIGTERM, then SIGKILL), reads the stub's
stats line and closes its files, also as a context manager.
"""

from __future__ import annotations

import json
import subprocess
from types import TracebackType
from typing import IO, Any


class StubChild:
    """A stub process that is always ended (see the module docstring)."""

    stats_prefix = ""
    proc: subprocess.Popen[str]
    _stderr: IO[bytes]
    stats: dict[str, Any] | None = None

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

    def terminate(self, timeout_s: float = 5.0) -> dict[str, Any] | None:
        """SIGTERM (SIGKILL after ``timeout_s``); the stub's stats when it printed them."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            for line in self.proc.stdout.read().splitlines():
                if line.startswith(self.stats_prefix):
                    self.stats = json.loads(line[len(self.stats_prefix) :])
            self.proc.stdout.close()
        if not self._stderr.closed:
            self._stderr.close()
        return self.stats

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate()
