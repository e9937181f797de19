"""Process-wide settings that safebot's entry points apply; ``import safebot`` applies none.

Environment variables read by native runtimes when they start (OpenMP reads its
wait policy once, when the runtime loads) must be set before the first heavy
import. A library that sets them on import changes its users' processes behind
their back, so only the places where safebot *starts* a process call
:func:`configure_process`: the ``safebot`` command (:func:`safebot.cli.main`) and
the entry scripts in ``scripts/``. Processes those start (the benchmark's worker
pool, SB3's subprocess envs, the deploy stubs) inherit the environment.

Example:
    >>> env = {"OMP_WAIT_POLICY": "ACTIVE", "NUMBA_CACHE_DIR": "/tmp/nb"}
    >>> added = configure_process(env)  # the user's choice wins; the cache gets a keyed folder
    >>> sorted(added), env["OMP_WAIT_POLICY"], env["NUMBA_CACHE_DIR"].startswith("/tmp/nb/safebot-")
    (['NUMBA_CACHE_DIR'], 'ACTIVE', True)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

#: Defaults for variables the user has not set. ``OMP_WAIT_POLICY=PASSIVE``: numba's
#: OpenMP threading layer (``kernels.project_batch``, and the warm-up every ``Shield``
#: runs) otherwise leaves its worker threads spin-waiting between parallel regions; on
#: a 2-core machine shared with other processes that made ``project_batch`` ~100x
#: slower (250 µs instead of 2 µs per problem, ``safebot bench kernels``,
#: docs/benchmarks.md).
#: ``XLA_FLAGS``: JAX (``[train] backend = "jax"``) runs its CPU kernels on one thread, as
#: torch does with ``[train] torch_threads = 1``: the sweeps run one training run per core,
#: and a small MLP's update gains nothing from a second thread it would take from a neighbour.
PROCESS_ENV_DEFAULTS: Mapping[str, str] = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
    # JAX compiles SBX's update afresh in every process (12 s of a tiny run's first 120 steps
    # under load, 4 s with the cache); its persistent cache keys entries by the computation,
    # so unlike numba's it cannot serve stale code. Every compile is kept (they are small).
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
}


_PACKAGE = Path(__file__).resolve().parent
#: The files with cached numba code. numba keys a function's cache on its own file only, so
#: a cached caller in one file keeps running an old callee from another after that file
#: changes (the filter calling the kernel, the rows calling the packed layout).
JIT_SOURCES = ("kernels.py", "shield/packed.py", "shield/rows.py", "shield/kinematics.py",
               "shield/views.py", "shield/filter.py")  # fmt: skip


def jit_fingerprint() -> str:
    """A short hash of :data:`JIT_SOURCES`: changes whenever any jitted source does."""
    h = hashlib.sha256()
    for name in JIT_SOURCES:
        path = _PACKAGE / name
        h.update(name.encode())
        h.update(path.read_bytes() if path.is_file() else b"")
    return h.hexdigest()[:12]


def configure_process(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the :data:`PROCESS_ENV_DEFAULTS` the environment does not already set, give JAX a
    persistent compilation cache (``~/.cache/safebot/jax``), and key numba's cache by
    :func:`jit_fingerprint`.

    ``NUMBA_CACHE_DIR`` (the user's, or ``~/.cache/safebot/numba``) gains a subfolder
    ``safebot-<fingerprint>``, so an edited kernel is never served from a stale cache of
    a function in another file. Call it first thing in an entry point, before numba or
    torch is imported.

    Args:
        environ: the mapping to update; ``os.environ`` when ``None``.

    Returns:
        The variables this call set (empty when the user had set them all).
    """
    env = os.environ if environ is None else environ
    added = {key: value for key, value in PROCESS_ENV_DEFAULTS.items() if key not in env}
    if "JAX_COMPILATION_CACHE_DIR" not in env:
        added["JAX_COMPILATION_CACHE_DIR"] = str(Path.home() / ".cache" / "safebot" / "jax")
    base = env.get("NUMBA_CACHE_DIR") or str(Path.home() / ".cache" / "safebot" / "numba")
    sub = f"safebot-{jit_fingerprint()}"
    if Path(base).name != sub:  # not already keyed (a child process inherits the keyed path)
        added["NUMBA_CACHE_DIR"] = str(Path(base) / sub)
    env.update(added)
    return added


__all__ = ["JIT_SOURCES", "PROCESS_ENV_DEFAULTS", "configure_process", "jit_fingerprint"]
