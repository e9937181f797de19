"""Task specs: every shipped TOML loads; every bad file fails with a SpecError naming file and key."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

import safebot.envs
from safebot.envs import make_task_env
from safebot.resources import data_dir
from safebot.spec import SpecError, TaskSpec, load_task, parse_model

TASKS_DIR = data_dir("tasks")
SHIPPED = sorted(TASKS_DIR.glob("*.toml"))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


def _dump(data: dict[str, Any], prefix: str = "") -> str:
    """Just enough TOML writing for the specs (tables of scalars and lists)."""
    plain = {k: v for k, v in data.items() if not isinstance(v, dict)}
    out = [f"[{prefix}]"] if prefix and plain else []
    out += [f"{k} = {_toml_value(v)}" for k, v in plain.items()]
    for k, v in data.items():
        if isinstance(v, dict):
            out.append(_dump(v, f"{prefix}.{k}" if prefix else k))
    return "\n".join(out) + "\n"


def _reach() -> dict[str, Any]:
    return tomllib.loads((TASKS_DIR / "reach.toml").read_text())


def _write(tmp_path: Path, data: dict[str, Any], name: str = "task.toml") -> Path:
    path = tmp_path / name
    path.write_text(_dump(data))
    return path


def _error(path: Path) -> str:
    with pytest.raises(SpecError) as exc:
        load_task(path)
    msg = str(exc.value)
    assert str(path) in msg, f"message does not name the file: {msg}"
    return msg


def test_dump_roundtrips_the_shipped_spec(tmp_path: Path) -> None:
    # the helper the other tests rely on must write what tomllib reads back
    data = _reach()
    assert tomllib.loads(_dump(data)) == data
    assert load_task(_write(tmp_path, data)).model_dump() == load_task("reach").model_dump()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_task_loads(path: Path) -> None:
    spec = load_task(path)
    assert isinstance(spec, TaskSpec)
    assert spec.source == str(path.resolve())
    assert spec.task.name == path.stem
    by_name = load_task(path.stem)
    assert by_name == spec


def test_shipped_tasks_cover_the_three_kinds_and_both_action_modes() -> None:
    specs = [load_task(p) for p in SHIPPED]
    assert {s.task.kind for s in specs} >= {"reach", "push", "press"}
    reach_modes = {s.robot.action_mode for s in specs if s.task.kind == "reach"}
    assert reach_modes == {"joint_velocity", "ee_velocity"}


def test_spec_is_frozen() -> None:
    spec = load_task("reach")
    with pytest.raises(ValueError):
        spec.robot.control_hz = 10.0  # type: ignore[misc]


def test_malformed_toml(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[robot\nscene = "x"\n')
    msg = _error(path)
    assert "invalid TOML" in msg
    assert "line 1" in msg


def test_unknown_key_names_its_path(tmp_path: Path) -> None:
    data = _reach()
    data["robot"]["colour"] = 1
    msg = _error(_write(tmp_path, data))
    assert "[robot.colour]" in msg
    assert "unknown key" in msg


def test_unknown_section(tmp_path: Path) -> None:
    data = _reach()
    data["limitz"] = {"ee_speed": {"start": 0.1, "cap": 1.0}}
    msg = _error(_write(tmp_path, data))
    assert "[limitz]" in msg


def test_missing_required_key(tmp_path: Path) -> None:
    data = _reach()
    del data["robot"]["scene"]
    msg = _error(_write(tmp_path, data))
    assert "[robot.scene]" in msg
    assert "missing" in msg


def test_missing_required_section(tmp_path: Path) -> None:
    data = _reach()
    del data["goal"]
    msg = _error(_write(tmp_path, data))
    assert "[goal]" in msg
    assert "missing" in msg


def test_negative_control_rate(tmp_path: Path) -> None:
    data = _reach()
    data["robot"]["control_hz"] = -25.0
    msg = _error(_write(tmp_path, data))
    assert "[robot.control_hz]" in msg
    assert "greater than 0" in msg  # the allowed range
    assert "-25.0" in msg  # and what was given


def test_wrong_type(tmp_path: Path) -> None:
    data = _reach()
    data["robot"]["substeps"] = "twenty"
    msg = _error(_write(tmp_path, data))
    assert "[robot.substeps]" in msg


def test_unknown_action_mode(tmp_path: Path) -> None:
    data = _reach()
    data["robot"]["action_mode"] = "torque"
    msg = _error(_write(tmp_path, data))
    assert "[robot.action_mode]" in msg
    assert "joint_velocity" in msg and "ee_velocity" in msg


def test_ee_speed_cap_below_start(tmp_path: Path) -> None:
    data = _reach()
    data["limits"]["ee_speed"] = {"start": 0.5, "cap": 0.2}
    msg = _error(_write(tmp_path, data))
    assert "limits.ee_speed" in msg
    assert "0.2" in msg and "0.5" in msg


def test_per_joint_velocity_cap_below_start(tmp_path: Path) -> None:
    data = _reach()
    data["limits"]["joint_velocity"] = {"start": 0.4, "cap": [2.0, 2.0, 0.3, 2.0, 2.0, 2.0, 2.0]}
    msg = _error(_write(tmp_path, data))
    assert "limits.joint_velocity" in msg
    assert "index 2" in msg


def test_keepout_cap_margin_above_start(tmp_path: Path) -> None:
    data = _reach()
    data["limits"]["keepout"]["start"] = 0.02
    data["limits"]["keepout"]["cap"] = 0.08
    msg = _error(_write(tmp_path, data))
    assert "limits.keepout" in msg
    assert "margin" in msg


def test_joint_position_cap_margin_above_start(tmp_path: Path) -> None:
    data = _reach()
    data["limits"]["joint_position"]["cap"] = 0.3
    msg = _error(_write(tmp_path, data))
    assert "limits.joint_position" in msg


def test_workspace_start_outside_cap(tmp_path: Path) -> None:
    data = _reach()
    data["limits"]["workspace"]["start_high"] = [0.70, 0.40, 0.95]  # cap_high z is 0.80
    msg = _error(_write(tmp_path, data))
    assert "limits.workspace" in msg
    assert "axis 2" in msg
    assert "0.95" in msg


def test_workspace_wrong_length(tmp_path: Path) -> None:
    data = _reach()
    data["limits"]["workspace"]["cap_low"] = [0.1, -0.6]
    msg = _error(_write(tmp_path, data))
    assert "[limits.workspace.cap_low" in msg


def _env_error(path: Path) -> str:
    """Errors that need the scene (its arm's joints and servos) come when the env is built."""
    spec = load_task(path)
    with pytest.raises(SpecError) as exc:
        make_task_env(spec)
    msg = str(exc.value)
    assert str(path) in msg, f"message does not name the file: {msg}"
    return msg


def test_joint_velocity_cap_above_the_panda(tmp_path: Path) -> None:
    data = _reach()
    data["limits"]["joint_velocity"]["cap"] = [2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 3.0]
    msg = _env_error(_write(tmp_path, data))
    assert "limits.joint_velocity" in msg
    assert "2.61" in msg  # the allowed maximum
    assert "3.0" in msg


def test_wrong_home_length(tmp_path: Path) -> None:
    data = _reach()
    data["robot"]["home"] = [0.0, -0.785, 0.0]
    msg = _env_error(_write(tmp_path, data))
    assert "robot.home" in msg
    assert "7" in msg and "3" in msg


def test_goal_low_above_high(tmp_path: Path) -> None:
    data = _reach()
    data["goal"]["low"] = [0.7, -0.3, 0.08]
    msg = _error(_write(tmp_path, data))
    assert "goal" in msg
    assert "low[0]" in msg


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    data = _reach()
    data["robot"]["colour"] = 1
    data["cost"]["arm_table_force"] = -1.0
    msg = _error(_write(tmp_path, data))
    assert "[robot.colour]" in msg
    assert "[cost.arm_table_force]" in msg


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("cost", "safe_ee_speed", 0.6, "free-space speed is not harm"),
        ("cost", "safe_contact_force", 40.0, "split per contact class"),
        ("cost", "plate_damage_force", 0.0, "[cost.plate_damage_force]"),
        ("uncertainty", "keepout_sigma", -0.01, "[uncertainty.keepout_sigma]"),
        ("uncertainty", "object_mass", [0.3, 0.1], "need 0 < low <= high"),
        ("uncertainty", "surface_sigma", "a lot", "[uncertainty.surface_sigma]"),
    ],
)
def test_harm_and_uncertainty_keys_are_validated(
    tmp_path: Path, section: str, key: str, value: object, expected: str
) -> None:
    data = _reach()
    data.setdefault(section, {})[key] = value
    path = _write(tmp_path, data)
    msg = _error(path)
    assert str(path) in msg and expected in msg, msg


def test_missing_task_file_names_the_paths_tried(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(SpecError) as exc:
        load_task(missing)
    assert str(missing) in str(exc.value)
    with pytest.raises(SpecError) as exc:
        load_task("no_such_task")
    msg = str(exc.value)
    assert "no_such_task" in msg
    assert str(TASKS_DIR / "no_such_task.toml") in msg


def _with_scene(tmp_path: Path, scene: str) -> Path:
    data = _reach()
    data["robot"]["scene"] = scene
    return _write(tmp_path, data)


def test_missing_scene_names_the_path(tmp_path: Path) -> None:
    scene = tmp_path / "no_scene.xml"
    task = _with_scene(tmp_path, str(scene))
    load_task(task)  # the spec itself is fine; the scene is checked when the env is built
    with pytest.raises(SpecError) as exc:
        safebot.envs.make(task)
    assert type(exc.value) is SpecError
    msg = str(exc.value)
    assert str(task) in msg
    assert "robot.scene" in msg
    assert str(scene) in msg


def test_broken_scene_xml_is_a_spec_error(tmp_path: Path) -> None:
    scene = tmp_path / "broken.xml"
    scene.write_text("<mujoco><worldbody><geom type='nonsense' size='1'/></worldbody></mujoco>")
    task = _with_scene(tmp_path, str(scene))
    with pytest.raises(SpecError) as exc:
        safebot.envs.make(task)
    # exactly SpecError: no MuJoCo error type leaks, and the chain is cut
    assert type(exc.value) is SpecError
    assert exc.value.__cause__ is None
    msg = str(exc.value)
    assert str(task) in msg
    assert str(scene) in msg
    assert "nonsense" in msg  # MuJoCo's own reason is kept in the text


def test_scene_without_the_arm_is_a_spec_error(tmp_path: Path) -> None:
    scene = tmp_path / "empty.xml"
    scene.write_text("<mujoco><worldbody><geom type='plane' size='1 1 1'/></worldbody></mujoco>")
    task = _with_scene(tmp_path, str(scene))
    with pytest.raises(SpecError) as exc:
        safebot.envs.make(task)
    assert type(exc.value) is SpecError
    assert "robot.scene" in str(exc.value)


def test_control_rate_must_match_the_scene_timestep(tmp_path: Path) -> None:
    data = _reach()
    data["robot"]["control_hz"] = 30.0  # 20 substeps of 2 ms is 25 Hz
    task = _write(tmp_path, data)
    with pytest.raises(SpecError) as exc:
        safebot.envs.make(task)
    msg = str(exc.value)
    assert str(task) in msg and "control_hz" in msg and "25" in msg


def test_unknown_keepout_geom(tmp_path: Path) -> None:
    data = _reach()
    data["limits"]["keepout"]["geoms"] = ["obstacle", "ghost"]
    task = _write(tmp_path, data)
    with pytest.raises(SpecError) as exc:
        safebot.envs.make(task)
    assert "limits.keepout.geoms" in str(exc.value)
    assert "ghost" in str(exc.value)


def test_spec_from_a_modified_dict() -> None:
    # TaskSpec.model_validate on a modified dump is how tests and tools derive variants
    data = copy.deepcopy(load_task("reach").model_dump())
    data["reward"]["type"] = "dense"
    spec = TaskSpec.model_validate(data)
    assert spec.reward.type == "dense"
    assert load_task("reach").reward.type == "sparse"


@pytest.mark.parametrize("starts", [0, 49])
def test_her_learning_cannot_start_before_the_first_episode_ends(starts: int) -> None:
    # regression: SB3's HerReplayBuffer raised RuntimeError deep inside learn()
    data = load_task("reach").model_dump(mode="json")  # 50-step episodes
    data["train"]["learning_starts"] = starts
    with pytest.raises(
        SpecError, match=r"learning_starts \(\d+\) < robot.max_episode_steps \(50\)"
    ):
        parse_model(data, TaskSpec, "reach")
    data["train"]["demo_episodes"] = 2  # whole demonstration episodes are in the buffer
    assert parse_model(data, TaskSpec, "reach").train.learning_starts == starts
    data["train"].update(demo_episodes=0, learning_starts=50)
    parse_model(data, TaskSpec, "reach")


# ----------------------------------------------------------------------------- extends


def test_a_task_that_extends_another_is_that_task_with_its_own_keys_on_top(tmp_path: Path) -> None:
    child = tmp_path / "child.toml"
    child.write_text(
        'extends = "reach"\n[task]\nname = "child"\n[train]\nalgo = "ppo"\n'
        '[scheduler]\nkind = "static"\nwidth = 0.5\n'
    )
    spec, reach = load_task(child), load_task("reach")
    assert spec.task.name == "child" and spec.task.kind == reach.task.kind
    assert spec.train.algo == "ppo" and spec.train.net_arch == reach.train.net_arch  # merged
    assert spec.limits == reach.limits and spec.robot == reach.robot
    # another scheduler kind replaces the table: competence's keys would be invalid in it
    assert spec.scheduler.kind == "static" and spec.scheduler.width == 0.5


def test_the_shipped_ppo_recipe_is_reach_with_an_on_policy_learner() -> None:
    ppo, reach = load_task("reach_ppo"), load_task("reach")
    assert (ppo.train.algo, ppo.reward.type, ppo.train.n_envs) == ("ppo", "dense", 4)
    assert ppo.limits == reach.limits and ppo.cost == reach.cost
    assert ppo.uncertainty == reach.uncertainty and ppo.scheduler == reach.scheduler


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('extends = "nowhere"\n', r"child\.toml: extends: task file 'nowhere' not found"),
        ("extends = 3\n", r"child\.toml: extends must be a task name or path, got 3"),
        ('extends = "child.toml"\n', r"extends forms a cycle: child\.toml -> child\.toml"),
    ],
)
def test_a_bad_extends_names_the_file(tmp_path: Path, text: str, match: str) -> None:
    child = tmp_path / "child.toml"
    child.write_text(text)
    with pytest.raises(SpecError, match=match):
        load_task(child)


def test_an_extended_file_is_validated_like_any_other(tmp_path: Path) -> None:
    child = tmp_path / "child.toml"
    child.write_text('extends = "reach"\n[train]\nalgoo = "ppo"\n')
    with pytest.raises(SpecError, match=r"child\.toml.*train\.algoo"):
        load_task(child)
