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
    ``shielded_step_us = step_us * (1 + overhead)``. Resets are excluded.
    """
    from safebot.envs import make
    from safebot.shield import Shield

    bare = make(task)
    shielded = Shield(make(task))
    shielded.set_width(width)
    scale = shielded.arm.scale
    rng = np.random.default_rng(0)
    warmup = 50  # JIT, caches
    actions = rng.uniform(-1, 1, size=(warmup + steps, len(scale)))
    episode = 0
    bare.reset(seed=episode)
    shielded.reset(seed=episode)
    t_bare, t_shield = np.zeros(len(actions)), np.zeros(len(actions))
    clock = time.perf_counter
    for i, a in enumerate(actions.astype(np.float32)):
        t0 = clock()
        _, _, term, trunc, _ = shielded.step(a)
        t1 = clock()
        sent = shielded.last_projected / scale  # what the shield passed to its env
        t2 = clock()
        bare.step(sent)
        t3 = clock()
        t_shield[i], t_bare[i] = t1 - t0, t3 - t2
        if term or trunc:
            episode += 1
            bare.reset(seed=episode)
            shielded.reset(seed=episode)
    t_bare, t_shield = t_bare[warmup:], t_shield[warmup:]
    step_us = float(np.median(t_bare)) * 1e6
    overhead = float(np.median(t_shield - t_bare)) * 1e6 / step_us
    shielded_us = step_us * (1.0 + overhead)
    return {
        "task": task,
        "width": width,
        "steps": steps,
        "step_us": step_us,
        "shielded_step_us": shielded_us,
        "overhead": overhead,
        "machine": platform.processor() or platform.machine(),
    }


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
