"""Atomic writes (safebot.io): the target is the old or the complete new file, never half of one."""

from __future__ import annotations

from pathlib import Path

import pytest

from safebot.io import atomic_path, atomic_write


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_atomic_write_replaces_text_and_bytes_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "summary.json"  # the parent is created
    atomic_write(target, "first")
    atomic_write(target, "zweite \u00e9")
    assert target.read_text(encoding="utf-8") == "zweite \u00e9"
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert _siblings(target) == ["summary.json"]


def test_the_temporary_keeps_the_suffix_so_suffix_adding_writers_write_it(tmp_path: Path) -> None:
    # SB3's save() and np.savez append .zip / .npz to a path without that suffix
    with atomic_path(tmp_path / "model_64.zip") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".zip" and tmp.name.startswith(".")
        assert tmp.exists()  # reserved, so two writers never share a name
        tmp.write_bytes(b"zip")
    assert (tmp_path / "model_64.zip").read_bytes() == b"zip"


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "latest.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert _siblings(target) == ["latest.json"]


def test_directory_mode_replaces_a_whole_directory(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "stale.txt").write_text("from the last export")
    with atomic_path(out, directory=True) as tmp:
        assert tmp.is_dir() and not any(tmp.iterdir())
        (tmp / "a").mkdir()
        (tmp / "a" / "policy.pt").write_bytes(b"pt")
    assert sorted(p.name for p in out.rglob("*")) == ["a", "policy.pt"]
    assert _siblings(out) == ["bundle"]


def test_directory_mode_keeps_the_old_directory_when_the_writer_fails(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    with pytest.raises(ValueError), atomic_path(out, directory=True) as tmp:
        (tmp / "manifest.json").write_text("partial")
        raise ValueError("bad policy")
    assert (out / "manifest.json").read_text() == "{}"
    assert _siblings(out) == ["bundle"]
