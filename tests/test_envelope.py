"""Limits and envelopes: width maps start to cap, and nothing gets past a cap (design rule 3)."""

from __future__ import annotations

import math
import tomllib
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safebot.envelope import LIMIT_KINDS, Bounds, Envelope, EnvelopeError, Limit
from safebot.resources import resolve
from safebot.spec import load_task


def _envelope(width: Any = 0.0) -> Envelope:
    return Envelope.from_spec(load_task("push").limits, width)  # every kind but keepout


def _full() -> Envelope:
    # every limit kind, each loosening in its own direction
    reach = Envelope.from_spec(load_task("reach").limits)
    limits = dict(reach.limits)
    limits["contact_force"] = Limit.make("contact_force", 10.0, 40.0)
    return Envelope(limits)


# (bound name in Bounds, limit kind, index slice into the limit's arrays)
FIELDS = [
    ("joint_velocity", "joint_velocity", slice(None)),
    ("ee_speed", "ee_speed", slice(None)),
    ("workspace_low", "workspace", slice(0, 3)),
    ("workspace_high", "workspace", slice(3, 6)),
    ("keepout_margin", "keepout", slice(None)),
    ("joint_margin", "joint_position", slice(None)),
    ("contact_force", "contact_force", slice(None)),
]


def _check_within(env: Envelope, bounds: Bounds) -> None:
    """Every bound lies between its start and its cap (inclusive), and is finite."""
    for name, kind, sl in FIELDS:
        value = getattr(bounds, name)
        if kind not in env.limits:
            assert value is None
            continue
        lim = env.limits[kind]
        v = np.atleast_1d(np.asarray(value, dtype=np.float64))
        start, cap = lim.start[sl], lim.cap[sl]
        assert np.all(np.isfinite(v)), (name, v)
        lo, hi = np.minimum(start, cap), np.maximum(start, cap)
        assert np.all(v >= lo) and np.all(v <= hi), (name, v, start, cap)


widths = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, -1.0, 2.0, math.inf, -math.inf, 0.0, 1.0, 1e308, -0.0]),
)
width_dicts = st.dictionaries(st.sampled_from(LIMIT_KINDS), widths, max_size=len(LIMIT_KINDS))


@settings(max_examples=300, deadline=None)
@given(width=widths)
def test_bounds_never_pass_a_cap_for_any_width(width: float) -> None:
    env = _full()
    _check_within(env, env.bounds(width))
    env.set_width(width)
    _check_within(env, env.bounds())
    assert all(0.0 <= w <= 1.0 for w in env.width.values())


@settings(max_examples=300, deadline=None)
@given(width=width_dicts)
def test_bounds_never_pass_a_cap_for_any_width_dict(width: dict[str, float]) -> None:
    env = _full()
    _check_within(env, env.bounds(width))
    env.set_width(width)
    _check_within(env, env.bounds())
    assert all(0.0 <= w <= 1.0 for w in env.width.values())


@settings(max_examples=200, deadline=None)
@given(
    start=st.floats(-1e6, 1e6),
    span=st.floats(0.0, 1e6),
    loosen=st.sampled_from([1.0, -1.0]),
    width=widths,
)
def test_limit_value_is_clamped(start: float, span: float, loosen: float, width: float) -> None:
    cap = start + loosen * span
    lim = Limit.make("ee_speed", start, cap, loosen)
    v = float(lim.value(width)[0])
    assert min(start, cap) <= v <= max(start, cap)
    if math.isfinite(width) and 0.0 <= width <= 1.0:
        assert v == pytest.approx(start + width * (cap - start), rel=1e-12, abs=1e-6)


def test_width_zero_is_start_one_is_cap_half_is_midpoint() -> None:
    env = _full()
    for name, kind, sl in FIELDS:
        lim = env.limits[kind]
        for w, expected in ((0.0, lim.start), (1.0, lim.cap), (0.5, 0.5 * (lim.start + lim.cap))):
            got = np.atleast_1d(getattr(env.bounds(w), name))
            np.testing.assert_allclose(got, expected[sl], rtol=1e-15, err_msg=f"{name} @ {w}")


def test_values_from_the_reach_spec() -> None:
    # expected values read from the TOML itself, not through the spec models
    raw = tomllib.loads(resolve("tasks", "reach").read_text())["limits"]
    env = Envelope.from_spec(load_task("reach").limits)
    b0, b1 = env.bounds(0.0), env.bounds(1.0)
    ee, jv, ws, ko, jp = (
        raw[k] for k in ("ee_speed", "joint_velocity", "workspace", "keepout", "joint_position")
    )
    np.testing.assert_allclose(b0.ee_speed, [ee["start"]] * 3)
    np.testing.assert_allclose(b1.ee_speed, [ee["cap"]] * 3)
    np.testing.assert_allclose(env.bounds(0.5).ee_speed, [0.5 * (ee["start"] + ee["cap"])] * 3)
    np.testing.assert_allclose(b0.joint_velocity, np.broadcast_to(jv["start"], (7,)))
    np.testing.assert_allclose(b1.joint_velocity, jv["cap"])
    # loosening downward: the keep-out margin shrinks, the workspace grows
    assert ko["cap"] < ko["start"] and jp["cap"] < jp["start"]
    assert b0.keepout_margin == pytest.approx(ko["start"])
    assert b1.keepout_margin == pytest.approx(ko["cap"])
    assert b0.joint_margin == pytest.approx(jp["start"])
    assert b1.joint_margin == pytest.approx(jp["cap"])
    np.testing.assert_allclose(b0.workspace_low, ws["start_low"])
    np.testing.assert_allclose(b0.workspace_high, ws["start_high"])
    np.testing.assert_allclose(b1.workspace_low, ws["cap_low"])
    np.testing.assert_allclose(b1.workspace_high, ws["cap_high"])
    assert b0.contact_force is None
    assert env.joint_gain == pytest.approx(jp["gain"])


@pytest.mark.parametrize(("given_width", "stored"), [(-1.0, 0.0), (2.0, 1.0), (math.nan, 0.0)])
def test_set_width_clamps(given_width: float, stored: float) -> None:
    env = _envelope()
    env.set_width(given_width)
    assert env.width == dict.fromkeys(env.kinds, stored)
    assert env.mean_width() == stored


def test_per_limit_width() -> None:
    env = _envelope()
    env.set_width({"ee_speed": 1.0})
    b = env.bounds()
    np.testing.assert_allclose(b.ee_speed, env.limits["ee_speed"].cap)
    np.testing.assert_allclose(b.joint_velocity, env.limits["joint_velocity"].start)
    assert env.width["ee_speed"] == 1.0 and env.width["joint_velocity"] == 0.0
    # a dict given to bounds() overrides the current widths for that call only
    b = env.bounds({"joint_velocity": 1.0})
    np.testing.assert_allclose(b.joint_velocity, env.limits["joint_velocity"].cap)
    np.testing.assert_allclose(b.ee_speed, env.limits["ee_speed"].cap)
    assert env.width["joint_velocity"] == 0.0
    # a scalar given to bounds() applies to every limit
    np.testing.assert_allclose(env.bounds(0.0).ee_speed, env.limits["ee_speed"].start)


def test_width_getter_is_a_copy() -> None:
    env = _envelope()
    env.width["ee_speed"] = 1.0
    assert env.width["ee_speed"] == 0.0


def test_unknown_kind_in_width_dict() -> None:
    env = _envelope()
    with pytest.raises(EnvelopeError, match="keepout"):
        env.set_width({"keepout": 0.5})  # push has no keep-out limit
    with pytest.raises(EnvelopeError, match="colour"):
        env.set_width({"colour": 0.5})
    assert env.width == dict.fromkeys(env.kinds, 0.0)  # nothing was changed


def test_cap_below_start_fails_naming_the_limit() -> None:
    with pytest.raises(EnvelopeError, match=r"'ee_speed'.*cap 0\.2 is below start 0\.5"):
        Limit.make("ee_speed", 0.5, 0.2)
    with pytest.raises(EnvelopeError, match=r"'joint_velocity'.*element 2"):
        Limit.make("joint_velocity", 0.4, [2.0, 2.0, 0.3, 2.0])
    # a downward-loosening limit: the cap margin may not be larger than the start margin
    with pytest.raises(EnvelopeError, match=r"'keepout'.*above start"):
        Limit.make("keepout", 0.02, 0.08, -1.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_bound_fails(bad: float) -> None:
    with pytest.raises(EnvelopeError, match=r"'ee_speed'.*non-finite"):
        Limit.make("ee_speed", bad, 1.0)
    with pytest.raises(EnvelopeError, match=r"'ee_speed'.*cap has non-finite"):
        Limit.make("ee_speed", 0.1, [1.0, bad, 1.0])


def test_unknown_kind_and_mismatched_shapes_fail() -> None:
    with pytest.raises(EnvelopeError, match="unknown limit kind 'speed'"):
        Limit.make("speed", 0.1, 1.0)
    with pytest.raises(EnvelopeError, match="shapes differ"):
        Limit("ee_speed", np.array([0.1, 0.1]), np.array([1.0, 1.0, 1.0]), np.ones(2))
    with pytest.raises(EnvelopeError, match="stored under 'ee_speed'"):
        Envelope({"ee_speed": Limit.make("joint_velocity", 0.1, 1.0)})


@pytest.mark.parametrize("gain", [0.0, -1.0, math.nan, math.inf])
def test_bad_barrier_gain_fails(gain: float) -> None:
    with pytest.raises(EnvelopeError, match="gain"):
        Envelope({"ee_speed": Limit.make("ee_speed", 0.1, 1.0)}, barrier_gain=gain)


def test_limits_are_immutable() -> None:
    lim = Limit.make("ee_speed", 0.1, 1.0)
    with pytest.raises(AttributeError):
        lim.cap = np.array([5.0])  # type: ignore[misc]
