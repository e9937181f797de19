"""A non-editable install works: build the wheel, install it in a fresh venv, make an env from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SNIPPET = """
import json, sys
import safebot, safebot.envs, safebot.resources
from safebot.spec import load_task
env = safebot.envs.make("reach")
obs, info = env.reset(seed=0)
env.step(env.action_space.sample())
print(json.dumps({
    "package": safebot.__file__,
    "assets": str(safebot.resources.data_dir("assets")),
    "tasks": str(safebot.resources.data_dir("tasks")),
    "task_source": load_task("push").source,
    "sys_path": sys.path,
}))
"""


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
def test_wheel_installs_and_uses_its_own_data(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(REPO)], cwd=tmp_path)
    (wheel,) = dist.glob("safebot-*.whl")

    # A bare venv with just the wheel in it. The dependencies come from the test
    # interpreter's site-packages through a .pth line, which sys.path appends
    # *after* the new venv's own site-packages (and whose own .pth files, such as
    # the editable install's pointer to this checkout, are not processed).
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    py = target / "bin" / "python"
    site = Path(
        _run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path
        ).strip()
    )
    deps = Path(sysconfig.get_path("purelib"))
    (site / "zz_test_deps.pth").write_text(f"{deps}\n")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        cwd=tmp_path,
    )

    # run from outside the checkout, isolated from PYTHONPATH and the user site
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.setdefault("MUJOCO_GL", "egl")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = json.loads(_run([str(py), "-I", "-c", SNIPPET], cwd=elsewhere, env=env).splitlines()[-1])

    installed = site / "safebot"
    assert Path(out["package"]).parent == installed
    assert Path(out["assets"]) == installed / "_data" / "assets"
    assert Path(out["tasks"]) == installed / "_data" / "tasks"
    assert Path(out["task_source"]).is_relative_to(installed / "_data" / "tasks")
    assert not any(p == str(REPO) for p in out["sys_path"])
    for kind in ("assets", "tasks"):
        assert not Path(out[kind]).is_relative_to(REPO)
    assert (installed / "_data" / "assets" / "panda" / "scene_reach.xml").is_file()
    assert (installed / "py.typed").is_file()
