"""The headline sweep: spec validation, results.csv -> summary, the CLI, local pool vs Ray."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safebot.bench.envelope import RunSpec, SweepError
from safebot.bench.headline import (
    CODE_FILE,
    ArmOutcome,
    ArmRun,
    check_budgets,
    jobs,
    load_spec,
    merge_reports,
    merge_rows,
    read_code,
    read_results,
    runs_code,
    summarise_results,
    write_outputs,
    write_results,
)
from safebot.config import SpecError
from safebot.modes import RewardConstraint, SchedulerKind, ShieldMode
from safebot.resources import code_label

REPO = Path(__file__).resolve().parents[2]
HEADLINE = REPO / "bench" / "headline.toml"

# torch backend and tiny nets: SBX's jit compile costs ~60 s per run process on a loaded
# 2-core machine, more than the training itself; learning_starts < steps so the
# local-vs-Ray check covers gradient updates
TINY = """\
seeds = 2
final_episodes = 2
bootstrap_resamples = 200

[tasks.reach]
steps = 200
eval_every = 100
eval_episodes = 1
checkpoint_every = 100
train = { backend = "torch", net_arch = [32, 32], learning_starts = 64, batch_size = 32 }

[arms.static-0]
scheduler = "static"
width = 0.0

[arms.sac-lag]
shield = "off"
constraint = "lagrangian"

[arms.competence]
scheduler = "competence"

[goal]
candidates = ["competence"]
frontier = ["static-0"]
loose = "static-0"
baseline = "sac-lag"
"""


def _write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- the spec


def test_the_shipped_spec_loads_with_every_arm_as_data() -> None:
    spec = load_spec(HEADLINE)
    assert list(spec.tasks) == ["reach", "push", "press"] and spec.seeds == 5
    assert list(spec.arms) == [
        "sac",
        "sac-lag",
        "static-0",
        "static-0.5",
        "static-1",
        "linear",
        "pi",
        "competence",
        "competence-lag",
    ]
    assert spec.final_episodes == 50 and spec.goal is not None
    lag = spec.arms["competence-lag"].bench()
    assert lag == (ShieldMode.ON, RewardConstraint.LAGRANGIAN, SchedulerKind.COMPETENCE, None)
    assert spec.arms["static-0.5"].bench().width == 0.5
    assert spec.arms["sac"].bench() == (ShieldMode.OFF, RewardConstraint.NONE, None, None)
    grid = jobs(spec, Path("/out"))
    assert len(grid) == 3 * 9 * 5
    first = grid[0].run
    assert first.run_dir == "/out/runs/reach/sac/seed0" and first.steps == 30000
    assert first.arm is not None and first.arm.shield is ShieldMode.OFF


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("width = 0.0", "width = 0.0\nwidht = 1"), r"\[arms\.static-0\.widht\] unknown key"),
        (("seeds = 2", "seeds = 2\nsteps = 5"), r"\[steps\] unknown key"),
        (("width = 0.0", "width = 1.5"), r"\[arms\.static-0\.width\] .*less than or equal to 1"),
        (("seeds = 2", "seeds = 0"), r"\[seeds\] .*greater than 0"),
        (('shield = "off"', 'shield = "of"'), r"\[arms\.sac-lag\.shield\]"),
        (
            ('shield = "off"', 'shield = "off"\nscheduler = "pi"'),
            r"\[arms\.sac-lag\] .*no scheduler",
        ),
        (('scheduler = "static"\n', ""), r"\[arms\.static-0\] .*needs a scheduler"),
        (
            ('frontier = ["static-0"]', 'frontier = ["static-2"]'),
            r"\[goal\.frontier\] unknown arm 'static-2'",
        ),
        (
            ('baseline = "sac-lag"', 'baseline = "ppo-lag"'),
            r"\[goal\.baseline\] unknown arm 'ppo-lag'",
        ),
        (("[tasks.reach]", "[tasks.reech]"), r"\[tasks\.reech\] unknown task"),
        (("net_arch", "nett_arch"), r"\[tasks\.reach\] .*unknown \[train\] key\(s\) nett_arch"),
        (("eval_every = 100", "eval_every = 300"), r"\[tasks\.reach\] .*no evaluation"),
    ],
)
def test_spec_errors_name_the_file_and_the_key(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    path = _write(tmp_path, TINY.replace(*edit, 1))
    with pytest.raises(SpecError, match=message) as err:
        load_spec(path)
    assert str(path) in str(err.value)


def test_filters_shrink_the_grid_and_reject_names_the_spec_lacks(tmp_path: Path) -> None:
    spec = load_spec(HEADLINE)
    small = spec.select(tasks=["reach"], arms=["sac", "competence"], seeds=2, steps=500)
    assert list(small.tasks) == ["reach"] and list(small.arms) == ["sac", "competence"]
    assert small.seeds == 2 and small.tasks["reach"].steps == 500
    assert small.tasks["reach"].eval_every == 500  # capped at the steps of the try
    assert len(jobs(small, tmp_path)) == 4
    with pytest.raises(SweepError, match=r"headline.toml: unknown arm\(s\) greedy"):
        spec.select(arms=["greedy"])
    with pytest.raises(SweepError, match=r"unknown task\(s\) lift"):
        spec.select(tasks=["lift"])
    with pytest.raises(SweepError, match="has 5 seed"):
        spec.select(seeds=6)


def test_a_restart_at_another_budget_is_refused(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, TINY))
    check_budgets(spec, tmp_path / "out")
    check_budgets(spec.select(seeds=1), tmp_path / "out")  # fewer seeds: same budget
    with pytest.raises(SweepError, match="another budget"):
        check_budgets(spec.select(steps=100), tmp_path / "out")


# --------------------------------------------------------------------------- results.csv


METRICS = (
    "step,width,success_rate,mean_return,cost_rate,harm_per_episode,intervention_rate,"
    "mean_correction,train_cost,train_steps,lambda,reason,wall_s"
)


def _outcome(
    arm: str, seed: int, success: list[float], harm: list[float], final: float
) -> ArmOutcome:
    lines = [METRICS]
    for k, (s, h) in enumerate(zip(success, harm, strict=True)):
        lines.append(
            f"{100 * (k + 1)},0.5,{s},-10,0.01,0.4,0.1,0.02,{h},{100 * (k + 1)},0.3,hold,9.5"
        )
    final_json = json.dumps(
        {"episodes": 50, "success_rate": final, "harm_per_episode": 0.2, "mean_return": -5.0,
         "final_width": 0.5, "model_step": 200}
    )  # fmt: skip
    run = RunSpec(task="reach", scheduler=arm, seed=seed, steps=100 * len(success), run_dir="/x")
    return ArmOutcome(ArmRun(run, 50), "\n".join(lines) + "\n", "{}", final_json, True, 1.0)


def test_a_runs_code_comes_from_its_config_then_the_drivers_copy(tmp_path: Path) -> None:
    new, mirrored, old = (tmp_path / n for n in ("new", "mirrored", "old"))
    for d in (new, mirrored, old):
        d.mkdir()
    (new / "config.toml").write_text('[task]\nname = "reach"\n[run]\ncode = "abc123"\n')
    (mirrored / CODE_FILE).write_text("def456+dirty\n")
    (old / "config.toml").write_text('[run]\nscheduler = "static"\n')  # before runs recorded it
    assert [read_code(d) for d in (new, mirrored, old)] == ["abc123", "def456+dirty", None]
    outcomes = [replace(_outcome("static-0", k, [0.1], [0.0], 0.1), code=c)
                for k, c in enumerate(["abc123", "abc123", None])]  # fmt: skip
    assert runs_code(outcomes) == {"abc123": 2, "unrecorded": 1}


def test_an_export_without_git_names_its_code_by_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import safebot.resources as resources

    def no_git(*_a: object, **_k: object) -> None:
        raise OSError("git: not found")

    monkeypatch.setattr(resources.subprocess, "run", no_git)
    monkeypatch.delenv(resources.CODE_COMMIT_ENV, raising=False)
    assert resources.code_commit() == {"commit": None, "dirty": None}
    monkeypatch.setenv(resources.CODE_COMMIT_ENV, "755996f")
    assert resources.code_commit() == {"commit": "755996f", "dirty": None}
    assert resources.code_label() == "755996f"


def test_results_csv_is_long_format_and_the_summary_is_recomputed_from_it(tmp_path: Path) -> None:
    outcomes = [
        _outcome("competence", 0, [0.2, 0.9], [3.0, 5.0], 0.9),
        _outcome("competence", 1, [0.1, 0.7], [2.0, 7.0], 0.8),
        _outcome("static-0", 0, [0.1, 0.2], [0.0, 0.0], 0.3),
    ]
    path = tmp_path / "results.csv"
    write_results(path, outcomes)
    rows = read_results(path)
    assert list(rows[0]) == ["task", "arm", "seed", "step", "metric", "value"]
    metrics = {r["metric"] for r in rows}
    assert {
        "success_rate",
        "harm_per_episode",
        "cumulative_training_harm",
        "width",
        "lambda",
        "final_success_rate",
        "final_harm_per_episode",
    } <= metrics
    final = [r for r in rows if r["metric"] == "final_success_rate"]
    assert [(r["arm"], r["seed"], r["step"], r["value"]) for r in final] == [
        ("competence", "0", "200", "0.9"),
        ("competence", "1", "200", "0.8"),
        ("static-0", "0", "200", "0.3"),
    ]
    spec = load_spec(HEADLINE).model_copy(update={"bootstrap_resamples": 300})
    summary = summarise_results(rows, spec)
    comp = summary["results"]["reach"]["competence"]
    assert comp["final_success"]["values"] == [0.9, 0.8]
    assert comp["cumulative_training_harm"]["values"] == [5.0, 7.0]
    assert comp["final_harm_per_episode"]["mean"] == pytest.approx(0.2)
    # mark: 80 % of competence's 0.85 = 0.68; seed 0 at 200 (0.9), seed 1 at 200 (0.7)
    assert comp["steps_to_mark"]["values"] == [200, 200]
    goal = summary["goal"]["reach"]
    assert goal["met"] is None and "sac-lag" in goal["missing"]  # not every role ran
    assert summary == summarise_results(read_results(path), spec)  # anyone recomputes it


def test_a_merged_report_takes_each_arm_from_the_last_source_that_holds_it(
    tmp_path: Path,
) -> None:
    a = [{"task": "reach", "arm": arm, "seed": "0"} for arm in ("static-0", "competence")]
    b = [{"task": "reach", "arm": "competence", "seed": "1"}]
    rows, kept = merge_rows([a, b])
    assert [(r["arm"], r["seed"]) for r in rows] == [("static-0", "0"), ("competence", "1")]
    assert kept == [{("reach", "static-0")}, {("reach", "competence")}]

    spec = load_spec(HEADLINE).model_copy(update={"bootstrap_resamples": 300})
    old, new, out = (tmp_path / n for n in ("old", "new", "merged"))
    first = [
        _outcome("competence", 0, [0.2, 0.9], [3.0, 50.0], 0.9),
        _outcome("static-0", 0, [0.1, 0.2], [0.0, 0.0], 0.3),
    ]
    write_outputs(spec, old, first, {}, 2, 10.0, plots=False)
    rerun = [_outcome("competence", 0, [0.2, 0.8], [1.0, 4.0], 0.8)]
    write_outputs(spec, new, rerun, {}, 1, 10.0, plots=False)
    result = merge_reports(spec, [old, new], out)
    comp = result.summary["results"]["reach"]["competence"]
    assert comp["final_success"]["values"] == [0.8]
    assert comp["cumulative_training_harm"]["values"] == [4.0]
    assert result.summary["results"]["reach"]["static-0"]["final_success"]["values"] == [0.3]
    merged_from = result.summary["merged_from"]
    assert [m["pairs"] for m in merged_from] == [["reach/static-0"], ["reach/competence"]]
    assert [m["runs"] for m in merged_from] == [1, 1]
    assert set(result.summary["timing"]["runs"]) == {
        "reach/static-0/seed0",
        "reach/competence/seed0",
    }
    # the merged summary is what anyone recomputes from the merged results.csv
    recomputed = summarise_results(read_results(out / "results.csv"), spec)
    assert recomputed["results"] == result.summary["results"]
    assert (out / "pareto_reach.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SpecError, match="not a finished report"):
        merge_reports(spec, [old, tmp_path / "nothing"], out)


# --------------------------------------------------------------------------- CLI


def test_cli_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    from safebot.cli import app

    runner = CliRunner()
    spec = _write(tmp_path, TINY.replace("width = 0.0", "width = 2.0"))
    res = runner.invoke(app, ["bench", "envelope", "--spec", str(spec), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "arms.static-0.width" in res.output and str(spec) in res.output
    good = _write(tmp_path, TINY, "good.toml")
    res = runner.invoke(
        app,
        ["bench", "envelope", "--spec", str(good), "--out", str(tmp_path), "--schedulers", "pi"],
    )
    assert res.exit_code == 2 and "set these in the spec file" in res.output
    res = runner.invoke(
        app, ["bench", "envelope", "--spec", str(good), "--out", str(tmp_path), "--arms", "sac"]
    )
    assert res.exit_code == 2 and "unknown arm(s) sac" in res.output
    res = runner.invoke(app, ["bench", "envelope", "--out", str(tmp_path), "--arms", "sac"])
    assert res.exit_code == 2 and "--arms needs --spec" in res.output
    res = runner.invoke(app, ["bench", "envelope", "--out", str(tmp_path), "--merge", "x"])
    assert res.exit_code == 2 and "--merge needs --spec" in res.output
    res = runner.invoke(
        app,
        ["bench", "envelope", "--spec", str(good), "--out", str(tmp_path / "m"),
         "--merge", str(tmp_path / "nowhere")],
    )  # fmt: skip
    assert res.exit_code == 2 and "not a finished report" in res.output


def _cli(spec: Path, out: Path, *extra: str) -> str:
    from safebot.cli import app

    args = [
        "bench",
        "envelope",
        "--spec",
        str(spec),
        "--out",
        str(out),
        "--arms",
        "static-0,sac-lag",
    ]
    res = CliRunner().invoke(app, [*args, "--seeds", "1", "--workers", "2", *extra])
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def tiny_local(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("headline")
    spec = _write(root, TINY)
    _cli(spec, root / "local")
    return spec, root / "local"


@pytest.mark.slow
def test_tiny_grid_end_to_end_writes_every_output_and_restarts(
    tiny_local: tuple[Path, Path],
) -> None:
    spec, out = tiny_local
    for name in (
        "results.csv",
        "summary.json",
        "pareto_reach.png",
        "curves_reach.png",
        "width_reach.png",
    ):
        assert (out / name).stat().st_size > 0, name
    rows = read_results(out / "results.csv")
    assert {(r["arm"], r["seed"]) for r in rows} == {("static-0", "0"), ("sac-lag", "0")}
    steps = {int(r["step"]) for r in rows if r["metric"] == "success_rate"}
    assert steps == {100, 200}
    finals = [r for r in rows if r["metric"] == "final_episodes"]
    assert [r["value"] for r in finals] == ["2", "2"]
    # the final evaluation judges each arm as it trained: the unshielded baseline unshielded
    for arm, shielded in (("static-0", True), ("sac-lag", False)):
        final = json.loads((out / "runs" / "reach" / arm / "seed0" / "final_eval.json").read_text())
        assert final["shielded"] is shielded and final["which"] == "best"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["budgets"]["reach"]["steps"] == 200 and summary["failed"] == {}
    assert summary["code"]["commit"] is None or len(summary["code"]["commit"]) == 40
    started = code_label() or "unknown"  # each run's config.toml records the code it started with
    assert summary["code"]["runs"] == {started: 2}
    assert summary["goal"]["reach"]["missing"] == ["competence"]
    assert summary["timing"]["runs_trained"] == 2 and summary["timing"]["runs_per_hour"] > 0
    assert summary == {**summary, **summarise_results(rows, load_spec(spec).select(seeds=1))}
    md = (out / "summary.md").read_text()
    assert "| static-0 | 1 |" in md and "| sac-lag | 1 |" in md
    assert "Goal: **not decided** (missing arms: competence)." in md
    # a restart reads every finished run back: nothing trains, the numbers are the same
    before = (out / "results.csv").read_text()
    _cli(spec, out)
    assert (out / "results.csv").read_text() == before
    assert json.loads((out / "summary.json").read_text())["timing"]["runs_trained"] == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_tiny_grid_gives_identical_results_on_ray(
    tiny_local: tuple[Path, Path], tmp_path: Path
) -> None:
    import ray

    spec, local = tiny_local
    assert not ray.is_initialized()
    try:
        _cli(spec, tmp_path / "ray", "--executor", "ray")  # starts a local 2-CPU cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert not ray.is_initialized()
    with (local / "results.csv").open() as a, (tmp_path / "ray" / "results.csv").open() as b:
        assert list(csv.reader(a)) == list(csv.reader(b))


class _CopyExecutor:
    """Finishes each job by copying its run from a finished grid: no training."""

    name = "copy"
    workers = 1

    def __init__(self, finished: Path, out: Path) -> None:
        self.finished, self.out = finished.resolve(), out.resolve()

    def map_unordered(self, fn: object, items: list[ArmRun]) -> object:
        import shutil

        from safebot.bench.headline import read_done

        for job in items:
            dst = Path(job.run.run_dir)
            shutil.copytree(self.finished / dst.relative_to(self.out), dst)
            yield job, read_done(job)


@pytest.mark.slow
def test_results_and_summary_are_rewritten_after_every_finished_run(
    tiny_local: tuple[Path, Path], tmp_path: Path
) -> None:
    from safebot.bench.headline import run_headline

    spec_path, finished = tiny_local
    spec = load_spec(spec_path).select(arms=("static-0", "sac-lag"), seeds=1)
    out = tmp_path / "out"
    seen: list[set[tuple[str, str]]] = []

    def on_result(o: ArmOutcome) -> None:  # called once the outputs hold ``o``
        rows = read_results(out / "results.csv")
        seen.append({(r["arm"], r["seed"]) for r in rows})
        summary = json.loads((out / "summary.json").read_text())
        assert summary["results"]["reach"].keys() == {a for a, _ in seen[-1]}
        assert not (out / "pareto_reach.png").exists()  # the plots follow at the end

    run_headline(spec, out, _CopyExecutor(finished, out), on_result=on_result)  # type: ignore[arg-type]
    assert seen == [{("static-0", "0")}, {("static-0", "0"), ("sac-lag", "0")}]
    assert (out / "pareto_reach.png").stat().st_size > 0


@pytest.mark.slow
def test_report_writes_the_outputs_of_the_finished_runs_and_trains_nothing(
    tiny_local: tuple[Path, Path], tmp_path: Path
) -> None:
    import shutil

    spec, finished = tiny_local
    out = tmp_path / "partial"
    shutil.copytree(finished, out)
    for name in ("results.csv", "summary.json", "pareto_reach.png"):
        (out / name).unlink()
    from safebot.cli import app

    # the whole tiny grid is 3 arms x 2 seeds; 2 runs are finished
    args = ["bench", "envelope", "--spec", str(spec), "--out", str(out), "--report"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "2 of 6 run(s) finished" in res.output
    assert "reach: goal not decided (missing ['competence'])" in res.output
    assert not (out / "runs" / "reach" / "competence").exists()  # nothing trained
    rows = read_results(out / "results.csv")
    assert {(r["arm"], r["seed"]) for r in rows} == {("static-0", "0"), ("sac-lag", "0")}
    assert read_results(out / "results.csv") == read_results(finished / "results.csv")
    assert (out / "pareto_reach.png").stat().st_size > 0
    res = CliRunner().invoke(app, ["bench", "envelope", "--out", str(out), "--report"])
    assert res.exit_code == 2 and "--report needs --spec" in res.output
