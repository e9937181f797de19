"""Opt-in SCHED_FIFO for the control loops: granted and restored, or cleanly refused."""

from __future__ import annotations

import os

import pytest

from safebot.deploy.rt import enter_realtime


def test_enter_realtime_and_restore() -> None:
    if not hasattr(os, "sched_getscheduler"):
        pytest.skip("no POSIX scheduling API on this platform")
    before = os.sched_getscheduler(0)
    restore = enter_realtime(priority=1)
    if restore is None:
        assert os.sched_getscheduler(0) == before  # refused: nothing changed
        pytest.skip("SCHED_FIFO not permitted here")
    try:
        assert os.sched_getscheduler(0) == os.SCHED_FIFO
        assert os.sched_getparam(0).sched_priority == 1
    finally:
        restore()
    assert os.sched_getscheduler(0) == before
