"""The data resolver: shipped names resolve in the checkout, misses name every place tried."""

from __future__ import annotations

from pathlib import Path

import pytest

from safebot import resources
from safebot.resources import available, data_dir, resolve

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind", ["assets", "tasks"])
def test_data_dir_is_the_checkout_folder(kind: str) -> None:
    # the tests run from a checkout (editable install): no safebot/_data there
    assert data_dir(kind) == REPO / kind  # type: ignore[arg-type]


def test_resolve_shipped_task_by_name_and_with_suffix() -> None:
    expected = (REPO / "tasks" / "reach.toml").resolve()
    assert resolve("tasks", "reach") == expected
    assert resolve("tasks", "reach.toml") == expected


def test_resolve_shipped_asset() -> None:
    path = resolve("assets", "panda/scene_reach.xml")
    assert path == (REPO / "assets" / "panda" / "scene_reach.xml").resolve()
    assert path.is_file()


def test_resolve_an_existing_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = tmp_path / "reach.toml"
    own.write_text("# mine\n")
    assert resolve("tasks", own) == own.resolve()
    monkeypatch.chdir(tmp_path)  # a relative path to an existing file beats the shipped name
    assert resolve("tasks", "reach.toml") == own.resolve()


def test_resolve_returns_absolute_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert resolve("tasks", "tasks/reach.toml").is_absolute()


def test_available_lists_the_shipped_tasks() -> None:
    names = available("tasks")
    assert {"reach", "reach_joint", "push", "press"} <= set(names)
    assert names == sorted(p.stem for p in (REPO / "tasks").glob("*.toml"))


@pytest.mark.parametrize(
    ("kind", "name", "expect"),
    [
        (
            "tasks",
            "no_such_task",
            ["no_such_task", "tasks/no_such_task", "tasks/no_such_task.toml"],
        ),
        ("assets", "panda/nope.xml", ["panda/nope.xml", "assets/panda/nope.xml"]),
    ],
)
def test_missing_file_lists_every_place_tried(kind: str, name: str, expect: list[str]) -> None:
    with pytest.raises(FileNotFoundError) as exc:
        resolve(kind, name)  # type: ignore[arg-type]
    msg = str(exc.value)
    assert repr(name) in msg
    tried = msg.split("tried:", 1)[1]
    for place in expect:
        assert place in tried, f"{place!r} not among the places tried: {msg}"
    assert str(REPO / expect[-1]) in tried


def test_wheel_layout_is_preferred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a fake installed package: <pkg>/_data/tasks beside an (absent) checkout
    pkg = tmp_path / "site" / "safebot"
    (pkg / "_data" / "tasks").mkdir(parents=True)
    (pkg / "_data" / "tasks" / "solo.toml").write_text("")
    monkeypatch.setattr(resources, "_PACKAGE_DIR", pkg)
    assert data_dir("tasks") == pkg / "_data" / "tasks"
    assert resolve("tasks", "solo") == (pkg / "_data" / "tasks" / "solo.toml").resolve()
    assert available("tasks") == ["solo"]


def test_missing_data_folder_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "site" / "safebot"
    pkg.mkdir(parents=True)
    monkeypatch.setattr(resources, "_PACKAGE_DIR", pkg)
    with pytest.raises(FileNotFoundError) as exc:
        data_dir("assets")
    msg = str(exc.value)
    assert str(pkg / "_data" / "assets") in msg
    assert str(tmp_path / "site" / "assets") in msg
