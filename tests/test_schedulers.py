"""Schedulers on synthetic evaluation streams: no training, no physics."""

from __future__ import annotations

import doctest
import itertools
import json
import math
import random
import tomllib
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import safebot.schedulers
from safebot.schedulers import (
    HISTORY_LEN,
    SCHEDULER_KINDS,
    Competence,
    CompetenceConfig,
    EvalStats,
    Linear,
    LinearConfig,
    PIConfig,
    SafetyBudgetPI,
    Scheduler,
    Static,
    StaticConfig,
    Width,
    make_scheduler,
    parse_scheduler_config,
)

LIMITS = ("joint_velocity", "ee_speed", "workspace", "keepout", "joint_position", "contact_force")


EPISODE_STEPS = 10  # ev(cost=c): harm c per step of 10-step episodes, 10 c per episode


def ev(step: int = 0, success: float = 1.0, cost: float = 0.0, **kw: Any) -> EvalStats:
    """A brief evaluation: 10 episodes, perfect and safe unless told otherwise."""
    return EvalStats(
        step=step,
        episodes=10,
        success_rate=success,
        cost_rate=cost,
        harm_per_episode=EPISODE_STEPS * cost,
        **kw,
    )


GOOD = ev(success=1.0, cost=0.0)
BAD = ev(success=0.7, cost=0.0)  # not competent, not a spike (failure 0.3 < 0.5)


def scalar(width: Width) -> float:
    assert isinstance(width, float), width
    return width


def run(sched: Scheduler, stream: Iterable[EvalStats]) -> list[Any]:
    """The widths returned for ``stream`` (floats, or dicts in per-limit mode)."""
    return [sched.update(s) for s in stream]


def reversals(widths: list[float]) -> int:
    """How often the direction of change flips (widen then tighten or back)."""
    signs = [math.copysign(1.0, b - a) for a, b in itertools.pairwise(widths) if b != a]
    return sum(1 for a, b in itertools.pairwise(signs) if a != b)


# --------------------------------------------------------------------------- Competence


def test_widens_on_sustained_competence() -> None:
    sched = Competence()  # patience 2, widen_step 0.1
    widths = run(sched, [GOOD] * 24)
    assert widths[:6] == pytest.approx([0.0, 0.1, 0.1, 0.2, 0.2, 0.3])
    assert widths[-1] == 1.0
    assert all(0.0 <= w <= 1.0 for w in widths)
    assert sched.history[-1][2] == "hold: at cap"
    assert [r for _, _, r in sched.history[:2]] == ["hold: streak 1", "widen"]


def test_single_noisy_success_does_not_widen() -> None:
    sched = Competence()
    widths = run(sched, [BAD, GOOD, BAD, GOOD, BAD, GOOD, BAD, GOOD])
    assert widths == [0.0] * 8
    assert not any(r.startswith("tighten") for _, _, r in sched.history)
    # A pass in the band (cost between max and spike) breaks the streak too.
    hover = ev(cost=0.03)
    assert run(Competence(), [GOOD, hover, GOOD, hover, GOOD]) == [0.0] * 5


def test_patience_counts_consecutive_passes() -> None:
    sched = Competence(CompetenceConfig(patience=3))
    assert run(sched, [GOOD, GOOD, GOOD]) == pytest.approx([0.0, 0.0, 0.1])


@pytest.mark.parametrize(
    ("spike", "reason"),
    [
        (ev(cost=0.05), "tighten: harm spike"),  # exactly at the spike threshold
        (ev(cost=0.9), "tighten: harm spike"),
        (ev(cost=float("nan")), "tighten: harm spike"),  # broken measurement = unsafe
        (ev(success=0.4), "tighten: failure spike"),
        (ev(success=1.0, failure_rate=0.6), "tighten: failure spike"),
    ],
)
def test_tightens_within_one_evaluation_of_a_spike(spike: EvalStats, reason: str) -> None:
    sched = Competence(CompetenceConfig(patience=1))
    run(sched, [GOOD] * 5)
    before = sched.width
    assert before == pytest.approx(0.5)
    assert scalar(sched.update(spike)) < scalar(before)
    assert sched.history[-1][2] == reason


def test_failure_spike_needs_prior_competence() -> None:
    # Early in training every episode fails: that is not a spike.
    sched = Competence(CompetenceConfig(start_width=0.5))
    widths = run(sched, [ev(success=0.0)] * 5)
    assert widths == [0.5] * 5
    assert {r for _, _, r in sched.history} == {"hold: success"}


def test_tightening_returns_to_last_safe_width() -> None:
    sched = Competence(CompetenceConfig(patience=1))
    run(sched, [GOOD, GOOD, GOOD])  # passes at 0.0, 0.1, 0.2 -> width 0.3
    assert sched.width == pytest.approx(0.3)
    run(sched, [ev(cost=0.03)] * 3)  # band at 0.3: holds, never passes there
    assert sched.width == pytest.approx(0.3)
    assert sched.update(ev(cost=0.2)) == pytest.approx(0.2)  # back to the last pass
    # A second spike at the last safe width discredits it: tighten by tighten_step.
    assert sched.update(ev(cost=0.2)) == 0.0
    assert sched.state_dict()["last_safe"] is None


def test_without_revert_tightens_by_step() -> None:
    sched = Competence(CompetenceConfig(patience=1, revert_to_last_safe=False))
    run(sched, [GOOD] * 6)
    assert sched.width == pytest.approx(0.6)
    assert sched.update(ev(cost=0.2)) == pytest.approx(0.35)


def test_cooldown_blocks_widening_after_a_tighten() -> None:
    sched = Competence(CompetenceConfig(patience=1, cooldown=1, cooldown_backoff=1.0))
    run(sched, [GOOD] * 3)
    assert sched.update(ev(cost=0.2)) == pytest.approx(0.2)
    assert sched.update(GOOD) == pytest.approx(0.2)
    assert sched.history[-1][2] == "hold: cooldown"
    assert sched.update(GOOD) == pytest.approx(0.3)
    # A spike during cooldown still tightens.
    sched = Competence(CompetenceConfig(patience=1, cooldown=3))
    run(sched, [GOOD] * 3 + [ev(cost=0.2)])
    assert scalar(sched.update(ev(cost=0.2))) < 0.2


def test_hovering_cost_in_the_hysteresis_band_never_oscillates() -> None:
    rng = random.Random(0)
    # Cost hovering around max_cost_rate (0.02): passes and holds, never tightens.
    sched = Competence()
    widths = run(sched, [ev(cost=rng.uniform(0.01, 0.03)) for _ in range(200)])
    assert reversals(widths) == 0
    assert not any(r.startswith("tighten") for _, _, r in sched.history)
    # Cost hovering around spike_cost_rate (0.05): only tightens, never widens back.
    sched = Competence(CompetenceConfig(start_width=1.0))
    widths = run(sched, [ev(cost=rng.uniform(0.045, 0.055)) for _ in range(200)])
    assert reversals(widths) == 0
    assert widths[-1] == 0.0
    # Success hovering around success_threshold (0.8), safe: never tightens.
    sched = Competence()
    widths = run(sched, [ev(success=rng.uniform(0.75, 0.85)) for _ in range(200)])
    assert reversals(widths) == 0


def test_reversal_counter_detects_oscillation_without_hysteresis() -> None:
    # The same hovering stream with (almost) no band, no patience and no cooldown
    # does oscillate: proves the counter above can see it.
    cfg = CompetenceConfig(
        patience=1, cooldown=0, max_harm=0.2, spike_harm=0.201, cooldown_backoff=1.0
    )
    rng = random.Random(0)
    widths = run(Competence(cfg), [ev(cost=rng.uniform(0.0195, 0.0206)) for _ in range(200)])
    assert reversals(widths) > 20


def plant_stream(
    sched: Scheduler, cost_of: Callable[[float], float], n: int, *, success: float = 1.0
) -> list[float]:
    """Close the loop: each evaluation's cost depends on the width being evaluated."""
    widths: list[float] = []
    for t in range(n):
        w = sched.width
        assert isinstance(w, float)
        widths.append(scalar(sched.update(ev(step=t, success=success, cost=cost_of(w)))))
    return widths


def test_backoff_spaces_out_retries_of_an_unsafe_width() -> None:
    unsafe_above = 0.35  # widths beyond this produce a cost spike

    def cost(w: float) -> float:
        return 0.0 if w <= unsafe_above + 1e-9 else 0.2

    def tightens(backoff: float) -> int:
        sched = Competence(CompetenceConfig(cooldown_backoff=backoff))
        widths = plant_stream(sched, cost, 120)
        assert max(widths) <= 0.4 + 1e-9
        return sum(r.startswith("tighten") for _, _, r in sched.history)

    with_backoff, without = tightens(2.0), tightens(1.0)
    assert with_backoff <= 7  # retries after 1, 2, 4, 8, ... evaluations
    assert without >= 25  # a retry every 4 evaluations
    # Either way it always comes back to the safe width, never below it.
    sched = Competence()
    widths = plant_stream(sched, cost, 120)
    assert min(widths[40:]) == pytest.approx(0.3)


def test_no_episodes_holds_everything() -> None:
    sched = Competence(CompetenceConfig(patience=1))
    run(sched, [GOOD, GOOD])
    empty = EvalStats(
        step=5,
        episodes=0,
        success_rate=float("nan"),
        cost_rate=float("nan"),
        harm_per_episode=float("nan"),
    )
    assert sched.update(empty) == pytest.approx(0.2)
    assert sched.history[-1][2] == "hold: no episodes"
    assert SafetyBudgetPI().update(empty) == 0.0


def test_intervention_and_margin_gates() -> None:
    sched = Competence(CompetenceConfig(patience=1, max_intervention_rate=0.2))
    assert sched.update(ev(intervention_rate=0.5)) == 0.0
    assert sched.history[-1][2] == "hold: interventions"
    assert sched.update(ev(intervention_rate=0.1)) == pytest.approx(0.1)

    sched = Competence(CompetenceConfig(patience=1, min_margin=0.0), limits=LIMITS)
    assert sched.update(ev(min_margin={"workspace": -0.01})) == 0.0
    assert sched.history[-1][2] == "hold: margin workspace"
    assert sched.update(ev(min_margin={"workspace": float("nan")})) == 0.0
    # A limit the scheduler does not control is not its business.
    sched = Competence(CompetenceConfig(patience=1, min_margin=0.0), limits=["ee_speed"])
    assert sched.update(ev(min_margin={"workspace": -0.5})) == pytest.approx(0.1)


# --------------------------------------------------------------------------- per-limit mode


def per_limit(**kw: Any) -> Competence:
    return Competence(CompetenceConfig(per_limit=True, patience=1, **kw), limits=LIMITS)


def test_per_limit_widens_the_most_binding_limit_first() -> None:
    sched = per_limit()
    binding = {"ee_speed": 0.6, "joint_velocity": 0.2, "workspace": 0.0}
    width = sched.update(ev(binding=binding))
    assert isinstance(width, dict)
    assert width["ee_speed"] == pytest.approx(0.1)
    assert all(v == 0.0 for k, v in width.items() if k != "ee_speed")
    assert sched.history[-1][2] == "widen: ee_speed"
    # Once it is at the cap, the next most binding one goes.
    for _ in range(12):
        width = sched.update(ev(binding=binding))
    assert isinstance(width, dict)
    assert width["ee_speed"] == 1.0
    assert width["joint_velocity"] > 0.0
    assert width["workspace"] == 0.0


def test_per_limit_ties_and_missing_binding_widen_together() -> None:
    sched = per_limit()
    width = sched.update(ev(binding={"ee_speed": 0.4, "keepout": 0.4}))
    assert isinstance(width, dict)
    assert {k for k, v in width.items() if v > 0} == {"ee_speed", "keepout"}
    width = per_limit().update(ev())  # no binding data: no preference
    assert isinstance(width, dict)
    assert all(v == pytest.approx(0.1) for v in width.values())


def test_per_limit_waits_while_another_limit_has_no_margin() -> None:
    sched = per_limit(min_margin=0.05)
    stats = ev(binding={"ee_speed": 0.6}, min_margin={"ee_speed": 0.0, "workspace": 0.01})
    width = sched.update(stats)
    assert isinstance(width, dict)
    assert set(width.values()) == {0.0}
    assert sched.history[-1][2] == "hold: margin workspace"
    # The widened limit's own margin is ~0 by definition and does not block it.
    ok = ev(binding={"ee_speed": 0.6}, min_margin={"ee_speed": 0.0, "workspace": 0.5})
    width = sched.update(ok)
    assert isinstance(width, dict)
    assert width["ee_speed"] == pytest.approx(0.1)


def test_per_limit_spike_reverts_the_widened_limits_then_tightens_all() -> None:
    sched = Competence(CompetenceConfig(per_limit=True, patience=1, start_width=0.5), limits=LIMITS)
    sched.update(ev(binding={"ee_speed": 0.9}))
    sched.update(ev(cost=0.03))  # band: holds, does not pass at the new width
    width = sched.update(ev(cost=0.5))
    assert width == dict.fromkeys(LIMITS, 0.5)  # only ee_speed moved back
    width = sched.update(ev(cost=0.5))  # spike at the last safe width: all tighten
    assert width == dict.fromkeys(LIMITS, 0.25)


def test_per_limit_needs_limits() -> None:
    with pytest.raises(ValueError, match="limits"):
        Competence(CompetenceConfig(per_limit=True))
    with pytest.raises(TypeError):
        Competence(limits="ee_speed")
    with pytest.raises(ValueError, match="repeat"):
        Static(0.5, limits=["ee_speed", "ee_speed"])


# --------------------------------------------------------------------------- PI baseline


def test_pi_converges_to_target_cost_on_a_linear_plant() -> None:
    sched = SafetyBudgetPI(PIConfig(target_harm=0.1))
    widths = plant_stream(sched, lambda w: 0.1 * w, 150)
    assert all(0.0 <= w <= 1.0 for w in widths)
    assert widths[-1] == pytest.approx(0.1, abs=0.005)
    assert 0.1 * widths[-1] == pytest.approx(0.01, abs=5e-4)
    assert max(abs(b - a) for a, b in itertools.pairwise(widths)) <= 0.1 + 1e-12


def test_pi_saturates_and_recovers_without_windup() -> None:
    sched = SafetyBudgetPI()
    widths = plant_stream(sched, lambda w: 0.0, 100)  # always below target: open up
    assert widths[-1] == 1.0
    assert abs(sched.integral) <= sched.config.max_step / sched.config.ki + 1e-12
    # Cost jumps: a wound-up integral would keep widening; this tightens at once.
    assert scalar(sched.update(ev(cost=0.5))) < 1.0
    widths = plant_stream(sched, lambda w: 0.5, 30)  # never reachable: closes fully
    assert widths[-1] == 0.0
    assert sched.history[-1][2] == "hold"


def test_pi_integral_is_clamped_while_ramping() -> None:
    # max_step limits the ramp, so the error stays large for many updates before
    # the width pins at 1: exactly when an unclamped integral winds up.
    sched = SafetyBudgetPI(PIConfig(target_harm=5.0))
    plant_stream(sched, lambda w: 0.0, 30)
    assert sched.width == 1.0
    assert sched.integral == pytest.approx(sched.config.max_step / sched.config.ki)
    assert scalar(sched.update(ev(cost=0.6))) < 1.0


# --------------------------------------------------------------------------- open loop


def test_training_harm_holds_and_tightens_but_never_widens() -> None:
    cfg = CompetenceConfig(
        patience=1, cooldown=0, widen_step=0.1, max_train_harm=0.1, spike_train_harm=0.5
    )
    sched = Competence(cfg)
    assert sched.update(ev(1, train_harm_per_episode=0.0)) == pytest.approx(0.1)
    # a held-out pass with harmful training since the last evaluation: no widen
    assert sched.update(ev(2, train_harm_per_episode=0.3)) == pytest.approx(0.1)
    assert sched.history[-1][2] == "hold: training harm"
    # unknown training harm (no episode ended) is no veto
    assert sched.update(ev(3, train_harm_per_episode=None)) == pytest.approx(0.2)
    # a training burst tightens at once, back to the last width that passed
    assert sched.update(ev(4, train_harm_per_episode=0.6)) == pytest.approx(0.1)
    assert sched.history[-1][2] == "tighten: training harm spike"
    # clean training never makes a failing evaluation pass
    assert sched.update(ev(5, success=0.7, train_harm_per_episode=0.0)) == pytest.approx(0.1)
    # without the keys, training harm changes nothing
    plain = Competence(CompetenceConfig(patience=1, cooldown=0, widen_step=0.1))
    for k in range(1, 4):
        plain.update(ev(k, train_harm_per_episode=5.0))
    assert plain.width == pytest.approx(0.3)


def test_linear_schedule_values() -> None:
    sched = Linear(start_width=0.0, end_width=1.0, steps=100)
    assert sched.width == 0.0
    got = [sched.update(ev(step=s)) for s in (-10, 0, 25, 50, 100, 1000)]
    assert got == pytest.approx([0.0, 0.0, 0.25, 0.5, 1.0, 1.0])
    down = Linear(start_width=1.0, end_width=0.2, steps=10)
    assert [down.value(s) for s in (0, 5, 10, 20)] == pytest.approx([1.0, 0.6, 0.2, 0.2])


def test_static_never_moves() -> None:
    sched = Static(0.7)
    assert run(sched, [GOOD, ev(cost=1.0), ev(success=0.0)]) == [0.7] * 3


# --------------------------------------------------------------------------- invariants

unit = st.floats(0.0, 1.0)
step_size = st.floats(0.001, 1.0)
anything = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, -1.0, 1e9, -1e9]),
)
stat_streams = st.lists(
    st.builds(
        EvalStats,
        step=st.integers(-(10**9), 10**9),
        episodes=st.integers(-1, 50),
        success_rate=anything,
        cost_rate=anything,
        harm_per_episode=anything,
        failure_rate=st.none() | anything,
        intervention_rate=anything,
        min_margin=st.dictionaries(st.sampled_from(LIMITS), anything, max_size=3),
        binding=st.dictionaries(st.sampled_from(LIMITS), anything, max_size=3),
    ),
    min_size=1,
    max_size=30,
)


@st.composite
def competence_configs(draw: st.DrawFn) -> CompetenceConfig:
    kw: dict[str, Any] = dict(
        start_width=draw(unit),
        widen_step=draw(step_size),
        tighten_step=draw(step_size),
        patience=draw(st.integers(1, 5)),
        success_threshold=draw(unit),
        max_harm=draw(unit),
        spike_harm=draw(unit),
        spike_failure_rate=draw(unit),
        max_intervention_rate=draw(st.none() | unit),
        min_margin=draw(st.none() | st.floats(-1.0, 1.0)),
        revert_to_last_safe=draw(st.booleans()),
        cooldown=draw(st.integers(0, 5)),
        cooldown_backoff=draw(st.floats(1.0, 10.0)),
        per_limit=draw(st.booleans()),
    )
    try:
        return CompetenceConfig(**kw)
    except ValidationError:
        assume(False)
        raise


def in_unit(width: Width) -> bool:
    values = width.values() if isinstance(width, dict) else [width]
    return all(0.0 <= v <= 1.0 for v in values)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(cfg=competence_configs(), stream=stat_streams)
def test_competence_width_always_in_unit_interval(
    cfg: CompetenceConfig, stream: list[EvalStats]
) -> None:
    sched = Competence(cfg, limits=LIMITS)
    for stats in stream:
        assert in_unit(sched.update(stats))
        assert in_unit(sched.width)
    json.dumps(sched.state_dict())


@settings(max_examples=40, deadline=None)
@given(
    kp=st.floats(0.0, 1000.0),
    ki=st.floats(0.0, 1000.0),
    target=unit,
    start=unit,
    max_step=step_size,
    stream=stat_streams,
)
def test_pi_width_always_in_unit_interval(
    kp: float, ki: float, target: float, start: float, max_step: float, stream: list[EvalStats]
) -> None:
    cfg = PIConfig(kp=kp, ki=ki, target_harm=target, start_width=start, max_step=max_step)
    sched = SafetyBudgetPI(cfg)
    for stats in stream:
        assert in_unit(sched.update(stats))


@settings(max_examples=30, deadline=None)
@given(start=unit, end=unit, steps=st.integers(1, 10**9), stream=stat_streams)
def test_linear_width_always_in_unit_interval(
    start: float, end: float, steps: int, stream: list[EvalStats]
) -> None:
    sched = Linear(start, end, steps)
    assert all(in_unit(sched.update(s)) for s in stream)


def test_history_is_bounded() -> None:
    sched = Static(0.5)
    run(sched, [GOOD] * (HISTORY_LEN + 50))
    assert len(sched.history) == HISTORY_LEN
    assert len(sched.state_dict()["history"]) == HISTORY_LEN


# --------------------------------------------------------------------------- state


def random_stream(seed: int, n: int) -> list[EvalStats]:
    rng = random.Random(seed)
    out = []
    for t in range(n):
        cost = rng.choice([0.0] * 10 + [0.01, 0.03, 0.08])
        success = rng.choice([1.0] * 10 + [0.9, 0.7, 0.3])
        binding = {k: rng.random() for k in rng.sample(LIMITS, 2)}
        margin = {k: rng.uniform(-0.05, 0.5) for k in rng.sample(LIMITS, 2)}
        out.append(
            ev(step=1000 * t, success=success, cost=cost, binding=binding, min_margin=margin)
        )
    return out


@pytest.mark.parametrize(
    "factory",
    [
        lambda: Competence(),
        lambda: Competence(CompetenceConfig(patience=1, cooldown=2, min_margin=0.0)),
        lambda: Competence(CompetenceConfig(per_limit=True, min_margin=0.1), limits=LIMITS),
        lambda: SafetyBudgetPI(),
        lambda: Linear(0.1, 0.9, 20_000),
        lambda: Static(0.3),
    ],
)
def test_state_round_trips_through_json(factory: Callable[[], Scheduler]) -> None:
    stream = random_stream(seed=3, n=80)
    original = factory()
    run(original, stream[:40])
    state = json.loads(json.dumps(original.state_dict()))
    resumed = factory()
    resumed.load_state_dict(state)
    assert resumed.width == original.width
    assert resumed.history == original.history
    assert run(resumed, stream[40:]) == run(original, stream[40:])
    assert resumed.state_dict() == original.state_dict()
    # The resumed part was not trivial: closed-loop schedulers moved both ways.
    if isinstance(original, Competence | SafetyBudgetPI):
        reasons = {r.split(":")[0] for _, _, r in original.history}
        assert {"widen", "tighten"} <= reasons


def test_load_state_rejects_another_kind_or_shape() -> None:
    with pytest.raises(ValueError, match="competence"):
        SafetyBudgetPI().load_state_dict(Competence().state_dict())
    scalar = Competence().state_dict()
    with pytest.raises(ValueError, match="dict"):
        Competence(CompetenceConfig(per_limit=True), limits=LIMITS).load_state_dict(scalar)


# --------------------------------------------------------------------------- configs


def test_toml_scheduler_table_picks_the_model() -> None:
    table = tomllib.loads('[scheduler]\nkind = "competence"\nwiden_step = 0.2\npatience = 3\n')
    cfg = parse_scheduler_config(table["scheduler"])
    assert isinstance(cfg, CompetenceConfig)
    assert (cfg.widen_step, cfg.patience, cfg.tighten_step) == (0.2, 3, 0.25)
    sched = make_scheduler(table["scheduler"], limits=LIMITS)
    assert isinstance(sched, Competence)
    assert sched.limits == LIMITS
    assert set(SCHEDULER_KINDS) == {"static", "linear", "competence", "pi"}
    extras: list[tuple[str, dict[str, Any]]] = [
        ("static", {"width": 0.4}),
        ("linear", {"steps": 10}),
        ("pi", {}),
    ]
    for kind, extra in extras:
        built = make_scheduler({"kind": kind, **extra}, limits=LIMITS)
        assert built.kind == kind
        assert isinstance(built.width, float)
    assert isinstance(make_scheduler(StaticConfig(width=1.0), LIMITS), Static)


@pytest.mark.parametrize(
    "table",
    [
        {"kind": "linear", "steps": -5},
        {"kind": "linear", "steps": 0},
        {"kind": "linear"},  # steps is required
        {"kind": "static", "width": 1.5},
        {"kind": "competence", "widen_step": -0.1},
        {"kind": "competence", "tighten_step": 0.0},
        {"kind": "competence", "patience": 0},
        {"kind": "competence", "cooldown": -1},
        {"kind": "competence", "success_threshold": 1.5},
        {"kind": "competence", "max_harm": -0.01},
        {"kind": "competence", "spike_harm": 0.1},  # not above max_harm (0.2)
        {"kind": "competence", "max_cost_rate": 0.02},  # renamed: harm per episode
        {"kind": "pi", "target_cost_rate": 0.01},  # renamed
        {"kind": "competence", "spike_failure_rate": 0.1},  # overlaps a pass
        {"kind": "competence", "max_intervention_rate": 2.0},
        {"kind": "competence", "max_train_harm": -0.1},
        {"kind": "competence", "max_train_harm": 0.5, "spike_train_harm": 0.5},  # no gap
        {"kind": "competence", "start_width": float("nan")},
        {"kind": "competence", "widen_stp": 0.1},  # typo: unknown key
        {"kind": "pi", "kp": -1.0},
        {"kind": "pi", "target_harm": -1.0},
        {"kind": "pi", "max_step": 0.0},
        {"kind": "bogus"},
        {"widen_step": 0.1},  # no kind
    ],
)
def test_invalid_configs_raise_validation_errors(table: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse_scheduler_config(table)


def test_constructors_validate_too() -> None:
    with pytest.raises(ValidationError):
        Linear(steps=-1)
    with pytest.raises(ValidationError):
        Static(-0.1)
    with pytest.raises(ValidationError):
        LinearConfig(steps=10, start_width=2.0)


def test_docstring_examples_hold() -> None:
    result = doctest.testmod(safebot.schedulers)
    assert result.attempted >= 5
    assert result.failed == 0
