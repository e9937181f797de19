"""Opt-in real-time scheduling for the control loops (Linux SCHED_FIFO).

libfranka raises its control thread to the highest SCHED_FIFO priority
(``RealtimeConfig::kEnforce``); on a loaded machine that, not the code, decides
whether a 1 kHz loop keeps its deadlines. Here it is opt-in (``realtime=True``
/ ``--realtime``) and falls back silently where it is not permitted.
"""

from __future__ import annotations

import os
from collections.abc import Callable

#: below the kernel's own threaded IRQs (50) would starve networking; 40 is plenty
DEFAULT_PRIORITY = 40


def enter_realtime(priority: int = DEFAULT_PRIORITY) -> Callable[[], None] | None:
    """Put this process under SCHED_FIFO at ``priority``.

    Returns:
        A function that restores the previous policy, or ``None`` when the
        platform or the permissions do not allow it (nothing changed then).
    """
    setter = getattr(os, "sched_setscheduler", None)
    if setter is None:
        return None
    try:
        old_policy = os.sched_getscheduler(0)
        old_param = os.sched_getparam(0)
        setter(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError:
        return None

    def restore() -> None:
        try:
            os.sched_setscheduler(0, old_policy, old_param)
        except OSError:
            pass

    return restore
