"""Training evaluations: which episodes the scheduler and the best model are judged on."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

import safebot.train.callbacks as callbacks
from safebot.train import RunOptions, train
from safebot.train.callbacks import EVAL_SEEDS, evaluation_seed


def test_every_evaluation_draws_new_episodes_inside_the_held_out_range() -> None:
    episodes = 20
    firsts = [evaluation_seed(3, k, episodes) for k in range(1, 200)]
    ranges = [set(range(f, f + episodes)) for f in firsts]
    assert all(not (a & b) for a, b in itertools.pairwise(ranges))  # no reuse in a row
    assert len(set().union(*ranges)) == len(ranges) * episodes  # nor anywhere in 200 evaluations
    for k in (0, 1, 10**6, 10**9 + 7):  # a run of any length stays below the fresh episodes
        first = evaluation_seed(39, k, episodes)
        assert EVAL_SEEDS.start <= first and first + episodes - 1 < EVAL_SEEDS.stop
    assert evaluation_seed(0, 5, episodes) != evaluation_seed(1, 5, episodes)  # seeds differ
    assert EVAL_SEEDS.stop == 50_000  # safebot eval's first fresh seed (evaluate_run)


def test_a_run_and_its_resume_evaluate_on_the_seeds_the_step_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int]] = []
    real = callbacks.evaluate

    def recording(*args: Any, seed: int, step: int, **kwargs: Any) -> Any:
        seen.append((step, seed))
        return real(*args, seed=seed, step=step, **kwargs)

    monkeypatch.setattr(callbacks, "evaluate", recording)
    tiny = {"eval_every": 64, "eval_episodes": 2, "checkpoint_every": 64, "backend": "torch"}
    out = tmp_path / "run"
    train("reach", RunOptions(steps=128, **tiny), out=out, progress=False)
    train("reach", RunOptions(steps=256, **tiny), out=out, resume=True, progress=False)
    assert [s for s, _ in seen] == [64, 128, 192, 256]
    assert [seed for _, seed in seen] == [evaluation_seed(0, k, 2) for k in (1, 2, 3, 4)]
    assert len({seed for _, seed in seen}) == 4
