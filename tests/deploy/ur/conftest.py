"""Fixtures for the UR tests: UR stub processes on free loopback addresses, always ended."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from safebot.deploy.ur.stub import StubProcess


@pytest.fixture
def ur_stub() -> Iterator[Callable[..., StubProcess]]:
    """``ur_stub(**kw)`` starts a UR stub process; all are ended after the test."""
    started: list[StubProcess] = []

    def spawn(**kw: Any) -> StubProcess:
        # SCHED_FIFO where permitted: the stub's own overruns are otherwise the
        # main timing noise on a loaded machine (docs/deploy.md, Performance)
        kw.setdefault("realtime", True)
        stub = StubProcess(**kw)
        started.append(stub)
        return stub

    yield spawn
    for stub in started:
        stub.terminate()
