"""Envelope benchmark: aggregation on synthetic metrics, a tiny sweep end to end, restart, Ray."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from safebot.bench.envelope import (
    CURVE_METRICS,
    TOTALS,
    RunOutcome,
    RunSpec,
    RunTotals,
    SweepConfig,
    SweepError,
    goal_check,
    mean_interval,
    parse_metrics,
    read_finished,
    results_rows,
    run_one,
    run_totals,
    summarise,
    summary_markdown,
    sweep,
    t_quantile,
)
from safebot.bench.executors import LocalExecutor, RayExecutor, make_executor

HEADER = "step,width,success_rate,mean_return,cost_rate,intervention_rate,mean_correction,train_cost,train_steps,reason,wall_s"
# learning starts inside the tiny budget so the determinism check covers gradient updates
# torch: SBX (Reach's backend) compiles its update in every fresh worker process, ~10-60 s
# of a 128-step run; the sweep machinery under test does not depend on the learner
TINY_TRAIN = (
    ("net_arch", [32, 32]),
    ("learning_starts", 64),
    ("batch_size", 32),
    ("backend", "torch"),
    ("train_freq", 1),
    ("gradient_steps", 1),
)


def _metrics(rows: list[tuple[int, float, float, float, float]]) -> str:
    """metrics.csv text from (step, width, success, return, train_cost) rows."""
    lines = [HEADER]
    for step, width, succ, ret, cost in rows:
        lines.append(f"{step},{width},{succ},{ret},0.01,0.2,0.05,{cost},{step},hold: success,1.0")
    return "\n".join(lines) + "\n"


def _outcome(task: str, sched: str, seed: int, text: str) -> RunOutcome:
    spec = RunSpec(task=task, scheduler=sched, seed=seed, steps=300, run_dir=f"/nowhere/{seed}")
    return RunOutcome(spec, text, "{}", run_totals(parse_metrics(text)), True, 1.0)


# --------------------------------------------------------------------------- aggregation


def test_run_totals_take_the_last_row_and_the_first_step_at_80_percent() -> None:
    rows = parse_metrics(
        _metrics([(100, 0.0, 0.5, -30, 2), (200, 0.15, 0.8, -10, 5), (300, 0.3, 0.7, -12, 9)])
    )
    assert run_totals(rows) == RunTotals(
        train_cost=9.0, final_success=0.7, final_return=-12.0, steps_to_80=200, final_width=0.3
    )
    never = parse_metrics(_metrics([(100, 0.0, 0.1, -40, 0), (200, 0.0, 0.79, -35, 0)]))
    assert run_totals(never).steps_to_80 is None
    with pytest.raises(ValueError, match="no totals"):
        run_totals([])


def test_mean_interval_is_the_student_t_interval_of_the_mean() -> None:
    iv = mean_interval([0.2, 0.4, 0.6])
    half = 4.302652729749462 * 0.2 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert iv.n == 3 and iv.mean == pytest.approx(0.4)
    assert iv.lo == pytest.approx(0.4 - half) and iv.hi == pytest.approx(0.4 + half)
    two = mean_interval([1.0, 3.0])
    assert two.hi == pytest.approx(2.0 + 12.706204736174694 * math.sqrt(2) / math.sqrt(2))
    assert mean_interval([5.0]) == (5.0, None, None, 1)
    assert mean_interval([]) == (None, None, None, 0)
    assert mean_interval([0.5, 0.5]) == (0.5, 0.5, 0.5, 2)


@pytest.mark.parametrize("df", [*range(1, 31), 47, 120, 1000])
def test_t_quantile_matches_scipy(df: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    for p in (0.5, 0.6, 0.9, 0.95, 0.975, 0.995, 0.9995, 0.025, 0.3):
        assert t_quantile(p, df) == pytest.approx(float(stats.t.ppf(p, df)), rel=1e-10, abs=1e-12)


def test_t_quantile_rejects_what_has_no_quantile() -> None:
    for p, df in ((0.0, 3), (1.0, 3), (0.9, 0), (0.9, 2.5)):
        with pytest.raises(ValueError, match="t_quantile needs"):
            t_quantile(p, df)  # type: ignore[arg-type]


def test_the_summary_needs_no_scipy() -> None:
    # scipy is a dev extra only: a plain install must still summarise a finished sweep
    code = (
        "import sys; sys.modules['scipy'] = None\n"
        "from safebot.bench.envelope import mean_interval\n"
        "iv = mean_interval([0.2, 0.4, 0.6]); print(round(iv.hi, 6))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) == pytest.approx(
        0.4 + 4.302652729749462 * 0.2 / math.sqrt(3), abs=1e-6
    )


def _synthetic_grid() -> list[RunOutcome]:
    # final success / training cost per scheduler and seed
    finals = {
        "static-tight": [(0.4, 1.0), (0.6, 3.0)],
        "static-loose": [(1.0, 100.0), (0.8, 60.0)],
        "competence": [(0.9, 10.0), (0.9, 14.0)],
        "linear": [(0.85, 5.0), (0.5, 5.0)],
    }
    out = []
    for sched, per_seed in finals.items():
        for seed, (succ, cost) in enumerate(per_seed):
            text = _metrics([(100, 0.0, succ / 2, -40, cost / 2), (300, 0.5, succ, -20, cost)])
            out.append(_outcome("reach", sched, seed, text))
    return out


def test_summary_statistics_from_known_inputs() -> None:
    summary = summarise(_synthetic_grid())
    assert set(summary) == {"reach"}
    comp = summary["reach"]["competence"]
    assert comp["seeds"] == [0, 1]
    assert comp["final_success"]["mean"] == pytest.approx(0.9)
    assert comp["final_success"]["lo"] == pytest.approx(0.9)  # no spread, zero width
    assert comp["train_cost"]["values"] == [10.0, 14.0]
    assert comp["train_cost"]["mean"] == pytest.approx(12.0)
    half = 12.706204736174694 * math.sqrt(8) / math.sqrt(2)  # sd of (10, 14) is sqrt(8)
    assert comp["train_cost"]["hi"] == pytest.approx(12.0 + half)
    assert comp["final_width"]["mean"] == pytest.approx(0.5)
    assert comp["steps_to_80"] | {"values": None} == {
        "mean": 300.0,
        "lo": 300.0,
        "hi": 300.0,
        "n": 2,
        "reached": 2,
        "values": None,
    }
    tight = summary["reach"]["static-tight"]["steps_to_80"]
    assert tight["mean"] is None and tight["reached"] == 0 and tight["values"] == [None, None]
    linear = summary["reach"]["linear"]["steps_to_80"]  # only seed 0 reached 80 %
    assert linear["reached"] == 1 and linear["n"] == 2 and linear["values"] == [300, None]
    assert linear["mean"] == 300.0 and linear["lo"] is None


def test_goal_check_on_means() -> None:
    per = summarise(_synthetic_grid())["reach"]
    goal = goal_check(per)
    assert goal is not None
    # competence 0.9 vs loose 0.9 (100 %), cost 12 vs 80 (15 %), tight 0.5
    assert goal["success_vs_loose"] == pytest.approx(1.0)
    assert goal["cost_vs_loose"] == pytest.approx(0.15)
    assert goal["met"] is True
    costly = dict(per, competence={**per["competence"], "train_cost": {"mean": 30.0}})
    assert goal_check(costly)["cost_ok"] is False  # type: ignore[index]
    assert goal_check(costly)["met"] is False  # type: ignore[index]
    weak = dict(per, competence={**per["competence"], "final_success": {"mean": 0.5}})
    assert goal_check(weak)["beats_tight"] is False  # type: ignore[index]
    assert goal_check({k: v for k, v in per.items() if k != "static-tight"}) is None


def test_results_rows_are_long_format_with_totals() -> None:
    grid = _synthetic_grid()
    rows = results_rows(grid)
    assert len(rows) == len(grid) * (2 * len(CURVE_METRICS) + len(TOTALS))
    assert rows[0] == ("reach", "static-tight", 0, 100, "width", 0.0)
    tight0 = {r[4]: r[5] for r in rows if r[1] == "static-tight" and r[2] == 0 and r[3] == 300}
    assert tight0["total_train_cost"] == 1.0 and tight0["total_steps_to_80"] is None
    assert tight0["success_rate"] == 0.4


def test_markdown_table_has_a_row_per_scheduler_and_the_goal() -> None:
    results = summarise(_synthetic_grid())
    md = summary_markdown(
        {
            "budget": {"steps": 300, "eval_every": 100, "eval_episodes": 5},
            "results": results,
            "goal": {"reach": goal_check(results["reach"])},
        }
    )
    assert "| competence | 2 | 0.90 [0.90, 0.90] |" in md
    assert "| static-tight | 2 |" in md and "— (0/2)" in md
    assert "**goal met**" in md


def test_grid_errors_are_caught_before_training(tmp_path: Path) -> None:
    base = {"tasks": ("reach",), "seeds": (0,), "steps": 64, "out": tmp_path}
    with pytest.raises(SweepError, match="unknown scheduler"):
        SweepConfig(schedulers=("competence", "greedy"), **base).validate()  # type: ignore[arg-type]
    with pytest.raises(SweepError, match="listed twice"):
        SweepConfig(schedulers=("pi", "pi"), **base).validate()  # type: ignore[arg-type]
    with pytest.raises(SweepError, match="nosuchtask"):
        SweepConfig(
            tasks=("nosuchtask",), schedulers=("pi",), seeds=(0,), steps=64, out=tmp_path
        ).validate()
    with pytest.raises(ValueError, match="--ray-address needs --executor ray"):
        make_executor("local", address="auto")


def test_cli_rejects_a_bad_grid_and_another_budget_with_exit_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from safebot.cli import app

    runner = CliRunner()
    res = runner.invoke(
        app, ["bench", "envelope", "--out", str(tmp_path), "--schedulers", "greedy"]
    )
    assert res.exit_code == 2 and "unknown scheduler" in res.output
    (tmp_path / "sweep.json").write_text(json.dumps({"budget": {"steps": 1}}))
    res = runner.invoke(app, ["bench", "envelope", "--out", str(tmp_path), "--steps", "64"])
    assert res.exit_code == 2 and "another budget" in res.output


# --------------------------------------------------------------------------- executors


def _threads_and_pid(x: int) -> tuple[int, int, int]:
    import torch

    if x < 0:
        raise RuntimeError(f"negative {x}")
    return x * 2, torch.get_num_threads(), os.getpid()


def test_local_executor_pins_one_thread_and_one_run_per_process() -> None:
    results = dict(LocalExecutor(workers=2).map_unordered(_threads_and_pid, [1, 2, 3, -1]))
    err = results.pop(-1)
    assert isinstance(err, RuntimeError) and "negative -1" in str(err)
    values = [r for r in results.values() if isinstance(r, tuple)]
    assert sorted(v[0] for v in values) == [2, 4, 6]
    assert all(v[1] == 1 for v in values)
    assert len({v[2] for v in values}) == 3 and os.getpid() not in {v[2] for v in values}


# --------------------------------------------------------------------------- end to end


def _tiny(out: Path, seeds: tuple[int, ...] = (0,)) -> SweepConfig:
    return SweepConfig(
        tasks=("reach",),
        schedulers=("static-tight", "competence"),
        seeds=seeds,
        steps=128,
        out=out,
        eval_every=64,
        eval_episodes=1,
        checkpoint_every=64,
        train=TINY_TRAIN,
    )


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local")
    result = sweep(_tiny(out), LocalExecutor(workers=2), progress=False)
    assert not result.failed, result.failed
    return out


@pytest.mark.slow
def test_tiny_sweep_writes_every_output(local_sweep: Path) -> None:
    out = local_sweep
    for name in (
        "results.csv",
        "summary.json",
        "summary.md",
        "envelope_width.png",
        "envelope_curves.png",
        "envelope_tradeoff.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = _csv(out / "results.csv")
    # evaluations at 64 and 128 per run, 2 runs
    assert len(rows) == 2 * (2 * len(CURVE_METRICS) + len(TOTALS))
    assert {(r["scheduler"], r["seed"]) for r in rows} == {
        ("static-tight", "0"),
        ("competence", "0"),
    }
    assert sorted({int(r["step"]) for r in rows}) == [64, 128]
    widths = [float(r["value"]) for r in rows if r["metric"] == "width"]
    assert all(0.0 <= w <= 1.0 for w in widths)
    # the summary agrees with results.csv
    summary = json.loads((out / "summary.json").read_text())
    for sched in ("static-tight", "competence"):
        final = next(
            float(r["value"])
            for r in rows
            if r["scheduler"] == sched and r["metric"] == "total_final_success"
        )
        assert summary["results"]["reach"][sched]["final_success"]["mean"] == final
    assert summary["budget"]["steps"] == 128 and summary["failed"] == {}
    assert "| static-tight | 1 |" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_restart_skips_finished_runs_and_resumes_partial_ones(
    local_sweep: Path, tmp_path: Path
) -> None:
    import shutil

    out = tmp_path / "sweep"
    shutil.copytree(local_sweep, out)
    runs = out / "runs" / "reach"
    finished = runs / "static-tight" / "seed0" / "final_model.zip"
    partial = runs / "competence" / "seed0"
    before = finished.stat().st_mtime_ns
    config_before = (partial / "config.toml").stat().st_mtime_ns
    # "kill -9" the competence run between its checkpoints at 64 and 128
    (partial / "summary.json").unlink()
    (partial / "final_model.zip").unlink()
    latest = partial / "ckpt" / "latest.json"
    entry = json.loads(latest.read_text())
    assert entry["step"] == 128 and (partial / "ckpt" / "model_64.zip").is_file()
    latest.write_text(
        json.dumps(
            {k: v.replace("128", "64") if isinstance(v, str) else 64 for k, v in entry.items()}
        )
    )
    old_rows = _csv(partial / "metrics.csv")

    seen: list[tuple[str, bool]] = []
    result = sweep(
        _tiny(out, seeds=(0, 1)),  # the grid grows by a seed: same budget, so allowed
        LocalExecutor(workers=1),
        progress=False,
        on_result=lambda o: seen.append((o.spec.label, o.trained)),
    )
    assert not result.failed, result.failed
    assert finished.stat().st_mtime_ns == before  # not retrained
    assert sorted(seen) == [
        ("reach/competence/seed0", True),
        ("reach/competence/seed1", True),
        ("reach/static-tight/seed1", True),
    ]
    # resumed, not restarted: a fresh start rewrites config.toml and metrics.csv
    assert (partial / "config.toml").stat().st_mtime_ns == config_before
    new_rows = _csv(partial / "metrics.csv")
    assert [r["step"] for r in new_rows] == ["64", "128"] and new_rows[0] == old_rows[0]
    assert (partial / "summary.json").is_file() and (partial / "final_model.zip").is_file()
    assert len(_csv(out / "results.csv")) == 4 * (2 * len(CURVE_METRICS) + len(TOTALS))
    # a restart with another budget would mix runs: refused before any training
    with pytest.raises(SweepError, match="another budget"):
        sweep(
            SweepConfig(**{**_tiny(out).__dict__, "steps": 256}),
            LocalExecutor(),
            progress=False,
        )


@pytest.mark.slow
def test_a_run_killed_after_its_last_checkpoint_is_finished_on_restart(
    local_sweep: Path, tmp_path: Path
) -> None:
    import shutil

    run = next(r for r in _tiny(local_sweep).runs() if r.scheduler == "static-tight")
    copy = tmp_path / "run"
    shutil.copytree(run.run_dir, copy)
    (copy / "summary.json").unlink()  # killed during the final evaluation
    outcome = run_one(RunSpec(**{**run.__dict__, "run_dir": str(copy)}))
    assert outcome.trained and (copy / "summary.json").is_file()
    assert [r["step"] for r in outcome.curves] == [64.0, 128.0]
    assert outcome.totals == read_finished(run).totals  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_ray_gives_the_same_numbers_as_the_local_pool(local_sweep: Path, tmp_path: Path) -> None:
    import ray

    assert not ray.is_initialized()
    try:
        # no address: the executor starts a local 2-CPU cluster and stops it afterwards
        result = sweep(_tiny(tmp_path), RayExecutor(workers=2), progress=False)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert not result.failed, result.failed
    assert not ray.is_initialized()
    local_rows = _csv(local_sweep / "results.csv")
    ray_rows = _csv(tmp_path / "results.csv")
    # bit-identical: same seeds, one torch thread, deterministic physics and kernels
    assert ray_rows == local_rows
    # the policies match too, and they were trained (learning_starts 64 < 128 steps),
    # so the check is not comparing two untouched initialisations
    import torch

    from safebot.train import load_policy

    for sched in ("static-tight", "competence"):
        _, a = load_policy(local_sweep / "runs/reach" / sched / "seed0")
        _, b = load_policy(tmp_path / "runs/reach" / sched / "seed0")
        assert a._n_updates > 0 and a._n_updates == b._n_updates
        sa, sb = a.policy.state_dict(), b.policy.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), sched
