"""A non-editable install works: build the wheel, install it in a fresh venv, use it from there.

Two installs: one that borrows the test interpreter's packages (fast: checks the
wheel's own files and data), and one that lets pip resolve the declared runtime
dependencies into an isolated venv, no extras, and runs a benchmark end to end
(checks that nothing outside ``[project.dependencies]`` is imported).
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import math
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
    # the tail is where the error is; a whole pip log would bury it
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout


def _outside_env(**extra: str) -> dict[str, str]:
    """This process's environment without PYTHON* (no checkout on sys.path), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.setdefault("MUJOCO_GL", "egl")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout (once for the module)."""
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(REPO)], cwd=dist)
    (built,) = dist.glob("safebot-*.whl")
    return built


@pytest.mark.slow
def test_wheel_installs_and_uses_its_own_data(wheel: Path, tmp_path: Path) -> None:

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
    env = _outside_env()
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


# The CPU wheel scripts/setup.sh installs first: an unpinned torch pulls a multi-GB CUDA build.
TORCH = "torch==2.13.0"
# Dev extras that no runtime dependency pulls in: their absence shows the venv has no extras.
DEV_ONLY = ("pytest", "hypothesis", "quadprog", "osqp", "ray")
# one run keeps the test near 3 minutes: the install and numba's first compile dominate
SCHEDULERS = ("competence",)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wheel_without_extras_runs_the_envelope_benchmark(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(target)
    py = target / "bin" / "python"
    # Versions as in the test interpreter (constraints only narrow versions, they install
    # nothing): the run tests the releases the other tests use, and pip resolves fast.
    constraints = tmp_path / "constraints.txt"
    pins = {d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions()}
    pins.pop("safebot", None)
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()))
    # pip of the test interpreter installs into the new venv (--python); --no-compile
    # skips byte-compiling torch's thousands of files, the slowest part of the install
    pip = [sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--no-compile"]
    pip += ["--constraint", str(constraints)]
    _run([*pip, TORCH], cwd=tmp_path)
    _run([*pip, str(wheel)], cwd=tmp_path)  # resolves [project.dependencies], no extras

    present = _run(
        [
            str(py),
            "-I",
            "-c",
            f"import importlib.util as u; print([m for m in {DEV_ONLY!r} if u.find_spec(m)])",
        ],
        cwd=tmp_path,
    )
    assert present.strip() == "[]", f"dev extras leaked into the venv: {present}"

    out = tmp_path / "bench"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _outside_env(NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    env.pop("OMP_WAIT_POLICY", None)  # the command sets its own default (safebot.runtime)
    stdout = _run(
        [
            str(target / "bin" / "safebot"),
            "bench",
            "envelope",
            "--out",
            str(out),
            "--tasks",
            "reach",
            "--schedulers",
            ",".join(SCHEDULERS),
            "--seeds",
            "1",
            "--steps",
            "64",
            "--eval-every",
            "32",
            "--eval-episodes",
            "1",
            "--no-progress",
        ],
        cwd=elsewhere,
        env=env,
    )

    summary = json.loads((out / "summary.json").read_text())
    for sched in SCHEDULERS:
        cell = summary["results"]["reach"][sched]
        assert cell["seeds"] == [0]
        for total, lo, hi in (
            ("final_success", 0.0, 1.0),
            ("final_width", 0.0, 1.0),
            ("train_cost", 0.0, math.inf),
            ("final_return", -math.inf, 0.0),
        ):
            mean = cell[total]["mean"]
            assert isinstance(mean, float) and math.isfinite(mean), (sched, total, mean)
            assert lo <= mean <= hi, (sched, total, mean)
        assert f"| {sched} | 1 |" in stdout  # the markdown table the command prints

    with (out / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    for sched in SCHEDULERS:
        widths = [r for r in rows if r["scheduler"] == sched and r["metric"] == "width"]
        assert [int(r["step"]) for r in widths] == [32, 64], widths
        assert all(0.0 <= float(r["value"]) <= 1.0 for r in widths)
    assert f"| {SCHEDULERS[0]} | 1 |" in (out / "summary.md").read_text()
    for plot in ("envelope_width.png", "envelope_curves.png", "envelope_tradeoff.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
