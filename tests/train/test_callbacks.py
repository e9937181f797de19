"""Training evaluations: which episodes the scheduler and the best model are judged on."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from stable_baselines3.common.callbacks import BaseCallback

import safebot.train.callbacks as callbacks
from safebot.train import RunOptions, WorldChange, train
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


# -- WorldChange: the world changes under the learner and the scheduler alike --------

TINY = {"eval_every": 64, "eval_episodes": 1, "checkpoint_every": 64, "backend": "torch"}
SCALE = "set_perception_scale"


class _Probe(BaseCallback):
    """After ``world``: the perception scale of the training env and the evaluation env."""

    def __init__(self, world: WorldChange) -> None:
        super().__init__(verbose=0)
        self.world = world
        self.seen: dict[int, tuple[float, float]] = {}

    def _on_step(self) -> bool:
        assert self.world.eval_env is not None
        train_scale = self.training_env.get_attr("perception_scale")[0]
        eval_scale = self.world.eval_env.unwrapped.perception_scale  # type: ignore[attr-defined]
        self.seen[self.num_timesteps] = (train_scale, eval_scale)
        return True


def _record_evaluations(monkeypatch: pytest.MonkeyPatch) -> dict[int, float]:
    """``{step: the evaluation env's perception scale}`` of every training evaluation."""
    seen: dict[int, float] = {}
    real = callbacks.evaluate

    def recording(policy: Any, env: Any, *args: Any, step: int, **kwargs: Any) -> Any:
        seen[step] = env.unwrapped.perception_scale
        return real(policy, env, *args, step=step, **kwargs)

    monkeypatch.setattr(callbacks, "evaluate", recording)
    return seen


def test_world_changes_reach_the_training_and_evaluation_envs_at_their_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluated = _record_evaluations(monkeypatch)
    world = WorldChange({32: (SCALE, (2.0,)), 64: (SCALE, (3.0,)), 100: (SCALE, (1.0,))})
    probe = _Probe(world)
    train("reach", RunOptions(steps=128, **TINY), out=tmp_path / "r", progress=False,
          callbacks=[world, probe])  # fmt: skip
    assert world.applied == [(32, SCALE, (2.0,)), (64, SCALE, (3.0,)), (100, SCALE, (1.0,))]
    assert probe.seen[31] == (1.0, 1.0) and probe.seen[32] == (2.0, 2.0)
    assert probe.seen[64] == (3.0, 3.0) and probe.seen[99] == (3.0, 3.0)
    assert probe.seen[100] == (1.0, 1.0)
    # the run's own callbacks come first: the evaluation at step 64 saw the world before
    assert evaluated == {64: 2.0, 128: 1.0}


def test_a_resumed_run_sees_the_world_it_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluated = _record_evaluations(monkeypatch)
    out = tmp_path / "r"

    def schedule() -> WorldChange:
        return WorldChange({32: (SCALE, (3.0,)), 96: (SCALE, (2.0,)), 160: (SCALE, (1.0,))})

    train("reach", RunOptions(steps=128, **TINY), out=out, progress=False, callbacks=[schedule()])
    world = schedule()
    probe = _Probe(world)
    train("reach", RunOptions(steps=192, **TINY), out=out, resume=True, progress=False,
          callbacks=[world, probe])  # fmt: skip
    # on start only the latest change of each method at or before step 128 is made again
    assert world.applied == [(128, SCALE, (2.0,)), (160, SCALE, (1.0,))]
    assert probe.seen[129] == (2.0, 2.0) and probe.seen[160] == (1.0, 1.0)
    assert evaluated == {64: 3.0, 128: 2.0, 192: 1.0}


@pytest.mark.parametrize("changes", [{-1: (SCALE, (2.0,))}, {5: (SCALE,)}, {5: (3, (2.0,))}])
def test_a_bad_world_change_schedule_is_refused(changes: Any) -> None:
    with pytest.raises(ValueError, match="WorldChange"):
        WorldChange(changes)


# -- training harm: what the scheduler reads beside the held-out episodes ----------------


class _TrainingHarm(BaseCallback):
    """Harm and ended episodes of the training steps, per evaluation interval."""

    def __init__(self, every: int) -> None:
        super().__init__(verbose=0)
        self.every = every
        self.harm: dict[int, float] = {}
        self.ended: dict[int, int] = {}

    def _on_step(self) -> bool:
        k = -(-self.num_timesteps // self.every)  # the evaluation this step comes before
        self.harm[k] = self.harm.get(k, 0.0) + sum(i["cost"] for i in self.locals["infos"])
        self.ended[k] = self.ended.get(k, 0) + int(sum(self.locals["dones"]))
        return True


def test_the_scheduler_reads_the_harm_per_training_episode_since_the_last_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safebot.schedulers as schedulers
    from safebot.shield.wrapper import Shield

    real_step = Shield.step
    count = itertools.count()

    def harmful(self: Shield, action: Any) -> Any:  # every third step harms
        obs, r, term, trunc, info = real_step(self, action)
        info["cost"] = float(next(count) % 3 == 0)
        return obs, r, term, trunc, info

    monkeypatch.setattr(Shield, "step", harmful)
    read: list[float | None] = []
    real_update = schedulers.Competence.update

    def recording(self: Any, stats: Any) -> Any:
        read.append(stats.train_harm_per_episode)
        return real_update(self, stats)

    monkeypatch.setattr(schedulers.Competence, "update", recording)
    every = 40  # Reach episodes are 50 steps: the first interval ends none
    probe = _TrainingHarm(every)
    opts = {**TINY, "eval_every": every, "checkpoint_every": 80}
    out = tmp_path / "r"
    train("reach", RunOptions(steps=80, **opts), out=out, progress=False, callbacks=[probe])
    train("reach", RunOptions(steps=160, **opts), out=out, resume=True, progress=False,
          callbacks=[probe])  # fmt: skip
    expected = [
        probe.harm[k] / probe.ended[k] if probe.ended[k] else None for k in sorted(probe.harm)
    ]
    assert read[0] is None and expected[0] is None  # no training episode had ended
    assert read == pytest.approx(expected)
    # a resumed run starts a new episode at step 80: no episode ends in 81-120
    assert read[1] == pytest.approx(probe.harm[2] / 1) and read[1] > 0
    assert len(read) == 4 and read[2] is None and read[3] is not None and read[3] > 0
