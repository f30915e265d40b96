"""The operating-mode rules: classify, decide_mode's hysteresis, the mode as a layer and health_of."""

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.domains.modes.inputs import health_of
from app.domains.modes.rules import (
    Health,
    ModeConfig,
    ModeInputs,
    OperatingMode,
    classify,
    decide_mode,
    mode_layer,
)
from app.domains.policy.profiles import DEFAULT_PROFILES, RiskMode
from app.domains.risk.stack import Layer, profile_layer, stack

EXP, OPT, PRES, EMER = (
    OperatingMode.EXPANSION,
    OperatingMode.OPTIMIZATION,
    OperatingMode.PRESERVATION,
    OperatingMode.EMERGENCY,
)
CONFIG = ModeConfig()
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=1)


def expanding(**changes: Any) -> ModeInputs:
    """Inputs every EXPANSION rule (with its hysteresis margin) accepts, with `changes` applied."""
    base = ModeInputs(
        risk_score=10.0,
        risk_status="ok",
        drawdown_pct=0.5,
        win_rate=0.70,
        trades=30,
        health=Health.HEALTHY,
    )
    return replace(base, **changes)


# --- classify --------------------------------------------------------------------------------------


def test_the_expanding_baseline_expands() -> None:
    mode, fired = classify(expanding(), CONFIG)
    assert mode is EXP
    assert len(fired) == 1 and "all healthy" in fired[0] and "risk score 10.0 < 25" in fired[0]


@pytest.mark.parametrize(
    ("changes", "expected", "needle"),
    [
        ({"risk_score": 75.0}, EMER, "risk score 75.0 >= 75"),
        ({"risk_score": 100.0}, EMER, "risk score 100.0 >= 75"),
        ({"risk_score": 74.9}, PRES, "risk score 74.9 >= 50"),
        ({"drawdown_pct": 10.0}, EMER, "drawdown 10.00% >= 10%"),
        ({"drawdown_pct": 9.99}, PRES, "drawdown 9.99% >= 5%"),
        (
            {"health": Health.CRITICAL, "unhealthy": ("database=down", "policy_store=not_restored")},
            EMER,
            "critical component down (database=down, policy_store=not_restored)",
        ),
    ],
)
def test_each_emergency_trigger_alone(changes: dict[str, Any], expected: OperatingMode, needle: str) -> None:
    mode, fired = classify(expanding(**changes), CONFIG)
    assert mode is expected
    assert fired == [needle]


def test_every_emergency_trigger_that_fires_is_named() -> None:
    inputs = expanding(risk_score=90.0, drawdown_pct=12.0, health=Health.CRITICAL, unhealthy=("database=down",))
    mode, fired = classify(inputs, CONFIG)
    assert mode is EMER
    assert fired == ["risk score 90.0 >= 75", "drawdown 12.00% >= 10%", "critical component down (database=down)"]


def test_emergency_wins_over_preservation_triggers() -> None:
    mode, fired = classify(expanding(risk_score=80.0, win_rate=0.1, health=Health.DEGRADED), CONFIG)
    assert (mode, fired) == (EMER, ["risk score 80.0 >= 75"])


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"risk_score": 50.0}, "risk score 50.0 >= 50"),
        ({"risk_score": 60.0}, "risk score 60.0 >= 50"),
        ({"drawdown_pct": 5.0}, "drawdown 5.00% >= 5%"),
        ({"drawdown_pct": 7.5}, "drawdown 7.50% >= 5%"),
        ({"win_rate": 0.39, "trades": 20}, "win rate 0.390 < 0.4 over 20 trades"),
        ({"win_rate": 0.0, "trades": 500}, "win rate 0.000 < 0.4 over 500 trades"),
        ({"health": Health.DEGRADED, "unhealthy": ("redis=down",)}, "degraded (redis=down)"),
    ],
)
def test_each_preservation_trigger_alone(changes: dict[str, Any], needle: str) -> None:
    mode, fired = classify(expanding(**changes), CONFIG)
    assert mode is PRES
    assert fired == [needle]


def test_every_preservation_trigger_that_fires_is_named() -> None:
    inputs = expanding(risk_score=55.0, drawdown_pct=6.0, win_rate=0.2, health=Health.DEGRADED, unhealthy=("x=y",))
    mode, fired = classify(inputs, CONFIG)
    assert mode is PRES
    assert len(fired) == 4


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"risk_score": 49.9}, "risk score 49.9 >= 25"),
        ({"drawdown_pct": 4.99}, "drawdown 4.99% >= 2%"),
        ({"win_rate": 0.40}, "win rate 0.400 < 0.55"),  # at the preservation threshold: not below it
        ({"win_rate": 0.10, "trades": 19}, "19 trades < 20"),  # too few trades to judge a bad win rate
        ({"win_rate": 0.70, "trades": 19}, "19 trades < 20"),  # ... or a good one
        ({"win_rate": 0.70, "trades": 0}, "0 trades < 20"),
    ],
)
def test_just_below_a_preservation_threshold_is_optimization(changes: dict[str, Any], needle: str) -> None:
    mode, fired = classify(expanding(**changes), CONFIG)
    assert mode is OPT
    assert len(fired) == 1 and fired[0].startswith("no alarm; not expanding: ")
    assert needle in fired[0]


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"risk_score": None, "risk_status": "insufficient_data"}, "risk score unknown"),
        ({"risk_score": 25.0}, "risk score 25.0 >= 25"),
        ({"win_rate": None}, "win rate unknown"),
        ({"trades": 19}, "19 trades < 20"),
        ({"win_rate": 0.549}, "win rate 0.549 < 0.55"),
        ({"drawdown_pct": None}, "drawdown unknown"),
        ({"drawdown_pct": 2.0}, "drawdown 2.00% >= 2%"),
        ({"health": Health.UNKNOWN}, "health unknown"),
    ],
)
def test_expansion_needs_every_condition(changes: dict[str, Any], needle: str) -> None:
    mode, fired = classify(expanding(**changes), CONFIG)
    assert mode is OPT
    assert fired == [f"no alarm; not expanding: {needle}"]


@pytest.mark.parametrize(
    "changes",
    [{"risk_score": 24.9}, {"win_rate": 0.55}, {"trades": 20}, {"drawdown_pct": 1.99}, {"drawdown_pct": 0.0}],
)
def test_expansion_just_inside_each_threshold(changes: dict[str, Any]) -> None:
    assert classify(expanding(**changes), CONFIG)[0] is EXP


def test_every_missing_expansion_condition_is_listed() -> None:
    inputs = expanding(risk_score=None, win_rate=None, trades=3, drawdown_pct=None, health=Health.UNKNOWN)
    mode, fired = classify(inputs, CONFIG)
    assert mode is OPT
    assert fired == [
        "no alarm; not expanding: risk score unknown; 3 trades < 20; drawdown unknown; health unknown",
    ]


def test_unknown_inputs_are_not_alarms() -> None:
    """None and UNKNOWN fire no EMERGENCY or PRESERVATION rule (and no EXPANSION either)."""
    inputs = ModeInputs(None, "unavailable", None, None, 0, Health.UNKNOWN)
    assert classify(inputs, CONFIG)[0] is OPT


def test_classify_uses_the_configs_thresholds() -> None:
    config = ModeConfig(critical_risk_score=60, high_risk_score=40, low_risk_score=30, min_trades=5)
    assert classify(expanding(risk_score=60.0), config)[0] is EMER
    assert classify(expanding(risk_score=45.0), config)[0] is PRES
    assert classify(expanding(risk_score=29.0, trades=5), config)[0] is EXP
    assert classify(expanding(win_rate=0.1, trades=5), config)[0] is PRES


# --- decide_mode -----------------------------------------------------------------------------------


def test_the_first_decision_is_the_rules_choice() -> None:
    decision = decide_mode(None, None, expanding(risk_score=None, risk_status="unavailable"), CONFIG, NOW)
    assert (decision.mode, decision.rule_mode) == (OPT, OPT)
    assert decision.reason.startswith("OPTIMIZATION: no alarm")
    first = decide_mode(None, None, expanding(), CONFIG, NOW)
    assert first.mode is EXP  # no hysteresis without a mode in force


@pytest.mark.parametrize("current", [EXP, OPT, PRES])
def test_a_stricter_mode_applies_at_once(current: OperatingMode) -> None:
    """Within the dwell time and with incomplete inputs: tightening needs neither."""
    inputs = expanding(risk_score=80.0, drawdown_pct=None, health=Health.UNKNOWN)
    decision = decide_mode(current, NOW, inputs, CONFIG, NOW)
    assert (decision.mode, decision.rule_mode) == (EMER, EMER)
    assert decision.reason == "tightens to EMERGENCY: risk score 80.0 >= 75"


def test_tightening_may_skip_steps_and_staying_says_so() -> None:
    assert decide_mode(EXP, NOW, expanding(drawdown_pct=6.0), CONFIG, NOW).mode is PRES
    stays = decide_mode(PRES, LONG_AGO, expanding(drawdown_pct=6.0), CONFIG, NOW)
    assert stays.mode is PRES
    assert stays.reason == "stays PRESERVATION: drawdown 6.00% >= 5%"


@pytest.mark.parametrize(
    "changes",
    [
        {"risk_score": None, "risk_status": "unavailable"},
        {"risk_score": 10.0, "risk_status": "unavailable"},  # a stale score from an unavailable brain
        {"drawdown_pct": None},
        {"health": Health.UNKNOWN, "unhealthy": ("readiness=unavailable",)},
    ],
)
def test_incomplete_inputs_hold_the_mode(changes: dict[str, Any]) -> None:
    inputs = expanding(**changes)
    assert not inputs.complete
    decision = decide_mode(PRES, LONG_AGO, inputs, CONFIG, NOW)
    assert decision.mode is PRES
    assert decision.rule_mode.rank < PRES.rank
    assert decision.reason.startswith(f"PRESERVATION held: rules choose {decision.rule_mode.value} (")
    assert "inputs incomplete" in decision.reason


def test_a_brain_with_too_little_data_has_answered() -> None:
    inputs = expanding(risk_score=None, risk_status="insufficient_data")
    assert inputs.complete
    decision = decide_mode(PRES, LONG_AGO, inputs, CONFIG, NOW)
    assert (decision.mode, decision.rule_mode) == (OPT, OPT)
    assert decision.reason.startswith("loosens one step to OPTIMIZATION: ")


@pytest.mark.parametrize(
    ("current", "changes", "loosens"),
    [
        # OPTIMIZATION -> EXPANSION: risk below 25 - 5, drawdown below 2 - 1, win rate at least 0.55 + 0.05.
        (OPT, {"risk_score": 22.0}, False),
        (OPT, {"risk_score": 20.0}, False),
        (OPT, {"risk_score": 19.0}, True),
        (OPT, {"drawdown_pct": 1.5}, False),
        (OPT, {"drawdown_pct": 1.0}, False),
        (OPT, {"drawdown_pct": 0.99}, True),
        (OPT, {"win_rate": 0.58}, False),
        (OPT, {"win_rate": 0.61}, True),
        # PRESERVATION -> OPTIMIZATION: risk below 50 - 5, drawdown below 5 - 1, win rate at least 0.40 + 0.05.
        (PRES, {"risk_score": 47.0}, False),
        (PRES, {"risk_score": 45.0}, False),
        (PRES, {"risk_score": 44.0}, True),
        (PRES, {"drawdown_pct": 4.5}, False),
        (PRES, {"drawdown_pct": 3.99}, True),
        (PRES, {"win_rate": 0.42}, False),
        (PRES, {"win_rate": 0.46}, True),
        # EMERGENCY -> PRESERVATION: risk below 75 - 5, drawdown below 10 - 1.
        (EMER, {"risk_score": 72.0}, False),
        (EMER, {"risk_score": 70.0}, False),
        (EMER, {"risk_score": 69.0}, True),
        (EMER, {"drawdown_pct": 9.5}, False),
        (EMER, {"drawdown_pct": 8.99}, True),
    ],
)
def test_loosening_needs_the_margins(current: OperatingMode, changes: dict[str, Any], loosens: bool) -> None:
    inputs = expanding(**changes)
    assert classify(inputs, CONFIG)[0].rank < current.rank  # without margins the rules would loosen
    decision = decide_mode(current, LONG_AGO, inputs, CONFIG, NOW)
    if loosens:
        assert decision.mode is OperatingMode(list(OperatingMode)[current.rank - 1])
        assert decision.reason.startswith(f"loosens one step to {decision.mode.value}: ")
    else:
        assert decision.mode is current
        assert decision.reason.startswith(f"{current.value} held: rules choose {decision.rule_mode.value}")
        assert "only without the hysteresis margins" in decision.reason


def test_margins_of_zero_loosen_at_the_plain_thresholds() -> None:
    config = ModeConfig(risk_margin=0, drawdown_margin_pct=0, win_rate_margin=0)
    assert decide_mode(OPT, LONG_AGO, expanding(risk_score=24.9), config, NOW).mode is EXP
    assert decide_mode(OPT, LONG_AGO, expanding(risk_score=22.0), CONFIG, NOW).mode is OPT


def test_the_margin_applies_against_a_win_rate_just_above_preservation_too() -> None:
    """A win rate that is no longer an alarm, but within the margin of one, keeps PRESERVATION."""
    decision = decide_mode(PRES, LONG_AGO, expanding(win_rate=0.41), CONFIG, NOW)
    assert (decision.mode, decision.rule_mode) == (PRES, OPT)


@pytest.mark.parametrize(("seconds", "loosens"), [(0, False), (899, False), (899.9, False), (900, True), (3600, True)])
def test_loosening_needs_the_min_dwell(seconds: float, loosens: bool) -> None:
    since = NOW - timedelta(seconds=seconds)
    decision = decide_mode(EMER, since, expanding(), CONFIG, NOW)
    assert decision.rule_mode is EXP
    if loosens:
        assert decision.mode is PRES  # one step, never straight to EXPANSION
        assert decision.reason.startswith("loosens one step to PRESERVATION: risk score 10.0 < 25")
    else:
        assert decision.mode is EMER
        assert "min dwell 900s" in decision.reason
        assert decision.reason.startswith("EMERGENCY held: rules choose EXPANSION (")


def test_dwell_is_measured_in_the_configured_seconds() -> None:
    config = ModeConfig(min_dwell_seconds=60)
    assert decide_mode(PRES, NOW - timedelta(seconds=59), expanding(), config, NOW).mode is PRES
    assert decide_mode(PRES, NOW - timedelta(seconds=60), expanding(), config, NOW).mode is OPT


def test_no_since_means_no_dwell_to_wait_for() -> None:
    assert decide_mode(PRES, None, expanding(), CONFIG, NOW).mode is OPT


def test_loosening_walks_one_step_per_dwell() -> None:
    mode, since, now = EMER, NOW, NOW
    seen = []
    for _ in range(5):
        now += timedelta(seconds=CONFIG.min_dwell_seconds)
        decision = decide_mode(mode, since, expanding(), CONFIG, now)
        if decision.mode is not mode:
            mode, since = decision.mode, now
        seen.append(mode)
    assert seen == [PRES, OPT, EXP, EXP, EXP]


def test_a_hold_never_moves_the_mode_even_when_the_rules_skip_steps() -> None:
    decision = decide_mode(EMER, NOW - timedelta(seconds=10), expanding(), CONFIG, NOW)
    assert (decision.mode, decision.rule_mode) == (EMER, EXP)


def test_the_decision_carries_its_inputs() -> None:
    inputs = expanding(drawdown_pct=3.0)
    assert decide_mode(OPT, LONG_AGO, inputs, CONFIG, NOW).inputs is inputs


# --- ModeConfig, ModeInputs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"low_risk_score": 50.0}, "risk thresholds"),
        ({"low_risk_score": -1.0}, "risk thresholds"),
        ({"high_risk_score": 75.0}, "risk thresholds"),
        ({"critical_risk_score": 100.1}, "risk thresholds"),
        ({"expansion_drawdown_pct": 5.0}, "drawdown thresholds"),
        ({"expansion_drawdown_pct": -0.1}, "drawdown thresholds"),
        ({"preservation_drawdown_pct": 10.0}, "drawdown thresholds"),
        ({"preservation_win_rate": 0.55}, "win-rate thresholds"),
        ({"preservation_win_rate": -0.01}, "win-rate thresholds"),
        ({"expansion_win_rate": 1.01}, "win-rate thresholds"),
        ({"risk_margin": -1.0}, "margins and the dwell time"),
        ({"drawdown_margin_pct": -0.5}, "margins and the dwell time"),
        ({"win_rate_margin": -0.01}, "margins and the dwell time"),
        ({"min_dwell_seconds": -1.0}, "margins and the dwell time"),
        ({"min_trades": 0}, "min_trades"),
    ],
)
def test_mode_config_rejects_inconsistent_values(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModeConfig(**changes)


def test_mode_config_accepts_the_edges() -> None:
    config = ModeConfig(
        low_risk_score=0,
        critical_risk_score=100,
        expansion_drawdown_pct=0,
        preservation_win_rate=0,
        expansion_win_rate=1,
        risk_margin=0,
        drawdown_margin_pct=0,
        win_rate_margin=0,
        min_dwell_seconds=0,
        min_trades=1,
    )
    assert config.min_trades == 1


def test_against_loosening_moves_every_threshold_by_its_margin() -> None:
    moved = CONFIG.against_loosening()
    assert (moved.critical_risk_score, moved.high_risk_score, moved.low_risk_score) == (70, 45, 20)
    assert (moved.emergency_drawdown_pct, moved.preservation_drawdown_pct, moved.expansion_drawdown_pct) == (9, 4, 1)
    assert moved.preservation_win_rate == pytest.approx(0.45)
    assert moved.expansion_win_rate == pytest.approx(0.60)
    assert (moved.min_trades, moved.min_dwell_seconds) == (CONFIG.min_trades, CONFIG.min_dwell_seconds)


def test_mode_inputs_as_dict_is_plain_json() -> None:
    inputs = expanding(health=Health.DEGRADED, unhealthy=("redis=down",))
    assert inputs.as_dict() == {
        "risk_score": 10.0,
        "risk_status": "ok",
        "drawdown_pct": 0.5,
        "win_rate": 0.70,
        "trades": 30,
        "health": "degraded",
        "unhealthy": ["redis=down"],
    }


def test_operating_mode_ranks_loosest_to_strictest() -> None:
    assert [m.rank for m in (EXP, OPT, PRES, EMER)] == [0, 1, 2, 3]


# --- the mode as a layer of the limit stack -----------------------------------------------------------

LIMIT_FIELDS = (
    "max_leverage",
    "max_risk_pct_per_trade",
    "position_size_cap_usd",
    "max_open_positions",
    "min_confidence",
    "max_daily_drawdown_pct",
    "new_positions_allowed",
    "leverage_multiplier",
)


@pytest.mark.parametrize("mode", [EXP, OPT])
def test_expansion_and_optimization_add_no_limit(mode: OperatingMode) -> None:
    layer = mode_layer(mode)
    assert (layer.layer, layer.source) == (Layer.MODE, mode.value)
    assert {name: getattr(layer, name) for name in LIMIT_FIELDS} == dict.fromkeys(LIMIT_FIELDS)
    assert set(LIMIT_FIELDS) == {f.name for f in fields(layer)} - {"layer", "source"}


def test_preservation_applies_the_defensive_profile() -> None:
    defensive = DEFAULT_PROFILES[RiskMode.DEFENSIVE]
    layer = mode_layer(PRES)
    assert (layer.layer, layer.source) == (Layer.MODE, "PRESERVATION")
    expected = profile_layer(defensive)
    for name in LIMIT_FIELDS[:6]:
        assert getattr(layer, name) == getattr(expected, name), name
    assert layer.max_leverage == defensive.max_leverage
    assert layer.min_confidence == defensive.global_min_confidence
    assert layer.new_positions_allowed is None  # closing and opening both still work
    assert layer.leverage_multiplier is None


def test_emergency_allows_no_new_position() -> None:
    layer = mode_layer(EMER)
    assert (layer.layer, layer.source, layer.new_positions_allowed) == (Layer.MODE, "EMERGENCY", False)
    assert all(getattr(layer, name) is None for name in LIMIT_FIELDS if name != "new_positions_allowed")


def test_preservation_binds_over_the_normal_profile_in_the_stack() -> None:
    normal, defensive = DEFAULT_PROFILES[RiskMode.NORMAL], DEFAULT_PROFILES[RiskMode.DEFENSIVE]
    assert defensive.max_leverage < normal.max_leverage  # otherwise this test proves nothing
    limits = stack(profile_layer(normal), mode_layer(PRES))
    assert (limits.max_leverage.value, limits.max_leverage.layer, limits.max_leverage.source) == (
        defensive.max_leverage,
        Layer.MODE,
        "PRESERVATION",
    )
    assert limits.max_leverage.by == "mode=PRESERVATION"
    assert limits.min_confidence.value == defensive.global_min_confidence
    assert limits.min_confidence.layer is Layer.MODE
    assert limits.position_size_cap_usd.value == min(defensive.position_size_cap_usd, normal.position_size_cap_usd)
    assert limits.new_positions_allowed.value is True


@pytest.mark.parametrize("mode", [EXP, OPT])
def test_loose_modes_leave_the_profile_binding(mode: OperatingMode) -> None:
    normal = DEFAULT_PROFILES[RiskMode.NORMAL]
    limits = stack(profile_layer(normal), mode_layer(mode))
    assert (limits.max_leverage.value, limits.max_leverage.layer) == (normal.max_leverage, Layer.PROFILE)
    assert limits.new_positions_allowed.value is True


def test_emergency_in_the_stack_stops_new_positions() -> None:
    limits = stack(profile_layer(DEFAULT_PROFILES[RiskMode.NORMAL]), mode_layer(EMER))
    assert limits.new_positions_allowed.value is False
    assert limits.new_positions_allowed.by == "mode=EMERGENCY"
    assert limits.max_leverage.layer is Layer.PROFILE


# --- health_of -------------------------------------------------------------------------------------


def ready(**statuses: str) -> dict[str, Any]:
    """/ready-like components, all up, with `statuses` replacing some."""
    components: dict[str, Any] = {
        "database": {"status": "up", "dialect": "sqlite"},
        "policy_store": {"status": "up", "restore_error": None},
        "redis": {"status": "not_configured"},
        "event_bus": {"status": "up", "handler_failures": 0},
        "signals": {"status": "up"},
        "safety_governor": {"status": "up"},
    }
    for name, status in statuses.items():
        components[name] = {**components.get(name, {}), "status": status}
    return components


def test_health_of_all_up_is_healthy() -> None:
    assert health_of(ready(), 0) == (Health.HEALTHY, ())
    assert health_of({}, 0) == (Health.HEALTHY, ())


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ({"database": "down"}, (Health.CRITICAL, ("database=down",))),
        ({"policy_store": "not_restored"}, (Health.CRITICAL, ("policy_store=not_restored",))),
        ({"safety_governor": "not_initialised"}, (Health.CRITICAL, ("safety_governor=not_initialised",))),
        ({"policy_store": "degraded"}, (Health.DEGRADED, ("policy_store=degraded",))),
        ({"policy_store": "down"}, (Health.DEGRADED, ("policy_store=down",))),
        ({"redis": "down"}, (Health.DEGRADED, ("redis=down",))),
        ({"redis": "up"}, (Health.HEALTHY, ())),
        ({"safety_governor": "halted"}, (Health.HEALTHY, ())),
        ({"safety_governor": "unknown"}, (Health.HEALTHY, ())),
    ],
)
def test_health_of_maps_component_statuses(statuses: dict[str, str], expected: tuple[Health, tuple[str, ...]]) -> None:
    assert health_of(ready(**statuses), 0) == expected


def test_a_critical_component_outranks_degraded_ones() -> None:
    health, unhealthy = health_of(ready(database="down", redis="down", policy_store="not_restored"), 4)
    assert health is Health.CRITICAL
    assert unhealthy == ("database=down", "policy_store=not_restored")


def test_every_degraded_component_is_listed() -> None:
    assert health_of(ready(policy_store="degraded", redis="down"), 2) == (
        Health.DEGRADED,
        ("policy_store=degraded", "redis=down", "event_bus=2 new handler failures"),
    )


def test_only_new_bus_failures_degrade() -> None:
    """The bus's own status counts every failure since start; only new ones count against health."""
    assert health_of(ready(event_bus="degraded"), 0) == (Health.HEALTHY, ())
    assert health_of(ready(), 1) == (Health.DEGRADED, ("event_bus=1 new handler failures",))


@pytest.mark.parametrize("status", ["down", "fallback", "up"])
def test_the_signal_source_is_not_part_of_health(status: str) -> None:
    assert health_of(ready(signals=status), 0) == (Health.HEALTHY, ())
