"""Export bundles: TorchScript equals SB3, the shield and task travel along, tampering is caught."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from safebot.cli import app
from safebot.deploy.bundle import MANIFEST, BundleError, load_bundle, verify_bundle
from safebot.deploy.export import EXPORT_TOLERANCE, export_run
from safebot.train import RunError, RunOptions, final_width, load_policy, load_run_config, make_env
from safebot.train import train as run_train

TINY = RunOptions(steps=128, eval_every=64, eval_episodes=1, checkpoint_every=64)
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``tiny_run(name)``: a 128-step reach run, trained once per module and learner.

    ``name`` is ``algo`` (the task's backend: SBX's JAX SAC for Reach) or
    ``algo-backend`` (``sac-torch``: SB3's torch SAC).
    """
    runs: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in runs:
            algo, _, backend = name.partition("-")
            out = tmp_path_factory.mktemp(f"run_{name}") / "run"
            opts = RunOptions(**{**TINY.__dict__, "algo": algo, "backend": backend or None})
            run_train("reach", opts, out=out, progress=False)
            runs[name] = out
        return runs[name]

    return get


@pytest.fixture
def bundle(tiny_run: Callable[[str], Path], tmp_path: Path) -> Path:
    """A fresh SAC bundle per test (tests tamper with it)."""
    return export_run(tiny_run("sac"), tmp_path / "bundle").bundle.root


def _flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    offset = min(offset, len(data) - 1)
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "learner", ["sac", "sac-torch", pytest.param("ppo", marks=pytest.mark.slow)]
)
def test_torchscript_matches_the_trained_policys_predict(
    tiny_run: Callable[[str], Path], tmp_path: Path, learner: str
) -> None:
    run = tiny_run(learner)
    algo = learner.partition("-")[0]
    result = export_run(run, tmp_path / "b")
    assert result.max_abs_error <= EXPORT_TOLERANCE
    b = load_bundle(tmp_path / "b")  # verified from disk, not the export's objects
    module = b.load_module()
    _, model = load_policy(run)
    assert type(model).__module__.split(".")[0] == (
        "sbx" if learner == "sac" else "stable_baselines3"
    )
    # the input order is SB3's: CombinedExtractor over the (sorted) Dict keys
    keys = [k for k, _ in b.policy.inputs]
    assert (
        keys
        == sorted(model.observation_space.spaces)
        == ["achieved_goal", "desired_goal", "observation"]
    )
    assert b.policy.algo == algo
    space = model.observation_space
    space.seed(123)
    for _ in range(100):
        obs = space.sample()
        expected, _ = model.predict(obs, deterministic=True)
        with torch.inference_mode():
            got = module(torch.from_numpy(b.policy.flatten(obs))).numpy()[0]
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    # a batch, in the observation range the arm actually produces
    env = make_env(load_run_config(run)[0], width=final_width(run))
    obs, _ = env.reset(seed=1)
    for _ in range(10):
        expected, _ = model.predict(obs, deterministic=True)
        with torch.inference_mode():
            got = module(torch.from_numpy(b.policy.flatten(obs))).numpy()[0]
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
        obs, *_ = env.step(expected)


def test_bundle_holds_shield_task_versions_and_scene(
    tiny_run: Callable[[str], Path], bundle: Path
) -> None:
    run = tiny_run("sac")
    b = load_bundle(bundle)
    spec, _ = load_run_config(run)
    assert b.spec.model_dump() == spec.model_dump()
    env = make_env(spec, width=final_width(run))
    assert b.shield.width == env.envelope.width
    assert b.shield.action_mode == spec.robot.action_mode == "ee_velocity"
    assert b.shield.control_hz == spec.robot.control_hz
    np.testing.assert_array_equal(b.shield.action_scale, env.arm.scale)
    ours, theirs = b.shield.envelope().bounds(), env.envelope.bounds()
    for name in vars(theirs):
        np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name), err_msg=name)
    for w in (0.0, 0.5, 1.0):  # start and cap travel, not only the bound at the width
        for name in vars(theirs):
            a, c = b.shield.envelope().bounds(w), env.envelope.bounds(w)
            np.testing.assert_array_equal(getattr(a, name), getattr(c, name), err_msg=name)
    assert set(b.versions) >= {"safebot", "torch", "mujoco", "numpy"}
    assert b.versions["torch"] == torch.__version__
    assert b.scene_path.is_file() and (bundle / "assets/panda/panda.xml").is_file()
    layout = dict(b.policy.observation_layout)
    # reach observes the end effector only (observation = "cartesian"): no joint state
    assert list(layout)[:2] == ["ee_pos", "ee_vel"] and "q" not in layout
    assert layout["ee_vel"] == 3 and "width/ee_speed" in layout
    assert sum(layout.values()) == dict(b.policy.inputs)["observation"]
    manifest = json.loads((bundle / MANIFEST).read_text())
    on_disk = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    assert sorted([*manifest["files"], MANIFEST]) == on_disk
    assert manifest["hash"] == b.digest


def test_kinematics_come_from_the_bundles_own_scene(bundle: Path) -> None:
    b = load_bundle(bundle)
    assert Path(b.spec_for_kinematics().robot.scene) == b.scene_path
    assert b.scene_path.is_relative_to(bundle)


@pytest.mark.parametrize(
    ("tamper", "needle"),
    [
        (lambda b: _flip_byte(b / "policy.pt"), r"policy\.pt: SHA-256 .* tampered or corrupt"),
        (lambda b: _flip_byte(b / "shield.json", 50), r"shield\.json: SHA-256"),
        (lambda b: _flip_byte(b / "config.toml", 10), r"config\.toml: SHA-256"),
        (lambda b: _flip_byte(b / "assets/panda/panda.xml", 500), r"panda\.xml: SHA-256"),
        (lambda b: (b / "policy.pt").write_bytes(b"short"), r"policy\.pt: 5 bytes"),
        (lambda b: (b / "versions.json").unlink(), r"versions\.json: missing"),
        (lambda b: (b / "assets/panda/meshes/link3.obj").unlink(), r"link3\.obj: missing"),
        (lambda b: (b / "extra.txt").write_text("x"), r"extra\.txt: not listed in manifest\.json"),
        (lambda b: (b / MANIFEST).unlink(), r"manifest\.json: missing"),
        (
            lambda b: (b / MANIFEST).write_text("{not json"),
            r"manifest\.json: bad manifest: not valid JSON",
        ),
        (
            lambda b: _edit_manifest(b, lambda m: m.update(hash="0" * 64)),
            r"manifest\.json: bad manifest: its hash",
        ),
        (
            lambda b: _edit_manifest(b, lambda m: m.update(format_version=99)),
            r"manifest\.json: bad manifest: format_version",
        ),
        (
            lambda b: _edit_manifest(b, lambda m: m["files"].pop("policy.pt")),
            r"does not list the required file policy\.pt",
        ),
        (
            lambda b: _edit_manifest(
                b, lambda m: m["files"].update({"../x": m["files"]["policy.pt"]})
            ),
            r"not a plain relative path",
        ),
        (
            lambda b: _edit_manifest(b, lambda m: m["files"]["shield.json"].update(sha256="xyz")),
            r"entry for 'shield\.json'",
        ),
    ],
    ids=[
        "policy-byte",
        "shield-byte",
        "config-byte",
        "scene-byte",
        "truncated",
        "missing-file",
        "missing-mesh",
        "extra-file",
        "no-manifest",
        "manifest-not-json",
        "manifest-hash",
        "manifest-version",
        "manifest-unlists",
        "manifest-traversal",
        "manifest-entry",
    ],
)
def test_tampered_bundle_is_rejected_with_one_line_naming_the_file(
    bundle: Path, tamper: Callable[[Path], object], needle: str
) -> None:
    verify_bundle(bundle)  # intact before
    tamper(bundle)
    with pytest.raises(BundleError, match=needle) as info:
        load_bundle(bundle)
    assert "\n" not in str(info.value)


def _edit_manifest(bundle: Path, edit: Callable[[dict], object]) -> None:
    path = bundle / MANIFEST
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))


def test_missing_bundle_and_plain_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "f")


def test_export_refuses_to_overwrite_without_force(
    tiny_run: Callable[[str], Path], bundle: Path
) -> None:
    digest = load_bundle(bundle).digest
    with pytest.raises(BundleError, match="exists; pass --force"):
        export_run(tiny_run("sac"), bundle)
    assert load_bundle(bundle).digest == digest
    export_run(tiny_run("sac"), bundle, force=True)
    verify_bundle(bundle)
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_export_of_a_non_run_is_a_run_error(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="not a safebot run directory"):
        export_run(tmp_path, tmp_path / "b")


def test_cli_export(tiny_run: Callable[[str], Path], tmp_path: Path) -> None:
    out = tmp_path / "cli_bundle"
    result = runner.invoke(app, ["export", str(tiny_run("sac")), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert load_bundle(out).digest in result.output
    again = runner.invoke(app, ["export", str(tiny_run("sac")), "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    assert len(again.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["export", "/nonexistent/run", "--out", "{tmp}/b"], "not a safebot run directory"),
        (
            ["deploy", "/nonexistent/bundle", "--robot", "fr3"],
            "bundle /nonexistent/bundle not found",
        ),
    ],
)
def test_cli_user_errors_are_one_line_exit_2(args: list[str], needle: str, tmp_path: Path) -> None:
    result = runner.invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_deploy_rejects_a_tampered_bundle(bundle: Path) -> None:
    _flip_byte(bundle / "policy.pt")
    result = runner.invoke(app, ["deploy", str(bundle), "--robot", "fr3"])
    assert result.exit_code == 2
    assert "policy.pt" in result.output and len(result.output.strip().splitlines()) == 1
    shutil.rmtree(bundle)


def test_export_carries_the_observation_statistics_of_a_normalised_run(tmp_path: Path) -> None:
    from safebot.spec import TaskSpec, load_task, parse_model
    from safebot.train import NormalizedModel

    data = load_task("reach").model_dump(mode="json")
    data["train"].update(
        normalize_obs=True, learning_starts=50, total_steps=128, eval_every=64, eval_episodes=1
    )
    run = tmp_path / "run"
    run_train(parse_model(data, TaskSpec, "reach"), out=run, progress=False)
    result = export_run(run, tmp_path / "b")
    assert result.max_abs_error <= EXPORT_TOLERANCE
    module = load_bundle(tmp_path / "b").load_module()
    policy = load_bundle(tmp_path / "b").policy
    _, model = load_policy(run)
    assert isinstance(model, NormalizedModel)
    # raw observations in the range the arm produces: the statistics matter there
    env = make_env(load_run_config(run)[0])
    obs, _ = env.reset(seed=3)
    env.close()
    expected, _ = model.predict(obs, deterministic=True)
    unnormalised, _ = model.model.predict(obs, deterministic=True)
    with torch.inference_mode():
        got = module(torch.from_numpy(policy.flatten(obs))).numpy()[0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert np.max(np.abs(unnormalised - expected)) > 1e-3  # without them the action differs
