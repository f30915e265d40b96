"""The default risk profiles, override validation and effective_profile."""

import math
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from app.domains.policy.profiles import (
    DEFAULT_PROFILES,
    ProfileOverrides,
    RiskMode,
    RiskProfile,
    effective_profile,
)
from tests.support import default_plan_breakeven

EXPECTED = {
    RiskMode.AGGRESSIVE_SMALL_ACCOUNT: {
        "max_leverage": Decimal(7),
        "max_risk_pct_per_trade": Decimal("3.0"),
        "max_daily_drawdown_pct": Decimal("6.0"),
        "emergency_drawdown_pct": Decimal("9.6"),
        "max_open_positions": 15,
        "position_size_cap_usd": Decimal(300),
        "global_min_confidence": Decimal("0.55"),
        "allow_new_positions": True,
    },
    RiskMode.NORMAL: {
        "max_leverage": Decimal(5),
        "max_risk_pct_per_trade": Decimal("1.5"),
        "max_daily_drawdown_pct": Decimal("5.0"),
        "emergency_drawdown_pct": Decimal("8.0"),
        "max_open_positions": 30,
        "position_size_cap_usd": Decimal(1000),
        "global_min_confidence": Decimal("0.57"),
        "allow_new_positions": True,
    },
    RiskMode.DEFENSIVE: {
        "max_leverage": Decimal(3),
        "max_risk_pct_per_trade": Decimal("0.75"),
        "max_daily_drawdown_pct": Decimal("3.0"),
        "emergency_drawdown_pct": Decimal("4.8"),
        "max_open_positions": 10,
        "position_size_cap_usd": Decimal(500),
        "global_min_confidence": Decimal("0.60"),
        "allow_new_positions": True,
    },
}

per_mode = pytest.mark.parametrize("mode", list(RiskMode), ids=str)


# --- defaults -----------------------------------------------------------------------------


def test_there_is_one_default_profile_per_mode() -> None:
    assert set(DEFAULT_PROFILES) == set(RiskMode) == set(EXPECTED)


@per_mode
def test_default_profile_matches_the_table(mode: RiskMode) -> None:
    assert DEFAULT_PROFILES[mode].model_dump() == {"name": mode, **EXPECTED[mode]}


def test_min_confidences_are_above_the_breakeven_and_stricter_profiles_never_looser() -> None:
    """global_min_confidence is a calibrated P(TP1 before the stop): each default lies above the default
    plan's breakeven, and the profiles are ordered AGGRESSIVE_SMALL_ACCOUNT <= NORMAL <= DEFENSIVE."""
    breakeven = default_plan_breakeven()
    assert breakeven == pytest.approx(0.5317, abs=1e-4)
    minimums = [
        DEFAULT_PROFILES[m].global_min_confidence
        for m in (RiskMode.AGGRESSIVE_SMALL_ACCOUNT, RiskMode.NORMAL, RiskMode.DEFENSIVE)
    ]
    assert all(float(m) > breakeven for m in minimums)
    assert minimums == sorted(minimums)


@per_mode
def test_default_values_are_exact_decimals_not_float_artefacts(mode: RiskMode) -> None:
    profile = DEFAULT_PROFILES[mode]
    for name, value in EXPECTED[mode].items():
        actual = getattr(profile, name)
        assert type(actual) is type(value), name
        if isinstance(value, Decimal):
            # Decimal(str(0.65)), not Decimal(0.65) = 0.65000000000000002220446...
            assert actual.as_tuple().exponent >= -2, (name, actual)


@per_mode
def test_limits_serialise_numbers_as_json_floats(mode: RiskMode) -> None:
    expected = {name: (float(v) if isinstance(v, Decimal) else v) for name, v in EXPECTED[mode].items()}
    assert DEFAULT_PROFILES[mode].limits() == {"name": mode.value, **expected}


@per_mode
def test_profiles_are_frozen(mode: RiskMode) -> None:
    with pytest.raises(ValidationError):
        DEFAULT_PROFILES[mode].max_leverage = Decimal(100)  # type: ignore[misc]


# --- override validation ------------------------------------------------------------------

INVALID_OVERRIDES = {
    "negative leverage": {"max_leverage": -1},
    "zero leverage": {"max_leverage": 0},
    "leverage above hard limit": {"max_leverage": Decimal("125.0001")},
    "zero risk pct": {"max_risk_pct_per_trade": 0},
    "negative risk pct": {"max_risk_pct_per_trade": Decimal("-0.5")},
    "risk pct above 100": {"max_risk_pct_per_trade": Decimal("100.0001")},
    "zero daily drawdown": {"max_daily_drawdown_pct": 0},
    "zero emergency drawdown": {"emergency_drawdown_pct": 0},
    "negative open positions": {"max_open_positions": -1},
    "fractional open positions": {"max_open_positions": 1.5},
    "zero size cap": {"position_size_cap_usd": 0},
    "negative size cap": {"position_size_cap_usd": -100},
    "negative confidence": {"global_min_confidence": Decimal("-0.01")},
    "confidence above 1": {"global_min_confidence": Decimal("1.0001")},
    "float NaN": {"max_leverage": math.nan},
    "string NaN": {"max_risk_pct_per_trade": "NaN"},
    "Decimal NaN": {"global_min_confidence": Decimal("NaN")},
    "float infinity": {"position_size_cap_usd": math.inf},
    "string -Infinity": {"max_daily_drawdown_pct": "-Infinity"},
    "Decimal infinity": {"max_leverage": Decimal("Infinity")},
    "bool as number": {"max_leverage": True},
    "unknown field": {"max_leverage": 3, "max_levarage": 3},
    "name is not overridable": {"name": "DEFENSIVE"},
    "empty": {},
    "null leverage": {"max_leverage": None},
    "null flag": {"allow_new_positions": None},
    "null next to a valid value": {"max_open_positions": 3, "global_min_confidence": None},
}


@pytest.mark.parametrize("data", INVALID_OVERRIDES.values(), ids=INVALID_OVERRIDES.keys())
def test_invalid_overrides_are_rejected(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ProfileOverrides.model_validate(data)


def test_empty_overrides_message() -> None:
    with pytest.raises(ValidationError, match="give at least one profile field to override"):
        ProfileOverrides()


def test_null_override_message() -> None:
    with pytest.raises(ValidationError, match="max_leverage must not be null"):
        ProfileOverrides(max_leverage=None)


VALID_OVERRIDES = {
    "zero open positions": ({"max_open_positions": 0}, {"max_open_positions": 0}),
    "zero confidence": ({"global_min_confidence": 0}, {"global_min_confidence": Decimal(0)}),
    "confidence of 1": ({"global_min_confidence": 1}, {"global_min_confidence": Decimal(1)}),
    "hard max leverage": ({"max_leverage": 125}, {"max_leverage": Decimal(125)}),
    "100 percent": ({"max_risk_pct_per_trade": 100}, {"max_risk_pct_per_trade": Decimal(100)}),
    "numeric strings": ({"position_size_cap_usd": "250.5"}, {"position_size_cap_usd": Decimal("250.5")}),
    "disable new positions": ({"allow_new_positions": False}, {"allow_new_positions": False}),
    "several": (
        {"max_open_positions": 3, "max_leverage": 4},
        {"max_leverage": Decimal(4), "max_open_positions": 3},
    ),
}


@pytest.mark.parametrize(("data", "given"), VALID_OVERRIDES.values(), ids=VALID_OVERRIDES.keys())
def test_valid_overrides_keep_only_the_given_fields(data: dict[str, Any], given: dict[str, Any]) -> None:
    overrides = ProfileOverrides.model_validate(data)

    assert overrides.given() == given
    assert list(overrides.given()) == sorted(given)


# --- effective_profile --------------------------------------------------------------------


@per_mode
def test_no_overrides_is_the_default_profile(mode: RiskMode) -> None:
    assert effective_profile(mode, {}) is DEFAULT_PROFILES[mode]


@per_mode
def test_overrides_replace_only_their_fields(mode: RiskMode) -> None:
    overrides = ProfileOverrides(max_open_positions=3, max_leverage=Decimal(2))

    profile = effective_profile(mode, overrides.given())

    assert profile.model_dump() == {
        "name": mode,
        **EXPECTED[mode],
        "max_open_positions": 3,
        "max_leverage": Decimal(2),
    }
    assert DEFAULT_PROFILES[mode].model_dump() == {"name": mode, **EXPECTED[mode]}  # untouched


@per_mode
def test_merged_profile_is_validated_as_a_whole(mode: RiskMode) -> None:
    daily = EXPECTED[mode]["max_daily_drawdown_pct"]
    emergency = EXPECTED[mode]["emergency_drawdown_pct"]

    # Each of these overrides is valid alone but inconsistent with the profile's other value.
    with pytest.raises(ValidationError, match=r"emergency_drawdown_pct \(.*\) must be >= max_daily_drawdown_pct"):
        effective_profile(mode, {"emergency_drawdown_pct": daily - Decimal("0.1")})
    with pytest.raises(ValidationError, match=r"emergency_drawdown_pct \(.*\) must be >= max_daily_drawdown_pct"):
        effective_profile(mode, {"max_daily_drawdown_pct": emergency + Decimal("0.1")})

    # Equal drawdowns are allowed; moving both together is too.
    assert effective_profile(mode, {"emergency_drawdown_pct": daily}).emergency_drawdown_pct == daily
    both = effective_profile(mode, {"max_daily_drawdown_pct": 20, "emergency_drawdown_pct": 30})
    assert (both.max_daily_drawdown_pct, both.emergency_drawdown_pct) == (Decimal(20), Decimal(30))


@per_mode
def test_inconsistent_drawdown_pair_in_overrides_is_rejected_when_applied(mode: RiskMode) -> None:
    overrides = ProfileOverrides(max_daily_drawdown_pct=Decimal(10), emergency_drawdown_pct=Decimal(5))

    with pytest.raises(ValidationError, match=r"emergency_drawdown_pct \(5\) must be >= max_daily_drawdown_pct \(10\)"):
        effective_profile(mode, overrides.given())


@per_mode
@pytest.mark.parametrize(
    "overrides",
    [{"max_leverage": 126}, {"global_min_confidence": 2}, {"unknown": 1}, {"max_open_positions": -1}],
    ids=["leverage", "confidence", "unknown", "open positions"],
)
def test_effective_profile_rejects_invalid_raw_overrides(mode: RiskMode, overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        effective_profile(mode, overrides)


def test_risk_profile_rejects_emergency_below_daily() -> None:
    values = {"name": RiskMode.NORMAL, **EXPECTED[RiskMode.NORMAL], "emergency_drawdown_pct": Decimal("4.99")}
    with pytest.raises(ValidationError, match="must be >= max_daily_drawdown_pct"):
        RiskProfile.model_validate(values)
