"""Finds the data that ships with safebot: ``assets/``, ``tasks/`` and ``controllers/``.

In a source checkout (and an editable install) they sit at the top of the
repository; in a wheel they are installed under ``safebot/_data/``. Everything
that opens a shipped file goes through :func:`data_dir` / :func:`resolve` so both
layouts work.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Literal

Kind = Literal["assets", "tasks", "controllers"]

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(kind: Kind) -> Path:
    """Directory holding the shipped ``kind`` files (wheel layout first, then checkout)."""
    for candidate in (_PACKAGE_DIR / "_data" / kind, _PACKAGE_DIR.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"safebot data folder {kind!r} not found (looked in {_PACKAGE_DIR / '_data' / kind} "
        f"and {_PACKAGE_DIR.parent / kind}); is the installation complete?"
    )


def resolve(kind: Kind, name: str | Path) -> Path:
    """Resolve ``name`` as an existing path, else relative to the shipped ``kind`` folder.

    ``resolve("tasks", "reach")`` finds ``tasks/reach.toml``;
    ``resolve("assets", "panda/scene.xml")`` finds the Panda scene.

    Raises:
        FileNotFoundError: naming every place that was tried.
    """
    path = Path(name).expanduser()
    tried = [path]
    if path.exists():
        return path.resolve()
    base = data_dir(kind)
    candidates = [base / path]
    if kind in ("tasks", "controllers") and path.suffix != ".toml":
        candidates.append(base / f"{path}.toml")
    for candidate in candidates:
        tried.append(candidate)
        if candidate.exists():
            return candidate.resolve()
    raise FileNotFoundError(
        f"{kind[:-1]} file {str(name)!r} not found; tried: {', '.join(map(str, tried))}"
    )


def available(kind: Kind, pattern: str = "*.toml") -> list[str]:
    """Names (stems) of the shipped files of ``kind`` matching ``pattern``."""
    return sorted(p.stem for p in data_dir(kind).glob(pattern))


#: names the code of a copy without ``.git`` (an export that long runs train from)
CODE_COMMIT_ENV = "SAFEBOT_CODE_COMMIT"


def code_commit() -> dict[str, Any]:
    """The checkout's commit and whether its tracked files differ from it.

    Outside a git checkout (an installed wheel, or an export of the tree, so that
    edits do not reach a running sweep) the commit is ``$SAFEBOT_CODE_COMMIT`` when
    set, else ``None``; ``dirty`` is then ``None`` (unknown).
    """
    root = _PACKAGE_DIR.parent

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    # only the checkout's own repository: an installed package may sit inside another one
    commit = git("rev-parse", "HEAD") if (root / ".git").exists() else None
    if commit is None:
        return {"commit": os.environ.get(CODE_COMMIT_ENV) or None, "dirty": None}
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if dirty is None else bool(dirty)}


def code_label() -> str | None:
    """:func:`code_commit` as one string, ``+dirty`` when tracked files differ (None: unknown)."""
    info = code_commit()
    if info["commit"] is None:
        return None
    return str(info["commit"]) + ("+dirty" if info["dirty"] else "")
