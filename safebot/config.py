"""Validated, frozen config models and the TOML loader every spec and profile goes through.

A malformed file, a missing or unknown key, or an out-of-range value raises
:class:`SpecError` naming the file, the key path and what was allowed — never a
bare ``KeyError`` later in a run.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class SpecError(ValueError):
    """A spec or profile file is malformed; the message names the file and the key."""


class Frozen(BaseModel):
    """Base for spec sections: immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "missing required key"
        else:
            msg = e["msg"]
            if "input" in e and not isinstance(e["input"], dict):
                msg += f" (got {e['input']!r})"
        lines.append(f"{source}: [{loc}] {msg}")
    return "\n".join(lines)


def parse_model(data: dict[str, Any], model: type[M], source: str = "<dict>") -> M:
    """Validate a parsed mapping into ``model``; errors name ``source`` and the key path."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_errors(err, source)) from None


def load_model(path: str | Path, model: type[M]) -> M:
    """Read a TOML file into ``model``.

    Raises:
        SpecError: the file is missing, not valid TOML, or fails validation; the
            message names the file and each offending key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found") from None
    except OSError as err:
        raise SpecError(f"{path}: cannot read ({err.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: invalid TOML: {err}") from None
    return parse_model(data, model, str(path))


def dump_toml(data: dict[str, Any]) -> str:
    """Write a nested mapping of scalars, lists and tables as TOML (``None`` values are left out).

    Enough for resolved run configs; ``tomllib`` reads the result back to the same mapping.
    """
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v) if isinstance(v, int) or (v == v and abs(v) != float("inf")) else '"nan"'
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list | tuple):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        raise TypeError(f"cannot write {type(v).__name__} to TOML")

    def table(prefix: str, d: dict[str, Any]) -> None:
        plain = {k: v for k, v in d.items() if v is not None and not isinstance(v, dict)}
        subs = {k: v for k, v in d.items() if isinstance(v, dict)}
        if prefix and (plain or not subs):
            lines.append(f"\n[{prefix}]")
        for k, v in plain.items():
            lines.append(f"{k} = {scalar(v)}")
        for k, v in subs.items():
            table(f"{prefix}.{k}" if prefix else k, v)

    table("", data)
    return "\n".join(lines).lstrip("\n") + "\n"
