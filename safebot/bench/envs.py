"""Environment and shield step-time benchmarks, measured side by side in one process.

Absolute times on shared machines are noisy; the ratios (Reach vs FetchReach,
shielded vs bare) are what the docs report.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _time_steps(
    env: Any, steps: int, seed: int = 0, policy: Callable[[], np.ndarray] | None = None
) -> float:
    """Median over 5 blocks of the mean step time (µs); resets are excluded."""
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    shape = env.action_space.shape
    actions = rng.uniform(-1, 1, size=(steps, *shape)).astype(np.float32)
    for a in actions[: min(50, steps)]:  # warm-up (JIT, caches)
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    blocks = []
    per = max(steps // 5, 1)
    for b in range(5):
        total = 0.0
        for a in actions[b * per : (b + 1) * per]:
            t0 = time.perf_counter()
            _, _, term, trunc, _ = env.step(a)
            total += time.perf_counter() - t0
            if term or trunc:
                env.reset()
        blocks.append(total / per * 1e6)
    return float(np.median(blocks))


def bench_shield(task: str = "reach", steps: int = 2000, width: float = 0.5) -> dict[str, Any]:
    """``env.step`` of a task with and without the shield (same run). Keys: step_us, shielded_step_us, overhead.

    Both envs simulate the *same* motion: each step the shielded env steps on a
    random action, then the bare env (same seed) steps on the command the shield
    sent, so physics costs the same on both sides (a bare env on raw random
    actions hits obstacles and joint limits the shielded one avoids, which
    changes the physics time, not the shield's). Timing alternates every step,
    so machine noise hits both alike, and the overhead is the median of the
    per-step differences (a pair shares its physics, so the difference is the
    shield's time plus noise); ``step_us`` is the median bare step and
    ``shielded_step_us = step_us * (1 + overhead)``. ``cpu_*`` are the same from the
    thread's CPU time (robust to other processes on a shared machine), and
    ``filter_hot_us`` is the filter's own work per call back to back. Resets are excluded.
    """
    from safebot.envs import make
    from safebot.shield import Shield

    bare = make(task)
    shielded = Shield(make(task))
    shielded.set_width(width)
    scale = shielded.filter.scale
    rng = np.random.default_rng(0)
    warmup = 50  # JIT, caches
    actions = rng.uniform(-1, 1, size=(warmup + steps, len(scale)))
    episode = 0
    bare.reset(seed=episode)
    shielded.reset(seed=episode)
    # wall clock and this thread's CPU time: the second does not count time the OS gave to
    # other processes, so it stays meaningful on a loaded shared machine
    clocks = (time.perf_counter, time.thread_time)
    t = np.zeros((2, 2, len(actions)))  # clock, (bare, shielded), step
    for i, a in enumerate(actions.astype(np.float32)):
        t0 = [c() for c in clocks]
        _, _, term, trunc, _ = shielded.step(a)
        t1 = [c() for c in clocks]
        sent = shielded.last_projected / scale  # what the shield passed to its env
        t2 = [c() for c in clocks]
        bare.step(sent)
        t3 = [c() for c in clocks]
        for j in range(2):
            t[j, 0, i], t[j, 1, i] = t3[j] - t2[j], t1[j] - t0[j]
        if term or trunc:
            episode += 1
            bare.reset(seed=episode)
            shielded.reset(seed=episode)
    t = t[:, :, warmup:]
    step_us, cpu_step_us = (float(np.median(t[j, 0])) * 1e6 for j in range(2))
    overhead = float(np.median(t[0, 1] - t[0, 0])) * 1e6 / step_us
    cpu_overhead = float(np.median(t[1, 1] - t[1, 0])) * 1e6 / cpu_step_us
    shielded_us = step_us * (1.0 + overhead)
    filter_us = _filter_hot_us(shielded)
    return {
        "task": task,
        "width": width,
        "steps": steps,
        "step_us": step_us,
        "shielded_step_us": shielded_us,
        "overhead": overhead,
        "cpu_step_us": cpu_step_us,
        "cpu_overhead": cpu_overhead,
        "filter_hot_us": filter_us,
        "machine": platform.processor() or platform.machine(),
    }


def _filter_hot_us(env: Any, calls: int = 20000) -> float:
    """The filter's own work per call when hot: the same state and action back to back
    (median of 5 blocks, thread CPU time)."""
    f, a = env.filter, np.array([0.3, -0.2, 0.1])[: env.filter.k]
    if len(a) < f.k:
        a = np.resize(a, f.k)
    for _ in range(1000):
        f.filter(a)
    blocks = []
    for _ in range(5):
        t0 = time.thread_time()
        for _ in range(calls // 5):
            f.filter(a)
        blocks.append((time.thread_time() - t0) / (calls // 5) * 1e6)
    return float(np.median(blocks))


def bench_envs(steps: int = 2000) -> dict[str, Any]:
    """``env.step`` of every safebot task and of gymnasium-robotics ``FetchReach-v4`` in one run."""
    import gymnasium as gym
    import gymnasium_robotics

    from safebot.envs import make

    gym.register_envs(gymnasium_robotics)
    fetch = gym.make("FetchReach-v4").unwrapped
    out: dict[str, Any] = {"steps": steps, "step_us": {}}
    out["step_us"]["FetchReach-v4"] = _time_steps(fetch, steps)
    for task in ("reach", "reach_joint", "push", "press"):
        out["step_us"][task] = _time_steps(make(task), steps)
    base = out["step_us"]["FetchReach-v4"]
    out["ratio_vs_fetchreach"] = {k: v / base for k, v in out["step_us"].items()}
    return out
