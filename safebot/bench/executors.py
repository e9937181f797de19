"""Where the runs of a sweep execute: a local process pool (default) or a Ray cluster.

Both executors take a picklable, module-level function and a list of items and
yield ``(item, result_or_exception)`` as each run finishes, so the driver can
report progress and keep going when one run fails. Neither shares state
between runs that could change their numbers:

* every worker process pins torch, OpenMP, MKL and numba to one thread (the
  runs are single-threaded anyway, and several threads per run on a shared
  machine only add contention and non-associative float reductions);
* the local pool starts fresh interpreters (``forkserver``, never ``fork``: the
  driver may hold rich's live display and imported torch) and retires each
  worker after one run, so no run inherits another's interpreter state;
* on Ray each run is one task with ``num_cpus=1`` and ``max_calls=1`` (the same
  one-run-per-process rule), and only the run's numbers travel back to the
  driver.

Example:
    >>> ex = make_executor("local", workers=2)
    >>> for item, result in ex.map_unordered(pow_two, [1, 2, 3]):  # doctest: +SKIP
    ...     print(item, result)
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")

EXECUTORS = ("local", "ray")

# Variables read by the numeric libraries when they start their thread pools.
_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)


def pin_single_thread() -> None:
    """One thread for torch, BLAS and numba in this process (call before heavy imports)."""
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)


def _call_pinned(fn: Callable[[T], R], item: T) -> R:
    pin_single_thread()
    return fn(item)


class Executor(Protocol):
    """Runs ``fn`` over ``items``; yields each item with its result or the exception it raised."""

    name: str
    workers: int

    def map_unordered(
        self, fn: Callable[[T], R], items: Sequence[T]
    ) -> Iterator[tuple[T, R | BaseException]]: ...


class LocalExecutor:
    """A ``concurrent.futures`` process pool of ``workers`` fresh interpreters, one run each."""

    name = "local"

    def __init__(self, workers: int = 1, *, start_method: str = "forkserver") -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if start_method not in ("forkserver", "spawn"):
            raise ValueError(f"start_method must be forkserver or spawn, got {start_method!r}")
        self.workers = workers
        self.start_method = start_method

    def map_unordered(
        self, fn: Callable[[T], R], items: Sequence[T]
    ) -> Iterator[tuple[T, R | BaseException]]:
        if not items:
            return
        ctx = multiprocessing.get_context(self.start_method)
        pool = ProcessPoolExecutor(
            max_workers=min(self.workers, len(items)),
            mp_context=ctx,
            initializer=pin_single_thread,
            max_tasks_per_child=1,
        )
        try:
            pending: dict[Future[R], T] = {pool.submit(fn, item): item for item in items}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    item = pending.pop(fut)
                    err = fut.exception()
                    yield item, (err if err is not None else fut.result())
        finally:
            # on Ctrl-C or an abandoned generator: drop queued runs; running ones
            # get the same SIGINT and leave a checkpoint to resume from
            pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """One Ray task per run (``num_cpus=1``); results are gathered to the driver.

    Args:
        address: a running cluster (``ray start --head`` prints it, or ``"auto"``).
            ``None`` starts a local cluster of ``workers`` CPUs for the sweep and
            stops it afterwards. When this process is already connected to Ray,
            that connection is used and left open.
        workers: CPUs of the local cluster; ignored with an address (the cluster
            decides how many runs execute at once).

    On a cluster of several machines the run directories live on the workers'
    disks; the driver mirrors each finished run's ``metrics.csv`` and
    ``summary.json`` into its own output directory, which is enough to
    aggregate and to skip finished runs on a restart.
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.address = address
        self.workers = workers

    def map_unordered(
        self, fn: Callable[[T], R], items: Sequence[T]
    ) -> Iterator[tuple[T, R | BaseException]]:
        if not items:
            return
        import ray

        started = False
        if not ray.is_initialized():
            if self.address is None:
                ray.init(
                    num_cpus=self.workers,
                    include_dashboard=False,
                    log_to_driver=False,
                    # workers pin their own threads; this keeps Ray's own helpers lean
                    runtime_env={"env_vars": dict.fromkeys(_THREAD_VARS, "1")},
                )
            else:
                ray.init(
                    address=self.address,
                    log_to_driver=False,
                    runtime_env={"env_vars": dict.fromkeys(_THREAD_VARS, "1")},
                )
            started = True
        try:
            remote: Any = ray.remote(num_cpus=1, max_calls=1)(_call_pinned)
            pending: dict[Any, T] = {remote.remote(fn, item): item for item in items}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    item = pending.pop(ref)
                    try:
                        yield item, ray.get(ref)
                    except ray.exceptions.RayTaskError as err:
                        # the worker's own exception, with its message, when it pickles
                        cause = err.as_instanceof_cause()
                        yield item, cause if isinstance(cause, BaseException) else err
                    except ray.exceptions.RayError as err:  # worker died, OOM, ...
                        yield item, err
        finally:
            if started:
                ray.shutdown()


def make_executor(kind: str, *, workers: int = 1, address: str | None = None) -> Executor:
    """``"local"`` -> :class:`LocalExecutor`, ``"ray"`` -> :class:`RayExecutor`.

    Raises:
        ValueError: an unknown kind, fewer than one worker, or an address for ``local``.
    """
    if kind == "local":
        if address is not None:
            raise ValueError("--ray-address needs --executor ray")
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(address, workers)
    raise ValueError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")


__all__ = [
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "make_executor",
    "pin_single_thread",
]
