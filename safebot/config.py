"""Validated, frozen config models and the TOML loader every spec and profile goes through.

A malformed file, a missing or unknown key, or an out-of-range value raises
:class:`SpecError` naming the file, the key path and what was allowed — never a
bare ``KeyError`` later in a run.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

import tomli_w
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
    return parse_model(read_toml(path), model, str(path))


def read_toml(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML file (SpecError naming the file when missing or malformed)."""
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
    return data


def _without_none(value: Any) -> Any:
    # TOML has no null: a key whose value is None is left out, at any depth
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value]
    return value


def dump_toml(data: dict[str, Any]) -> str:
    """Write a nested mapping as TOML with ``tomli-w`` (``None`` values are left out).

    ``tomllib`` reads the result back to the same mapping (NaN and infinities
    as TOML's ``nan``/``inf`` floats).

    Raises:
        TypeError: a value TOML cannot hold (the message names its type).
    """
    return tomli_w.dumps(_without_none(data))
