"""The shared input rules: control characters, bounds, strict types, and arithmetic at the extremes."""

from decimal import Decimal
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from app.core.validation import (
    MAX_COUNT,
    MAX_PRICE,
    MAX_USD,
    MIN_PRICE,
    ActorName,
    ClientOrderId,
    Count,
    Flag,
    Label,
    Price,
    Reason,
    SymbolText,
    TradeLeverage,
    Usd,
    no_control_characters,
)
from app.domains.markets.catalog import BelowExchangeMinimum, MarketCatalog, OutOfRange
from app.domains.policy.profiles import ProfileOverrides

CONTROL = [chr(c) for c in range(0x20)] + [chr(c) for c in range(0x7F, 0xA0)]
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]


@pytest.mark.parametrize("char", CONTROL + SURROGATES, ids=lambda c: f"U+{ord(c):04X}")
def test_every_control_character_and_lone_surrogate_is_refused(char: str) -> None:
    with pytest.raises(ValueError, match=f"U\\+{ord(char):04X} at position 3"):
        no_control_characters(f"abc{char}def")


@pytest.mark.parametrize("text", ["plain", "café", "市场", "emoji 🚀", "a-b_c:d.e/f", "quote ' \" \\"])
def test_printable_unicode_passes(text: str) -> None:
    assert no_control_characters(text) == text


@pytest.mark.parametrize("kind", [Reason, SymbolText, Label, ActorName])
def test_text_types_refuse_nul(kind: Any) -> None:
    with pytest.raises(ValidationError, match="U\\+0000"):
        TypeAdapter(kind).validate_python("ab\x00cd")


@pytest.mark.parametrize(
    ("kind", "too_long"),
    [(Reason, 501), (SymbolText, 33), (Label, 65), (ActorName, 129), (ClientOrderId, 65)],
)
def test_text_lengths_are_bounded(kind: Any, too_long: int) -> None:
    TypeAdapter(kind).validate_python("a" * (too_long - 1))
    with pytest.raises(ValidationError, match="at most"):
        TypeAdapter(kind).validate_python("a" * too_long)


def test_reason_needs_three_characters_and_client_order_id_printable_ascii() -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Reason).validate_python("ab")
    for bad in ("has space", "nul\x00", "é"):
        with pytest.raises(ValidationError):
            TypeAdapter(ClientOrderId).validate_python(bad)


NOT_A_NUMBER: list[Any] = ["1e400", "-1e400", "Infinity", "-Infinity", "NaN", "sNaN", float("inf"), float("nan"), True]


@pytest.mark.parametrize("kind", [Usd, Price, TradeLeverage])
@pytest.mark.parametrize("value", NOT_A_NUMBER, ids=repr)
def test_decimals_refuse_infinite_huge_and_boolean_values(kind: Any, value: Any) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(kind).validate_python(value)


@pytest.mark.parametrize(
    ("kind", "largest", "too_large", "too_precise"),
    [
        (Usd, MAX_USD, MAX_USD + Decimal("0.00000001"), "1.000000001"),
        (Price, MAX_PRICE, MAX_PRICE + Decimal("1e-12"), "1.0000000000001"),
        (TradeLeverage, Decimal(1000), Decimal("1000.00000001"), "1.000000001"),
    ],
)
def test_decimals_are_bounded_in_range_and_precision(
    kind: Any, largest: Decimal, too_large: Decimal, too_precise: str
) -> None:
    adapter = TypeAdapter(kind)
    assert adapter.validate_python(str(largest)) == largest
    assert adapter.validate_python(12.5) == Decimal("12.5")  # JSON numbers and strings, as before
    for bad in (too_large, too_precise, "0", "-1"):
        with pytest.raises(ValidationError):
            adapter.validate_python(bad)


def test_price_has_a_floor() -> None:
    assert TypeAdapter(Price).validate_python(str(MIN_PRICE)) == MIN_PRICE
    with pytest.raises(ValidationError):
        TypeAdapter(Price).validate_python("1e-13")


@pytest.mark.parametrize("value", [True, False, 1.0, "3", MAX_COUNT + 1, -1, 2**63])
def test_counts_are_strict_bounded_integers(value: Any) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Count).validate_python(value)


@pytest.mark.parametrize("value", [1, 0, "true", "yes"])
def test_flags_are_strict_booleans(value: Any) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Flag).validate_python(value)


@pytest.mark.parametrize(
    "patch",
    [
        {"position_size_cap_usd": "1e400"},
        {"position_size_cap_usd": "1000000000000.01"},
        {"position_size_cap_usd": "Infinity"},
        {"max_risk_pct_per_trade": "1e-400"},
        {"max_leverage": "126"},
        {"max_leverage": True},
        {"max_open_positions": True},
        {"max_open_positions": 1.0},
        {"allow_new_positions": 1},
    ],
    ids=repr,
)
def test_profile_overrides_refuse_out_of_range_and_wrong_types(patch: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        ProfileOverrides.model_validate(patch)
    assert caught.value.errors()[0]["loc"][0] == next(iter(patch))


def test_profile_override_at_the_bounds_serializes_finite() -> None:
    overrides = ProfileOverrides.model_validate({"position_size_cap_usd": "1e12", "max_open_positions": MAX_COUNT})
    assert overrides.model_dump(mode="json") == {
        "max_leverage": None,
        "max_risk_pct_per_trade": None,
        "max_daily_drawdown_pct": None,
        "emergency_drawdown_pct": None,
        "max_open_positions": MAX_COUNT,
        "position_size_cap_usd": 1e12,
        "global_min_confidence": None,
        "allow_new_positions": None,
    }


CATALOG = MarketCatalog.load()


@pytest.mark.parametrize("symbol", CATALOG.symbols())
def test_quantity_at_the_input_extremes_never_raises_a_decimal_error(symbol: str) -> None:
    """Bounded inputs keep notional / price inside Decimal's precision for every market."""
    market = CATALOG.resolve(symbol)
    for price in (MIN_PRICE, market.price_tick, Decimal(1), MAX_PRICE):
        for notional in (Decimal("0.00000001"), Decimal(5), MAX_USD):
            try:
                quantity = market.quantity_for(notional, price)
            except BelowExchangeMinimum:
                continue
            assert quantity.is_finite() and quantity > 0


def test_a_quantity_out_of_decimal_range_is_out_of_range_not_invalid_operation() -> None:
    """1e15 at 1e-11 (beyond the API's bounds) used to raise decimal.InvalidOperation: a 500."""
    market = CATALOG.resolve("DOGEUSDT")
    with pytest.raises(BelowExchangeMinimum, match=r"price 1E-11 is below the price tick"):
        market.quantity_for(Decimal("1e15"), Decimal("1e-11"))
    with pytest.raises(OutOfRange, match=r"notional 1E\+30 at price 0\.00001"):
        market.quantity_for(Decimal("1e30"), Decimal("0.00001"))
