"""The training package stays readable: no function over 80 lines, train() itself under 50."""

from __future__ import annotations

import ast
from pathlib import Path

import safebot.train

PACKAGE = Path(safebot.train.__file__).parent


def _lengths() -> dict[str, int]:
    out = {}
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                out[f"{path.name}:{node.name}"] = node.end_lineno - node.lineno + 1
    return out


def test_no_function_of_the_training_package_is_over_80_lines() -> None:
    lengths = _lengths()
    assert "run.py:train" in lengths
    assert lengths["run.py:train"] <= 50, lengths["run.py:train"]
    long = {name: n for name, n in lengths.items() if n > 80}
    assert not long, long
