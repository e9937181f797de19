"""Rules that keep the codebase one a newcomer can change (docs/design.md, "Code rules").

Each test walks the source with :mod:`ast` (or reads the text) and lists every
offender as ``file:line`` with the name and, for long functions, the length, so
a failure says exactly what to fix.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "safebot"

#: The longest function allowed outside numba-jitted kernels, in lines from ``def``
#: to its last line, its docstring not counted (documenting never costs budget).
MAX_FUNCTION_LINES = 80

#: Decorators that compile a function with numba: such kernels are written flat on
#: purpose (no calls to Python objects, no closures), so they are exempt from the limit.
JIT_DECORATORS = frozenset({"njit", "jit", "numba.njit", "numba.jit"})

#: Underscore names that are public API by convention: namedtuple's methods and
#: fields, and the interpreter's documented escape hatches.
PUBLIC_UNDERSCORE = frozenset(
    {"_asdict", "_replace", "_make", "_fields", "_field_defaults", "_exit", "_getframe"}
)

#: What a citation of a document outside the repository looks like: the team's notes
#: live outside it, and a reader of the repository cannot follow such a reference.
OUTSIDE_CITATION = re.compile(
    r"(?:\.\./)*\bshared/|\bDESIGN\.md\b|\bSTYLE\.md\b|\brobot_limits\.md\b"
)

#: Where such citations must not appear (tests may name the rule they check).
CITATION_SCOPE = ("safebot", "controllers", "tasks", "docs", "scripts", "assets", "README.md")

#: Files that are not text (read as bytes, they would only produce noise).
BINARY_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".mp4", ".stl", ".obj", ".npz", ".npy", ".pt", ".zip", ".so"}
)


@dataclass(frozen=True)
class Offence:
    """One place that breaks a rule."""

    path: Path
    line: int
    what: str
    size: int = 0  # a function's length, to list the longest first

    def __str__(self) -> str:
        path = self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path
        return f"{path}:{self.line}: {self.what}"


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_data" not in p.parts)


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in PUBLIC_UNDERSCORE


def _report(offences: list[Offence], rule: str) -> str:
    return f"{len(offences)} place(s) break the rule: {rule}\n" + "\n".join(map(str, offences))


# -- (a) private names stay private ------------------------------------------------


def _own_receivers(method: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """The name of a method's own instance or class (its first argument), if it has one."""
    args = method.args.posonlyargs + method.args.args
    if not args or any(_decorator_name(d) == "staticmethod" for d in method.decorator_list):
        return set()
    return {args[0].arg}


def _private_reaches(path: Path, tree: ast.Module) -> Iterator[Offence]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if _is_private(alias.name):
                    module = "." * node.level + (node.module or "")
                    yield Offence(path, node.lineno, f"from {module} import {alias.name}")

    # Attribute access: `x._y` is fine when x is a method's own instance or class (its
    # first argument, also inside closures it defines), `super()` or `type(self)`;
    # anything else reaches into another object's or module's private state.
    def is_own(owner: ast.expr, receivers: set[str]) -> bool:
        if isinstance(owner, ast.Name):
            return owner.id in receivers
        if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name):
            if owner.func.id == "super":
                return True
            return (
                owner.func.id == "type"
                and len(owner.args) == 1
                and is_own(owner.args[0], receivers)
            )
        return False

    def visit(node: ast.AST, receivers: set[str]) -> Iterator[Offence]:
        for child in ast.iter_child_nodes(node):
            inner = receivers
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = _own_receivers(child) if isinstance(node, ast.ClassDef) else receivers
            elif isinstance(child, ast.ClassDef):
                inner = set()
            if isinstance(child, ast.Attribute) and _is_private(child.attr):
                own = is_own(child.value, receivers)
                if not own:
                    yield Offence(path, child.lineno, f"{ast.unparse(child)}")
            yield from visit(child, inner)

    yield from visit(tree, set())


def test_no_module_reaches_into_another_modules_private_names() -> None:
    offences = [o for path in _modules() for o in _private_reaches(path, _parse(path))]
    if offences:
        pytest.fail(
            _report(
                offences,
                "no `from x import _y`, no `obj._y` on anything but self/cls/super() "
                "(make it public, or ask the owner for what you need)",
            ),
            pytrace=False,
        )


# -- (b) functions fit on a screen -------------------------------------------------


def _decorator_name(node: ast.expr) -> str:
    target = node.func if isinstance(node, ast.Call) else node
    return ast.unparse(target)


def _is_jitted(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(_decorator_name(d) in JIT_DECORATORS for d in func.decorator_list)


def _length(func: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    assert func.end_lineno is not None
    lines = func.end_lineno - func.lineno + 1
    first = func.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        assert first.end_lineno is not None
        lines -= first.end_lineno - first.lineno + 1
    return lines


def _long_functions(path: Path, tree: ast.Module) -> Iterator[Offence]:
    def visit(node: ast.AST, qualname: str) -> Iterator[Offence]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                yield from visit(child, f"{qualname}{child.name}.")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                if _is_jitted(child):
                    continue  # a kernel, and whatever it nests
                length = _length(child)
                if length > MAX_FUNCTION_LINES:
                    name = f"{qualname}{child.name}"
                    yield Offence(path, child.lineno, f"{name}: {length} lines", length)
                yield from visit(child, f"{qualname}{child.name}.")

    yield from visit(tree, "")


def test_functions_outside_jitted_kernels_fit_in_80_lines() -> None:
    offences = [o for path in _modules() for o in _long_functions(path, _parse(path))]
    offences.sort(key=lambda o: -o.size)
    if offences:
        pytest.fail(
            _report(
                offences,
                f"functions outside @njit/@jit kernels are at most {MAX_FUNCTION_LINES} lines "
                "(docstring not counted); split them into named steps",
            ),
            pytrace=False,
        )


# -- (c) the repository cites only itself and public sources -----------------------


def _text_files() -> Iterator[Path]:
    for entry in CITATION_SCOPE:
        root = REPO / entry
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if path.suffix.lower() in BINARY_SUFFIXES or "__pycache__" in path.parts:
                continue
            yield path


def _outside_citations(path: Path) -> Iterator[Offence]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return  # binary data under a suffix not listed above
    for number, line in enumerate(text.splitlines(), start=1):
        for match in OUTSIDE_CITATION.finditer(line):
            yield Offence(path, number, f"cites {match.group(0)!r}: {line.strip()[:100]}")


def test_nothing_cites_documents_outside_the_repository() -> None:
    offences = [o for path in _text_files() for o in _outside_citations(path)]
    if offences:
        pytest.fail(
            _report(
                offences,
                "cite docs/design.md or the public source itself, never the team's notes outside "
                "the repository (shared/, DESIGN.md, STYLE.md, robot_limits.md)",
            ),
            pytrace=False,
        )


# -- the checks themselves can fail ------------------------------------------------


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    kernel = ["@numba.njit(cache=True)", "def kernel(x):"] + ["    x += 1"] * 100
    fits = ["def fits(x):", '    """Docstring lines are free."""'] + ["    x += 1"] * 79
    longer = ["def longer(x):"] + ["    x += 1"] * 80
    source = "\n".join(
        [
            "from safebot.kernels import _solve",
            "import numba",
            "class A:",
            "    def __init__(self) -> None:",
            "        self._own = 1",
            "    def peek(self, env):",
            "        return env._revision + self._own + super()._x + env.unwrapped._y",
            "    @classmethod",
            "    def make(cls):",
            "        return cls._registry",
            "    @staticmethod",
            "    def helper(self_like):",
            "        return self_like._z",
            "    def closure(me):",
            "        return lambda: me._own + type(me)._k + type(env)._k",
            "def p(t):",
            "    return t._replace(a=1)",
            "def f(env):",
            "    return env._revision",
            *kernel,
            *fits,
            *longer,
        ]
    )
    tree = ast.parse(source)
    private = [o.what for o in _private_reaches(sample, tree)]
    long = [o.what for o in _long_functions(sample, tree)]
    assert private == [
        "from safebot.kernels import _solve",
        "env._revision",
        "env.unwrapped._y",
        "self_like._z",
        "type(env)._k",
        "env._revision",
    ], private
    assert long == ["longer: 81 lines"], long

    doc = tmp_path / "README.md"
    doc.write_text(
        "See docs/design.md.\nValues: shared/reference/robot_limits.md\n"
        "(../shared/DESIGN.md) and STYLE.md\n"
    )
    lines = [o.line for o in _outside_citations(doc)]
    assert lines == [2, 2, 3, 3, 3], lines
