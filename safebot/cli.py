"""The ``safebot`` command.

Every user-facing error (a bad task file, an unknown algorithm, a run directory
that exists, a corrupt checkpoint) prints one line naming the problem and exits
with status 2; tracebacks are for bugs.
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from safebot.modes import Algo, Backend, PolicyChoice, RewardConstraint, SchedulerChoice, ShieldMode

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Train RL policies for robot arms inside adaptive safety envelopes.",
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(
    no_args_is_help=True, help="Benchmarks (results to files; see docs/benchmarks.md)."
)
app.add_typer(bench_app, name="bench")


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _user_errors() -> tuple[type[BaseException], ...]:
    from safebot.config import SpecError
    from safebot.envelope import EnvelopeError
    from safebot.train import RunError

    return (SpecError, RunError, EnvelopeError, FileNotFoundError)


def _headless() -> None:
    if not os.environ.get("DISPLAY") and "MUJOCO_GL" not in os.environ:
        os.environ["MUJOCO_GL"] = "egl"


def _choice(enum: type[StrEnum], help: str) -> Any:
    """A ``typer.Option`` typed by ``enum``: its values are listed and arrive as members.

    An unknown value is passed on as text rather than rejected by click: the
    library rejects it with the one-line error every user error gets
    (:class:`safebot.train.RunOptions`), instead of click's multi-line usage box.
    """

    def parse(value: Any) -> Any:
        try:
            return enum(value)
        except ValueError:
            return value

    return typer.Option(parser=parse, metavar="[" + "|".join(enum) + "]", help=help)


# the run-mode options of `safebot train` (the enums of safebot.modes)
_AlgoOption = Annotated[Algo | None, _choice(Algo, "the learner (default: the task's train.algo)")]
_BackendOption = Annotated[
    Backend | None,
    _choice(Backend, "SAC's implementation (default: the task's train.backend); PPO is torch"),
]
_SchedulerOption = Annotated[
    SchedulerChoice | None,
    _choice(
        SchedulerChoice,
        "how the width moves (default: the task's scheduler table); legacy: 'none' means "
        "--shield off, 'penalty' means --shield off --constraint penalty",
    ),
]
_ShieldOption = Annotated[
    ShieldMode | None, _choice(ShieldMode, "shield on (default) or off (a baseline at the caps)")
]
_ConstraintOption = Annotated[
    RewardConstraint | None,
    _choice(
        RewardConstraint,
        "reward constraint (default: the task's train.constraint, 'none'): penalty "
        "(r - P * cost) or lagrangian (r - lambda * cost, lambda learned against "
        "train.cost_limit harm per episode)",
    ),
]
_WhichOption = Annotated[
    PolicyChoice,
    _choice(
        PolicyChoice,
        "which saved model: the best held-out evaluation's (at the width it was evaluated "
        "at) or the last (at the run's final width)",
    ),
]


def _which(value: Any) -> PolicyChoice:
    """``--which`` as a member (an unknown value: the one-line error of every user error)."""
    try:
        return PolicyChoice(str(value))
    except ValueError:
        _fail(f"unknown --which {value!r}; choose one of best, last")
        raise


@app.command()
def train(
    task: Annotated[
        str, typer.Argument(help="task TOML path or shipped name (reach, push, press, reach_joint)")
    ],
    algo: _AlgoOption = None,
    backend: _BackendOption = None,
    steps: Annotated[int | None, typer.Option(help="total environment steps")] = None,
    scheduler: _SchedulerOption = None,
    shield: _ShieldOption = None,
    constraint: _ConstraintOption = None,
    cost_penalty: Annotated[
        float, typer.Option(help="P of --constraint penalty (a fixed Lagrange multiplier)")
    ] = 1.0,
    width: Annotated[
        float | None, typer.Option(help="fixed width for --scheduler static (0 tight, 1 caps)")
    ] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    n_envs: Annotated[
        int | None, typer.Option(help="parallel training envs (Subproc when > 1)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="run directory (default runs/<task>-<time>)")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="continue the run in --out from its latest checkpoint")
    ] = False,
    force: Annotated[bool, typer.Option(help="overwrite a non-empty --out")] = False,
    eval_every: Annotated[
        int | None, typer.Option(help="steps between held-out evaluations")
    ] = None,
    eval_episodes: Annotated[int | None, typer.Option(help="episodes per evaluation")] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="steps between atomic checkpoints")
    ] = None,
    demos: Annotated[
        int | None,
        typer.Option(
            help="scripted demonstration episodes for SAC (default: the task's; 0 turns "
            "demonstrations and cloning off)"
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="live progress bar")] = True,
) -> None:
    """Train a shielded SAC/PPO policy; writes config, metrics, checkpoints, TensorBoard logs."""
    from safebot.train import RunOptions
    from safebot.train import train as run_train

    opts = RunOptions(
        algo=algo,
        backend=backend,
        steps=steps,
        scheduler=scheduler,
        shield=shield,
        constraint=constraint,
        cost_penalty=cost_penalty,
        width=width,
        seed=seed,
        n_envs=n_envs,
        eval_every=eval_every,
        eval_episodes=eval_episodes,
        checkpoint_every=checkpoint_every,
        demos=demos,
    )
    try:
        result = run_train(task, opts, out=out, resume=resume, force=force, progress=progress)
    except _user_errors() as err:
        _fail(str(err))
        return
    _echo_run(result)


def _echo_run(result: Any) -> None:
    f = result.final
    lam = f.get("lambda")  # absent (or blank) in the metrics of runs from before the column
    lam_text = f"{lam:.3g}" if isinstance(lam, int | float) else "-"
    typer.echo(
        f"run: {result.run_dir}  steps {result.steps}  width {f.get('width', 0):.2f}  "
        f"success {f.get('success_rate', 0):.0%}  eval cost rate {f.get('cost_rate', 0):.3f}  "
        f"training cost {f.get('train_cost', 0):.0f}  lambda {lam_text}  "
        f"({result.wall_s:.0f} s)"
    )


@app.command("eval")
def eval_cmd(
    run_dir: Annotated[Path, typer.Argument(help="a run directory from `safebot train`")],
    episodes: Annotated[int, typer.Option(help="evaluation episodes", min=1)] = 20,
    seed: Annotated[int, typer.Option(help="first episode seed")] = 50_000,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="write the results as JSON here")
    ] = None,
    which: _WhichOption = PolicyChoice.BEST,
) -> None:
    """Evaluate a trained run's best (or last) model: success, return, cost, interventions."""
    from safebot.train import RunDir, evaluate_run

    try:
        selected = RunDir(run_dir).select(_which(which))
        out = evaluate_run(run_dir, selected.which, episodes=episodes, seed=seed)
    except _user_errors() as err:
        _fail(str(err))
        return
    _note_fallback(which, selected.which)
    typer.echo(json.dumps(out, indent=2))
    if json_path is not None:
        json_path.write_text(json.dumps(out, indent=2))


@app.command()
def render(
    run_dir: Annotated[
        Path, typer.Argument(help="a run directory (or a task name with --scripted)")
    ],
    episodes: Annotated[int, typer.Option(min=1)] = 2,
    out: Annotated[
        Path | None, typer.Option(help="video file (default RUN_DIR/rollout.mp4)")
    ] = None,
    gif: Annotated[bool, typer.Option(help="write a GIF instead of MP4 (for docs)")] = False,
    seed: Annotated[int, typer.Option()] = 0,
    which: _WhichOption = PolicyChoice.BEST,
) -> None:
    """Render rollouts with the envelope drawn into the scene (headless: MUJOCO_GL=egl)."""
    _headless()
    from safebot.render import render_run

    try:
        path = render_run(
            run_dir, episodes=episodes, out=out, gif=gif, seed=seed, which=_which(which)
        )
    except _user_errors() as err:
        _fail(str(err))
        return
    typer.echo(f"video: {path}")


@app.command()
def plot(
    run_dir: Annotated[Path, typer.Argument(help="a run directory")],
    out: Annotated[Path | None, typer.Option(help="PNG (default RUN_DIR/curves.png)")] = None,
) -> None:
    """Plot width, evaluation success and cost against training steps."""
    from safebot.render import plot_run

    try:
        path = plot_run(run_dir, out)
    except _user_errors() as err:
        _fail(str(err))
        return
    typer.echo(f"plot: {path}")


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="a run directory from `safebot train`")],
    out: Annotated[Path, typer.Option("--out", help="the bundle directory to write")],
    force: Annotated[bool, typer.Option(help="replace an existing bundle")] = False,
    which: _WhichOption = PolicyChoice.BEST,
) -> None:
    """Export a run as a deploy bundle: TorchScript policy, shield at the model's width, hashes."""
    from safebot.deploy.bundle import BundleError
    from safebot.deploy.export import ExportError, export_run

    errors: tuple[type[BaseException], ...] = (*_user_errors(), BundleError, ExportError)
    try:
        result = export_run(run_dir, out, force=force, which=_which(which))
    except errors as err:
        _fail(_one_line(err))
        return
    _note_fallback(which, result.which)
    b = result.bundle
    width = sum(b.shield.width.values()) / max(len(b.shield.width), 1)
    typer.echo(
        f"bundle: {b.root}  sha256 {b.digest}  {b.policy.algo} policy "
        f"({b.policy.input_size} -> {b.policy.action_size}, |TorchScript - SB3| {result.max_abs_error:.1e})  "
        f"width {width:.2f}  {len(b.manifest['files'])} files  model {result.which}"
    )


@app.command("deploy")
def deploy_cmd(
    bundle: Annotated[Path, typer.Argument(help="a bundle directory from `safebot export`")],
    robot: Annotated[
        str | None,
        typer.Option(help="fr3 | panda (pylibfranka, 1 kHz) or ur5e (ur_rtde speedJ, 500 Hz)"),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(help="the robot's address; without it a stub starts on loopback"),
    ] = None,
    controller: Annotated[
        str | None,
        typer.Option(help="a controller profile (path or shipped name) overriding the robot's"),
    ] = None,
    seconds: Annotated[float, typer.Option(help="how long the policy runs")] = 10.0,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="also write the report here")
    ] = None,
    realtime: Annotated[
        bool, typer.Option(help="SCHED_FIFO for loop, policy worker and stub where permitted")
    ] = False,
    goal: Annotated[
        str | None, typer.Option(help="reach goal x,y,z (m); default: the task's first goal")
    ] = None,
    obstacles: Annotated[
        bool, typer.Option(help="put the task's keep-out boxes into the stub's plant")
    ] = True,
) -> None:
    """Run a bundle on a robot (--robot fr3 --host IP) or the matching stub; prints the JSON report.

    Exit status: 0 clean run, 1 controller fault (reflex, protective stop), 3 robot/stub
    lost, 4 non-finite command, 5 policy error, 2 bad input (a host that does not answer,
    another protocol version, a bundle for another arm, ...).
    """
    from safebot.deploy.bundle import BundleError
    from safebot.deploy.run import DeployError, deploy, parse_goal

    if robot is None:
        _fail("give --robot fr3, panda or ur5e (the arm the bundle runs on)")
        return
    errors: tuple[type[BaseException], ...] = (*_user_errors(), BundleError, DeployError)
    try:
        g = None if goal is None else parse_goal(goal)
        result = deploy(
            bundle,
            robot,
            controller=controller,
            host=host,
            seconds=seconds,
            goal=g,
            realtime=realtime,
            obstacles=obstacles,
        )
    except errors as err:
        _fail(_one_line(err))
        return
    text = result.to_json()
    typer.echo(text)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text + "\n")
    r = result.report
    if not r.ok:
        typer.secho(f"deploy failed ({r.exit_reason}): {r.message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(result.exit_code)


@app.command("stub")
def stub_cmd(
    robot: Annotated[str, typer.Argument(help="fr3 | panda | ur5e")],
    host: Annotated[
        str,
        typer.Option(help="address to listen on (e.g. 127.0.0.2; libfranka always uses port 1337)"),
    ] = "127.0.0.1",
    realtime: Annotated[bool, typer.Option(help="SCHED_FIFO where permitted")] = False,
) -> None:
    """A controller stub speaking the robot's own protocol until Ctrl-C.

    fr3 / panda: libfranka's protocol (version 10) on TCP 1337 + UDP; pylibfranka connects
    as to a robot. ur5e: RTDE (30004), dashboard (29999) and script port (30003) for
    ur_rtde. Then `safebot deploy BUNDLE --robot ROBOT --host HOST`. A taken address is
    one line and exit status 2.
    """
    if robot in ("fr3", "panda"):
        from safebot.deploy.franka.stub import serve  # imports pybullet (prints a banner)

        raise typer.Exit(serve(robot, host=host, realtime=realtime))
    if robot == "ur5e":
        from safebot.deploy.ur.stub import main as ur_main

        raise typer.Exit(ur_main(["--host", host, *(["--realtime"] if realtime else [])]))
    _fail(f"stub robot must be fr3, panda or ur5e, got {robot!r}")


def _note_fallback(asked: Any, used: Any) -> None:
    if str(asked) != str(used):
        typer.secho(
            f"note: the run has no {asked} model (no held-out evaluation saved one); "
            f"using the {used} one",
            err=True,
        )


def _one_line(err: BaseException) -> str:
    """The first line of a multi-line error (one line per invalid key), with a count of the rest."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(err).__name__
    return f"{lines[0]} (and {len(lines) - 1} more)"


def _write_json(result: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
        typer.echo(f"results: {path}")


@bench_app.command("kernels")
def bench_kernels(
    problems: Annotated[int, typer.Option(min=1)] = 2000,
    batch: Annotated[int, typer.Option(min=1)] = 64,
    seed: Annotated[int, typer.Option()] = 0,
    json_path: Annotated[Path | None, typer.Option("--json")] = None,
) -> None:
    """Projection speed side by side: numba single/batched, quadprog, OSQP, proxsuite."""
    from safebot.bench import kernels as kb

    result = kb.run(problems=problems, batch=batch, seed=seed, json_path=json_path)
    typer.echo(kb.format_table(result))


@bench_app.command("shield")
def bench_shield(
    task: Annotated[str, typer.Option()] = "reach",
    steps: Annotated[int, typer.Option(min=10)] = 2000,
    json_path: Annotated[Path | None, typer.Option("--json")] = None,
) -> None:
    """env.step with and without the shield, same env, same run."""
    from safebot.bench.envs import bench_shield as run

    try:
        result = run(task, steps=steps)
    except _user_errors() as err:
        _fail(str(err))
        return
    typer.echo(json.dumps(result, indent=2))
    _write_json(result, json_path)


@bench_app.command("safety")
def bench_safety(
    tasks: Annotated[
        str, typer.Option(help="comma-separated task names")
    ] = "reach,reach_joint,push,press",
    steps: Annotated[int, typer.Option(min=1)] = 100_000,
    seed: Annotated[int, typer.Option()] = 0,
    json_path: Annotated[Path | None, typer.Option("--json")] = None,
) -> None:
    """Random-policy steps through the filter, every command checked against the test oracle."""
    from safebot.bench import safety

    try:
        result = safety.run([t for t in tasks.split(",") if t], steps, seed, json_path)
    except _user_errors() as err:
        _fail(str(err))
        return
    typer.echo(json.dumps(result, indent=2))
    if not result["goal_met"]:
        raise typer.Exit(1)


@bench_app.command("envs")
def bench_envs(
    steps: Annotated[int, typer.Option(min=10)] = 2000,
    json_path: Annotated[Path | None, typer.Option("--json")] = None,
) -> None:
    """env.step of every task against gymnasium-robotics FetchReach-v4, same run."""
    from safebot.bench.envs import bench_envs as run

    result = run(steps=steps)
    typer.echo(json.dumps(result, indent=2))
    _write_json(result, json_path)


@bench_app.command("train")
def bench_train(
    out: Annotated[
        Path, typer.Option(help="output directory (one run per arm; a restart resumes them)")
    ] = Path("runs/bench_train"),
    task: Annotated[str, typer.Option(help="task name or TOML path")] = "reach",
    steps: Annotated[int, typer.Option(min=1, help="training steps per arm")] = 30_000,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    eval_every: Annotated[
        int | None, typer.Option(min=1, help="steps between held-out evaluations (task default)")
    ] = None,
    eval_episodes: Annotated[
        int | None, typer.Option(min=1, help="episodes per evaluation (task default)")
    ] = None,
    final_episodes: Annotated[
        int, typer.Option(min=1, help="fresh episodes of each arm's best model at the end")
    ] = 50,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="also copy the report here")
    ] = None,
) -> None:
    """The task's learner against plain SB3-torch SAC+HER, both at once: env steps/s, curves."""
    import sys

    from safebot.bench.train import bench_train as run

    try:
        result = run(
            out,
            task=task,
            steps=steps,
            seed=seed,
            eval_every=eval_every,
            eval_episodes=eval_episodes,
            final_episodes=final_episodes,
            command="safebot " + " ".join(sys.argv[1:]),
        )
    except _user_errors() as err:
        _fail(str(err))
        return
    except RuntimeError as err:  # an arm failed: the message names it
        _fail(str(err))
        return
    r = result.report
    for name, arm in r["arms"].items():
        typer.echo(
            f"{name:8s} {arm['env_steps_per_s']} env steps/s  wall {arm['wall_s']} s  "
            f"90 % at step {arm['steps_to_90']}  final {arm['final']['success_rate']:.0%} "
            f"on {arm['final']['episodes']} fresh episodes"
        )
    typer.echo(f"ratio (safebot / sb3 env steps per s): {r['ratio_env_steps_per_s']}")
    _write_json(r, json_path)


@bench_app.command("learners")
def bench_learners(
    out: Annotated[
        Path, typer.Option(help="run directories, one per task and seed (a restart resumes)")
    ] = Path("runs/learners"),
    tasks: Annotated[
        str, typer.Option(help="comma-separated task names or TOML paths")
    ] = "reach,reach_ppo,push,press",
    seeds: Annotated[int, typer.Option(min=1, help="seeds 0..N-1 per task")] = 3,
    workers: Annotated[int, typer.Option(min=1, help="runs at once")] = 1,
    steps: Annotated[
        int | None, typer.Option(min=1, help="training steps per run (task default)")
    ] = None,
    final_episodes: Annotated[int, typer.Option(min=1, help="fresh episodes per run")] = 50,
    results: Annotated[
        Path | None,
        typer.Option(
            help="also write summary.json and report.json here (other tasks there are kept)"
        ),
    ] = None,
) -> None:
    """Each task's shipped recipe on several seeds: best model's success on fresh episodes."""
    import sys

    from safebot.bench.learners import bench_learners as run

    names = tuple(t.strip() for t in tasks.split(",") if t.strip())
    try:
        report = run(
            out,
            tasks=names,
            seeds=tuple(range(seeds)),
            workers=workers,
            steps=steps,
            final_episodes=final_episodes,
            results=results,
            command="safebot " + " ".join(sys.argv[1:]),
        )
    except _user_errors() as err:
        _fail(str(err))
        return
    for name, goal in report["goals"].items():
        typer.echo(f"{name}: goal {goal}")
    if report["failed"]:
        for name, why in report["failed"].items():
            typer.secho(f"failed: {name}: {why}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


@bench_app.command("envelope")
def bench_envelope(
    out: Annotated[Path, typer.Option(help="output directory (a restart skips finished runs)")],
    spec: Annotated[
        Path | None,
        typer.Option(help="sweep spec file (bench/headline.toml): tasks, budgets, arms, goal"),
    ] = None,
    tasks: Annotated[
        str | None,
        typer.Option(help="comma-separated task names or TOML paths (with --spec: a subset)"),
    ] = None,
    arms: Annotated[str | None, typer.Option(help="with --spec: a subset of its arms")] = None,
    schedulers: Annotated[
        str | None,
        typer.Option(
            help="without --spec, comma-separated: "
            "none,penalty,static-tight,static-loose,linear,pi,competence"
        ),
    ] = None,
    seeds: Annotated[
        int | None, typer.Option(min=1, help="seeds 0..N-1 (default 3; with --spec: its first N)")
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(min=1, help="training steps per run (default 5000; with --spec: a try)"),
    ] = None,
    executor: Annotated[str, typer.Option(help="local (process pool) | ray")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: start a local one)")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="runs at once (local pool / local Ray)")] = 1,
    eval_every: Annotated[
        int | None, typer.Option(min=1, help="steps between held-out evaluations (task default)")
    ] = None,
    eval_episodes: Annotated[
        int | None, typer.Option(min=1, help="episodes per evaluation (task default)")
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(min=1, help="steps between checkpoints (default steps/4)")
    ] = None,
    progress: Annotated[bool, typer.Option(help="live progress across runs")] = True,
    report: Annotated[
        bool,
        typer.Option(
            "--report", help="with --spec: train nothing, write the outputs of the finished runs"
        ),
    ] = False,
    merge: Annotated[
        list[Path] | None,
        typer.Option(
            "--merge",
            help=(
                "with --spec, repeatable: train nothing; merge these reports' results.csv "
                "into --out, a later one replacing the (task, arm) pairs it holds"
            ),
        ),
    ] = None,
) -> None:
    """Envelope expansion: tasks x arms x seeds -> results.csv, summary.json, plots.

    With --spec the grid, budgets and arms come from the spec file
    (docs/benchmarks_envelope.md); --tasks, --arms, --seeds and --steps shrink it.
    Without it, the older grid of benchmark scheduler names runs.
    """
    from safebot.bench.executors import make_executor

    items = _comma_list
    errors: tuple[type[BaseException], ...] = (*_user_errors(), ValueError)  # SweepError too
    try:
        ex = make_executor(executor, workers=workers, address=ray_address)
        if spec is None:
            _refuse_without_spec(arms=arms is not None, report=report, merge=bool(merge))
            _legacy_envelope(
                out, ex, items(tasks), items(schedulers), seeds, steps, progress,
                (eval_every, eval_episodes, checkpoint_every),
            )  # fmt: skip
            return
        _refuse_with_spec(
            {"--schedulers": schedulers, "--eval-every": eval_every,
             "--eval-episodes": eval_episodes, "--checkpoint-every": checkpoint_every}
        )  # fmt: skip
        if merge:
            _merge(out, spec, merge)
            return
        _headline(out, ex, spec, items(tasks), items(arms), seeds, steps, progress, report)
    except errors as err:
        _fail(str(err))


def _comma_list(text: str | None) -> tuple[str, ...] | None:
    """``"a, b,"`` -> ``("a", "b")``; ``None`` stays ``None`` (the option was not given)."""
    return None if text is None else tuple(x.strip() for x in text.split(",") if x.strip())


def _refuse_without_spec(**given: bool) -> None:
    """Options (``--name`` -> whether it was given) that only a spec file gives a meaning to."""
    from safebot.bench.envelope import SweepError

    for name, was_given in given.items():
        if was_given:
            raise SweepError(f"--{name} needs --spec (without it, use --schedulers)")


def _refuse_with_spec(given: dict[str, object]) -> None:
    """With ``--spec`` these options belong in the spec file."""
    from safebot.bench.envelope import SweepError

    clash = [flag for flag, v in given.items() if v is not None]
    if clash:
        raise SweepError(f"{', '.join(clash)}: with --spec, set these in the spec file")


def _legacy_envelope(
    out: Path,
    ex: Any,
    tasks: tuple[str, ...] | None,
    schedulers: tuple[str, ...] | None,
    seeds: int | None,
    steps: int | None,
    progress: bool,
    every: tuple[int | None, int | None, int | None],
) -> None:
    """``bench envelope`` without a spec: the benchmark's scheduler names (safebot.bench.envelope)."""
    from safebot.bench.envelope import SCHEDULERS, SweepConfig, sweep

    steps = steps or 5000
    cfg = SweepConfig(
        tasks=tasks or ("reach",),
        schedulers=schedulers or tuple(SCHEDULERS),
        seeds=tuple(range(seeds or 3)),
        steps=steps,
        out=out,
        eval_every=every[0],
        eval_episodes=every[1],
        checkpoint_every=every[2] or max(steps // 4, 1),
    )
    result = sweep(cfg, ex, progress=progress)
    typer.echo((out / "summary.md").read_text())
    typer.echo("files: " + ", ".join(str(p) for p in result.files))
    _report_failures(result.failed)


def _report_failures(failed: dict[str, str]) -> None:
    for label, why in failed.items():
        typer.secho(f"failed: {label}: {why}", fg=typer.colors.RED, err=True)
    if failed:
        raise typer.Exit(1)


def _merge(out: Path, spec_path: Path, sources: list[Path]) -> None:
    """``bench envelope --spec S --merge A --merge B``: one report from several."""
    from safebot.bench.headline import load_spec, merge_reports

    result = merge_reports(load_spec(spec_path), sources, out)
    for src in result.summary["merged_from"]:
        typer.echo(f"{src['dir']}: {src['runs']} run(s) of {', '.join(src['pairs']) or 'nothing'}")
    for task, goal in result.summary["goal"].items():
        met = {True: "met", False: "not met", None: "not decided"}[goal["met"]]
        typer.echo(f"{task}: goal {met}")
    typer.echo("files: " + ", ".join(str(p) for p in result.files))


def _headline(
    out: Path,
    ex: Any,
    spec_path: Path,
    tasks: tuple[str, ...] | None,
    arms: tuple[str, ...] | None,
    seeds: int | None,
    steps: int | None,
    progress: bool,
    report: bool = False,
) -> None:
    """``bench envelope --spec``: the grid of a sweep spec file (safebot.bench.headline)."""
    from safebot.bench.headline import load_spec, run_headline

    spec = load_spec(spec_path).select(tasks=tasks, arms=arms, seeds=seeds, steps=steps)
    n = len(spec.tasks) * len(spec.arms) * spec.seeds
    if progress and not report:
        typer.echo(f"{n} run(s) on {ex.name} x{ex.workers}; finished runs are read back")

    def done(o: Any) -> None:
        if progress:
            f = o.final
            typer.echo(
                f"{o.job.run.label}: final success {f['success_rate']:.0%}, harm/episode "
                f"{f['harm_per_episode']:.2f} ({o.wall_s:.0f} s)"
            )

    def failed(label: str, why: str) -> None:
        typer.secho(f"{label} failed: {why[:200]}", fg=typer.colors.RED, err=True)

    result = run_headline(spec, out, ex, on_result=done, on_failure=failed, train=not report)
    if report:
        typer.echo(f"{len(result.outcomes)} of {n} run(s) finished; outputs written from those")
    for task, goal in result.summary["goal"].items():
        met = {True: "met", False: "not met", None: "not decided"}[goal["met"]]
        typer.echo(
            f"{task}: goal {met}" + (f" (missing {goal['missing']})" if goal["missing"] else "")
        )
    typer.echo("files: " + ", ".join(str(p) for p in result.files))
    _report_failures(result.failed)


def main() -> None:
    """Console-script entry point.

    Applies safebot's process defaults (:func:`safebot.runtime.configure_process`)
    before any command imports numba or torch; the commands import them lazily.
    """
    from safebot.runtime import configure_process

    configure_process()
    try:
        app()
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
