"""Fixtures for the deploy tests: stub processes that are always terminated."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from safebot.deploy.stubs.server import StubProcess


@pytest.fixture
def spawn_stub() -> Iterator[Callable[..., StubProcess]]:
    """``spawn_stub(profile, **kw)`` starts a stub process; all are ended after the test."""
    started: list[StubProcess] = []

    def spawn(profile: str, **kw: Any) -> StubProcess:
        # SCHED_FIFO where permitted: on a loaded 2-core machine the stub's own
        # overruns are otherwise the main source of timing noise (docs/deploy.md)
        kw.setdefault("realtime", True)
        stub = StubProcess(profile, **kw)
        started.append(stub)
        return stub

    yield spawn
    for stub in started:
        stub.terminate()
