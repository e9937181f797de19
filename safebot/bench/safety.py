"""``safebot bench safety``: random policies through the filter, every command checked.

Per task, ``steps`` random-policy steps (uniform actions in [-1.2, 1.2], one in a
hundred non-finite; a new random width every episode) go through the
:class:`~safebot.shield.Shield`. Before each step the rows are rebuilt
independently by the test oracle (``tests/oracle.py``: MuJoCo's own Jacobians,
plain NumPy), and the command the filter sent is checked against them. A command
outside the envelope is one whose largest row violation exceeds ``tol`` (scaled
by the row's norm, in the action's physical units). The safe stop is what the
filter answers when it reports ``infeasible`` / ``nonfinite``: those are counted by
status and checked for being the stop.

The oracle lives in the source tree's ``tests/``, not in the wheel: this benchmark
runs from a checkout.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

TOL = 1e-7


def load_oracle() -> ModuleType:
    """``tests/oracle.py`` of the source checkout this package runs from.

    Raises:
        FileNotFoundError: not a source checkout (an installed wheel has no tests/).
    """
    path = Path(__file__).resolve().parents[2] / "tests" / "oracle.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"safebot bench safety needs the test oracle {path}: run it from a source checkout"
        )
    spec = importlib.util.spec_from_file_location("safebot_test_oracle", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_task(task: str, steps: int, seed: int = 0, progress: Any = None) -> dict[str, Any]:
    """Run ``steps`` random steps of ``task`` through the shield, each checked by the oracle."""
    from safebot.envs import make
    from safebot.shield import MujocoArmView, Shield

    oracle = load_oracle()
    env = Shield(make(task))
    arm = env.arm
    assert isinstance(arm, MujocoArmView)
    kin, scale = arm.kin, arm.scale
    rng = np.random.default_rng(seed)
    k = len(scale)
    statuses: dict[str, int] = {}
    outside, bad_stops, worst = 0, 0, -np.inf
    episode = 0
    env.set_width(float(rng.uniform()))
    env.reset(seed=seed)
    t0 = time.perf_counter()
    for i in range(steps):
        rows = oracle.build(oracle.arm_state(kin), env.envelope, scale)
        a = rng.uniform(-1.2, 1.2, k)
        if rng.uniform() < 0.01:
            a[rng.integers(k)] = rng.choice([np.nan, np.inf, -np.inf])
        _, _, terminated, truncated, info = env.step(a)
        status = info["shield/status"]
        statuses[status] = statuses.get(status, 0) + 1
        u = env.last_projected
        if status == "ok":
            norms = np.linalg.norm(rows.A, axis=1) + 1.0
            v = float(np.max((rows.A @ u - rows.b) / norms))
            worst = max(worst, v)
            outside += v > TOL
        elif np.any(u != 0.0):
            bad_stops += 1
        if terminated or truncated:
            episode += 1
            env.set_width(float(rng.uniform()))
            env.reset(seed=seed + episode)
        if progress is not None:
            progress(i)
    env.close()
    return {
        "steps": steps,
        "episodes": episode + 1,
        "status": statuses,
        "outside_envelope": outside,
        "failed_stops": bad_stops,
        "worst_violation": worst,
        "seconds": time.perf_counter() - t0,
    }


def run(
    tasks: list[str], steps: int, seed: int = 0, json_path: Path | None = None
) -> dict[str, Any]:
    """:func:`check_task` for each task, with a progress bar; writes ``json_path``."""
    from rich.progress import Progress

    from safebot.kernels import warmup

    warmup()
    out: dict[str, Any] = {"tol": TOL, "seed": seed, "machine": platform.machine(), "tasks": {}}
    with Progress() as bar:
        for task in tasks:
            job = bar.add_task(task, total=steps)
            out["tasks"][task] = check_task(
                task, steps, seed, progress=lambda i, job=job: bar.update(job, completed=i + 1)
            )
    out["goal_met"] = all(
        r["outside_envelope"] == 0 and r["failed_stops"] == 0 for r in out["tasks"].values()
    )
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(out, indent=2) + "\n")
    return out
