"""Process-wide settings that safebot's entry points apply; ``import safebot`` applies none.

Environment variables read by native runtimes when they start (OpenMP reads its
wait policy once, when the runtime loads) must be set before the first heavy
import. A library that sets them on import changes its users' processes behind
their back, so only the places where safebot *starts* a process call
:func:`configure_process`: the ``safebot`` command (:func:`safebot.cli.main`) and
the entry scripts in ``scripts/``. Processes those start (the benchmark's worker
pool, SB3's subprocess envs, the deploy stubs) inherit the environment.

Example:
    >>> env = {"OMP_WAIT_POLICY": "ACTIVE"}
    >>> configure_process(env)  # the user's own choice wins
    {}
    >>> env
    {'OMP_WAIT_POLICY': 'ACTIVE'}
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

#: Defaults for variables the user has not set. ``OMP_WAIT_POLICY=PASSIVE``: numba's
#: OpenMP threading layer (``kernels.project_batch``, and the warm-up every ``Shield``
#: runs) otherwise leaves its worker threads spin-waiting between parallel regions; on
#: a 2-core machine shared with other processes that made ``project_batch`` ~100x
#: slower (250 µs instead of 2 µs per problem, ``safebot bench kernels``,
#: docs/benchmarks.md).
PROCESS_ENV_DEFAULTS: Mapping[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}


def configure_process(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the :data:`PROCESS_ENV_DEFAULTS` the environment does not already set.

    Call it first thing in an entry point, before numba or torch is imported.

    Args:
        environ: the mapping to update; ``os.environ`` when ``None``.

    Returns:
        The variables this call set (empty when the user had set them all).
    """
    env = os.environ if environ is None else environ
    added = {key: value for key, value in PROCESS_ENV_DEFAULTS.items() if key not in env}
    env.update(added)
    return added


__all__ = ["PROCESS_ENV_DEFAULTS", "configure_process"]
