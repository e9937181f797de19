"""dump_toml (tomli-w): what it writes, tomllib reads back to the same mapping."""

from __future__ import annotations

import math
import tomllib

import pytest

from safebot.config import dump_toml
from safebot.spec import TaskSpec, load_task, parse_model


def test_round_trip_of_nested_tables_lists_and_awkward_strings() -> None:
    data = {
        "name": 'quote " and back\\slash and \u00e9',
        "flag": False,
        "n": 3,
        "x": -0.125,
        "empty": {},
        "table": {"list": [1, 2, 3], "floats": [0.5, 1e-9], "nested": {"deep": "yes"}},
        "rows": [{"a": 1}, {"a": 2}],
    }
    assert tomllib.loads(dump_toml(data)) == data


def test_none_is_left_out_at_any_depth_and_nan_stays_a_float() -> None:
    text = dump_toml(
        {"a": None, "b": {"c": None, "d": 1}, "e": [{"f": None, "g": 2}], "h": math.nan}
    )
    back = tomllib.loads(text)
    assert back["b"] == {"d": 1} and back["e"] == [{"g": 2}] and "a" not in back
    assert math.isnan(back["h"])


def test_a_value_toml_cannot_hold_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        dump_toml({"x": object()})


@pytest.mark.parametrize("task", ["reach", "push", "press", "reach_joint"])
def test_every_shipped_task_spec_round_trips(task: str) -> None:
    spec = load_task(task)
    data = spec.model_dump(mode="json")
    back = parse_model(tomllib.loads(dump_toml(data)), TaskSpec, task)
    assert back.model_dump(mode="json") == data
