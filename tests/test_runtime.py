"""Process defaults: applied by safebot's entry points, never by ``import safebot``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import safebot.cli
from safebot.runtime import PROCESS_ENV_DEFAULTS, configure_process, jit_fingerprint

REPO = Path(__file__).resolve().parents[1]

# Prints the variables that importing the package added, changed or removed.
_IMPORT_DIFF = """
import json, os
before = dict(os.environ)
import safebot
after = dict(os.environ)
print(json.dumps({k: [before.get(k), after.get(k)]
                  for k in before.keys() | after.keys() if before.get(k) != after.get(k)}))
"""


def test_import_safebot_leaves_the_environment_alone() -> None:
    env = {k: v for k, v in os.environ.items() if k not in PROCESS_ENV_DEFAULTS}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_DIFF],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    changed = json.loads(proc.stdout.splitlines()[-1])
    assert changed == {}, f"import safebot changed os.environ: {changed}"


def test_configure_process_sets_only_what_is_unset() -> None:
    env: dict[str, str] = {"NUMBA_CACHE_DIR": "/tmp/nb"}
    keyed = f"/tmp/nb/safebot-{jit_fingerprint()}"
    single = "--xla_cpu_multi_thread_eigen=false"
    jax_cache = str(Path.home() / ".cache" / "safebot" / "jax")
    want = {
        "OMP_WAIT_POLICY": "PASSIVE",
        "XLA_FLAGS": single,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_COMPILATION_CACHE_DIR": jax_cache,
        "NUMBA_CACHE_DIR": keyed,
    }
    assert configure_process(env) == want
    assert env == want
    assert configure_process(env) == {}  # idempotent: a child process inherits the keyed path

    users = {k: "" for k in want} | {"OMP_WAIT_POLICY": "ACTIVE", "NUMBA_CACHE_DIR": keyed}
    assert configure_process(users) == {}
    assert users["OMP_WAIT_POLICY"] == "ACTIVE" and users["XLA_FLAGS"] == ""


def test_the_numba_cache_is_keyed_by_every_jitted_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """numba keys a cache on the function's own file: an edited kernel must not be served from
    a stale cache of the filter that calls it, so any jitted source changes the folder."""
    import safebot.runtime as rt

    pkg = tmp_path / "safebot"
    for name in rt.JIT_SOURCES:
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text((REPO / "safebot" / name).read_text())
    monkeypatch.setattr(rt, "_PACKAGE", pkg)
    before = rt.jit_fingerprint()
    assert before == jit_fingerprint()  # same sources, same key
    kernel = pkg / "kernels.py"
    kernel.write_text(kernel.read_text() + "\n# edited\n")
    assert rt.jit_fingerprint() != before
    jitted = {str(p.relative_to(REPO / "safebot")) for p in (REPO / "safebot").rglob("*.py")
              if "@njit" in p.read_text()}  # fmt: skip
    assert jitted <= set(rt.JIT_SOURCES), f"jitted sources missing from JIT_SOURCES: {jitted}"


def test_cli_main_applies_the_defaults_before_any_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    seen: list[str | None] = []
    monkeypatch.setattr(safebot.cli, "app", lambda: seen.append(os.environ.get("OMP_WAIT_POLICY")))
    safebot.cli.main()
    assert seen == ["PASSIVE"]

    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    safebot.cli.main()
    assert seen == ["PASSIVE", "ACTIVE"]
