"""Atomic writes: the one helper every file that must survive a ``kill -9`` goes through.

A reader (``--resume``, ``safebot deploy``, a sweep restart) must see either the
old file or the complete new one, never half of it. The recipe is the usual
POSIX one: write a temporary sibling in the *same* directory (``os.replace`` is
atomic only within one file system), flush it to disk, rename it over the
target, then flush the directory entry.

Used by the training package (checkpoints, configs, summaries),
:mod:`safebot.demos` (``demos.npz``) and :mod:`safebot.deploy.bundle` (whole
bundle directories). It lives here, apart from both, so that deploy code does
not import the training stack.

Example:
    >>> with atomic_path(run_dir / "final_model.zip") as tmp:  # doctest: +SKIP
    ...     model.save(tmp)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write"]


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    # the rename itself is durable only once the directory entry is on disk
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a platform without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on a clean exit it replaces ``path`` atomically.

    The temporary name keeps ``path``'s suffix, so writers that append a suffix
    when it is missing (SB3's ``save``, ``np.savez``) write exactly the yielded
    path. On an exception the temporary is removed and ``path`` is untouched.

    Args:
        path: the file (or, with ``directory``, the directory) to create or replace.
        directory: yield an empty temporary directory instead of a file; an
            existing ``path`` is removed just before the rename (a directory
            cannot be renamed over a non-empty one), so a crash in between
            leaves no ``path`` but always a complete temporary sibling.

    Raises:
        OSError: the parent directory cannot be created or written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = f".{path.stem}.", f".tmp{path.suffix}"
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix, suffix=suffix))
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory:
            for p in sorted(tmp.rglob("*")):
                if p.is_file() and not p.is_symlink():
                    _fsync_file(p)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        else:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically (see :func:`atomic_path`)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        tmp.write_bytes(raw)
