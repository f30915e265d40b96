"""Exchange math for Binance USDⓈ-M perpetuals: liquidation price, leverage tiers, funding, realized PnL.

The one source of these numbers in the app. Pure functions with keyword-only arguments. Numbers go in as
floats (ints allowed) or Decimals and come out as the same kind: if any number argument is a Decimal the
function computes in Decimal (floats among them are converted through ``str``) and returns a Decimal,
otherwise it computes in float and returns a float. Sides are ``"LONG"`` / ``"SHORT"``; s = +1 for a long,
-1 for a short. Amounts are in contracts (base units: every bundled market has contractSize 1).

Invalid inputs raise ValueError naming the argument (TypeError for a value that is not a number).
"""

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast, overload

BUNDLED_LEVERAGE_TIERS = Path(__file__).parent / "data" / "binance_leverage_tiers.json"

SIDES = {"LONG": 1, "SHORT": -1}
MARGIN_MODES = ("isolated", "cross")
OTHER_POSITION_KEYS = ("side", "amount", "open_price", "mark_price", "mm_ratio", "maintenance_amount")

Number = float | Decimal  # int is accepted as a float


DEFAULT_LIQUIDATION_BUFFER_PCT = Decimal("0.5")
"""How far (percent of the entry price) a stop must trigger before the liquidation price: RiskGuard's
STOP_BEYOND_LIQUIDATION and the Exit Brain's plans both use it (LIQUIDATION_BUFFER_PCT)."""


class UnknownSymbolError(KeyError):
    """A symbol with no data (no leverage tiers, no market). A KeyError whose str() is the plain message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# --- argument checks --------------------------------------------------------------------------------


def _sign(side: object, name: str = "side") -> int:
    if not isinstance(side, str) or side not in SIDES:
        raise ValueError(f"{name} must be 'LONG' or 'SHORT', got {side!r}")
    return SIDES[side]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _coerce(values: Mapping[str, object]) -> tuple[bool, dict[str, Any]]:
    """Check every value is a finite number; return (in Decimal?, the values all of that kind)."""
    for name, value in values.items():
        if not _is_number(value):
            raise TypeError(f"{name} must be a float or a Decimal, got {type(value).__name__}")
        finite = value.is_finite() if isinstance(value, Decimal) else math.isfinite(cast(float, value))
        if not finite:
            raise ValueError(f"{name} must be finite, got {value!r}")
    in_decimal = any(isinstance(v, Decimal) for v in values.values())
    if in_decimal:
        return True, {k: v if isinstance(v, Decimal) else Decimal(str(v)) for k, v in values.items()}
    return False, {k: float(cast(float, v)) for k, v in values.items()}


def _positive(values: Mapping[str, Any], *names: str, prefix: str = "") -> None:
    for name in names:
        if not values[name] > 0:
            raise ValueError(f"{prefix}{name} must be > 0, got {values[name]}")


def _at_least_zero(values: Mapping[str, Any], *names: str, prefix: str = "") -> None:
    for name in names:
        if values[name] < 0:
            raise ValueError(f"{prefix}{name} must be >= 0, got {values[name]}")


def _mm_ratio_in_range(values: Mapping[str, Any], prefix: str = "") -> None:
    if not 0 <= values["mm_ratio"] <= 1:
        raise ValueError(f"{prefix}mm_ratio must be within [0, 1], got {values['mm_ratio']}")


def _convert(value: object, in_decimal: bool) -> Any:
    """An already-checked number as the working kind."""
    if in_decimal:
        return value if isinstance(value, Decimal) else Decimal(str(value))
    return float(cast(float, value))


# --- liquidation price ------------------------------------------------------------------------------


def _cross_terms(other_positions: Iterable[Mapping[str, Any]], in_decimal: bool) -> Any:
    """Σ over the other positions of (unrealized PnL − maintenance margin), in the working kind."""
    total: Any = Decimal(0) if in_decimal else 0.0
    for i, position in enumerate(other_positions):
        prefix = f"other_positions[{i}]."
        missing = [key for key in OTHER_POSITION_KEYS if key not in position]
        if missing:
            raise ValueError(f"other_positions[{i}] lacks {', '.join(missing)}")
        s = _sign(position["side"], f"{prefix}side")
        _, checked = _coerce({f"{prefix}{k}": position[k] for k in OTHER_POSITION_KEYS[1:]})
        values = {k: _convert(checked[f"{prefix}{k}"], in_decimal) for k in OTHER_POSITION_KEYS[1:]}
        _positive(values, "amount", "open_price", "mark_price", prefix=prefix)
        _at_least_zero(values, "maintenance_amount", prefix=prefix)
        _mm_ratio_in_range(values, prefix=prefix)
        amount, mark = values["amount"], values["mark_price"]
        unrealized = s * amount * (mark - values["open_price"])
        maintenance = amount * mark * values["mm_ratio"] - values["maintenance_amount"]
        total += unrealized - maintenance
    return total


@overload
def liquidation_price(
    *,
    side: str,
    open_price: Decimal,
    amount: Decimal,
    wallet_balance: Decimal,
    mm_ratio: Decimal,
    maintenance_amount: Decimal,
    margin_mode: str = "isolated",
    other_positions: Iterable[Mapping[str, Any]] = (),
) -> Decimal | None: ...


@overload
def liquidation_price(
    *,
    side: str,
    open_price: float,
    amount: float,
    wallet_balance: float,
    mm_ratio: float,
    maintenance_amount: float,
    margin_mode: str = "isolated",
    other_positions: Iterable[Mapping[str, Any]] = (),
) -> float | None: ...


@overload
def liquidation_price(
    *,
    side: str,
    open_price: Number,
    amount: Number,
    wallet_balance: Number,
    mm_ratio: Number,
    maintenance_amount: Number,
    margin_mode: str = "isolated",
    other_positions: Iterable[Mapping[str, Any]] = (),
) -> Number | None: ...


def liquidation_price(
    *,
    side: str,
    open_price: Number,
    amount: Number,
    wallet_balance: Number,
    mm_ratio: Number,
    maintenance_amount: Number,
    margin_mode: str = "isolated",
    other_positions: Iterable[Mapping[str, Any]] = (),
) -> Number | None:
    """Liquidation price of a USDⓈ-M position in one-way mode, or None where none exists.

    Binance's formula: LP = (WB + cross_terms + cum − s·amount·EP) / (amount·MMR − s·amount), with
    WB the wallet balance (isolated: the position's margin), cum = ``maintenance_amount`` and MMR =
    ``mm_ratio`` of the position's leverage tier, EP = ``open_price``. In cross mode cross_terms is the sum
    over the *other* positions (mappings with side, amount, open_price, mark_price, mm_ratio,
    maintenance_amount) of unrealized PnL s·amount·(mark − open) minus maintenance margin
    amount·mark·mm_ratio − maintenance_amount; in isolated mode other positions are ignored.
    None when the price would be ≤ 0 (e.g. an isolated long whose margin covers a fall to zero; in cross
    mode also an account whose other positions already eat the wallet) or the denominator is 0 (MMR 1, long).
    The kind of the result follows the top-level number arguments; other positions' numbers are
    converted to it.
    """
    s = _sign(side)
    if margin_mode not in MARGIN_MODES:
        raise ValueError(f"margin_mode must be 'isolated' or 'cross', got {margin_mode!r}")
    in_decimal, v = _coerce(
        {
            "open_price": open_price,
            "amount": amount,
            "wallet_balance": wallet_balance,
            "mm_ratio": mm_ratio,
            "maintenance_amount": maintenance_amount,
        }
    )
    _positive(v, "open_price", "amount")
    _at_least_zero(v, "wallet_balance", "maintenance_amount")
    _mm_ratio_in_range(v)
    cross = _cross_terms(other_positions, in_decimal) if margin_mode == "cross" else 0
    size = v["amount"]
    denominator = size * v["mm_ratio"] - s * size
    if denominator == 0:
        return None
    price = (v["wallet_balance"] + cross + v["maintenance_amount"] - s * size * v["open_price"]) / denominator
    if price <= 0:
        return None
    return cast(Number, price)


# --- leverage tiers ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeverageTier:
    """One row of Binance's leverage-tier (notional bracket) table for a symbol.

    The tier covers notionals in [min_notional, max_notional). ``maintenance_amount`` is Binance's ``cum``.
    """

    symbol: str  # ccxt unified, e.g. BTC/USDT:USDT
    tier: int
    min_notional: Decimal
    max_notional: Decimal
    mm_ratio: Decimal
    maintenance_amount: Decimal
    max_leverage: Decimal


def _exchange_id(unified: str) -> str:
    """Binance's id of a USDⓈ-M perpetual: BTC/USDT:USDT → BTCUSDT."""
    return unified.split(":", 1)[0].replace("/", "")


def _decimal(value: object) -> Decimal:
    """A number from the tier file as an exact Decimal, without a float's trailing ``.0`` (50000.0 → 50000)."""
    number = Decimal(str(value))
    integral = number.to_integral_value()
    return integral if number == integral else number


def _parse_tier(symbol: str, row: Mapping[str, Any]) -> LeverageTier:
    return LeverageTier(
        symbol=symbol,
        tier=int(row["tier"]),
        min_notional=_decimal(row["minNotional"]),
        max_notional=_decimal(row["maxNotional"]),
        mm_ratio=_decimal(row["maintenanceMarginRate"]),
        maintenance_amount=_decimal(row["info"]["cum"]),
        max_leverage=_decimal(row["maxLeverage"]),
    )


@lru_cache(maxsize=8)
def _load(resolved: str) -> tuple[Mapping[str, tuple[LeverageTier, ...]], Mapping[str, str]]:
    """(tiers by unified symbol, unified symbol by Binance id) from one tier file."""
    raw: dict[str, list[dict[str, Any]]] = json.loads(Path(resolved).read_text(encoding="utf-8"))
    table: dict[str, tuple[LeverageTier, ...]] = {}
    for symbol, rows in raw.items():
        tiers = tuple(sorted((_parse_tier(symbol, row) for row in rows), key=lambda t: t.min_notional))
        if not tiers:
            raise ValueError(f"{resolved}: no tiers for {symbol}")
        for lower, upper in pairwise(tiers):
            if lower.max_notional != upper.min_notional:
                raise ValueError(f"{resolved}: tiers of {symbol} are not contiguous at {lower.max_notional}")
        table[symbol] = tiers
    by_id = {_exchange_id(symbol): symbol for symbol in table}
    return MappingProxyType(table), MappingProxyType(by_id)


_BUNDLED_KEY = str(BUNDLED_LEVERAGE_TIERS.resolve())


def _tier_file(path: str | Path | None) -> str:
    return _BUNDLED_KEY if path is None else str(Path(path).resolve())


def load_leverage_tiers(path: str | Path | None = None) -> Mapping[str, tuple[LeverageTier, ...]]:
    """The leverage-tier table (ccxt's ``fetch_leverage_tiers`` format) keyed by unified symbol, tiers in order.

    Default: the bundled slice of Binance's table for the seven bundled USDT-M perpetuals. Cached per path.
    """
    return _load(_tier_file(path))[0]


def leverage_tier(*, symbol: str, notional: float | Decimal, path: str | Path | None = None) -> LeverageTier:
    """The tier of ``symbol`` for a position of ``notional`` (quote currency, USDT).

    ``symbol`` is a Binance id (``BTCUSDT``) or a ccxt unified symbol (``BTC/USDT:USDT``). A notional on a
    boundary belongs to the tier whose [minNotional, maxNotional) contains it, i.e. the higher tier (50,000
    on BTC is tier 2). Unknown symbol: UnknownSymbolError (a KeyError); notional at or beyond the last tier's
    maxNotional: ValueError. ``path``: another tier file (default the bundled one).
    """
    _, v = _coerce({"notional": notional})
    value = v["notional"] if isinstance(v["notional"], Decimal) else Decimal(str(v["notional"]))
    if value < 0:
        raise ValueError(f"notional must be >= 0, got {notional}")
    table, by_id = _load(_tier_file(path))
    key = symbol.strip().upper()
    tiers = table.get(key) or table.get(by_id.get(key, ""))
    if tiers is None:
        known = ", ".join(sorted(table))
        raise UnknownSymbolError(f"no leverage tiers for symbol {symbol!r}; known: {known}")
    for tier in tiers:
        if tier.min_notional <= value < tier.max_notional:
            return tier
    raise ValueError(f"notional {notional} is beyond the last leverage tier of {tiers[-1].symbol}")


# --- funding and realized PnL -----------------------------------------------------------------------


@overload
def funding_fee(*, side: str, amount: Decimal, mark_price: Decimal, funding_rate: Decimal) -> Decimal: ...


@overload
def funding_fee(*, side: str, amount: float, mark_price: float, funding_rate: float) -> float: ...


@overload
def funding_fee(*, side: str, amount: Number, mark_price: Number, funding_rate: Number) -> Number: ...


def funding_fee(*, side: str, amount: Number, mark_price: Number, funding_rate: Number) -> Number:
    """Funding for one settlement, from the holder's view: positive = received, negative = paid.

    Binance: funding = position notional at the mark price × funding rate, paid by longs to shorts when the
    rate is positive (shorts to longs when negative). fee = −s·amount·mark_price·funding_rate.
    """
    s = _sign(side)
    _, v = _coerce({"amount": amount, "mark_price": mark_price, "funding_rate": funding_rate})
    _positive(v, "amount", "mark_price")
    return cast(Number, -s * v["amount"] * v["mark_price"] * v["funding_rate"])


@overload
def realized_pnl(
    *,
    side: str,
    amount: Decimal,
    open_price: Decimal,
    close_price: Decimal,
    fee_rate_open: Decimal,
    fee_rate_close: Decimal,
    funding_fees: Decimal | int = 0,
) -> Decimal: ...


@overload
def realized_pnl(
    *,
    side: str,
    amount: float,
    open_price: float,
    close_price: float,
    fee_rate_open: float,
    fee_rate_close: float,
    funding_fees: float = 0,
) -> float: ...


@overload
def realized_pnl(
    *,
    side: str,
    amount: Number,
    open_price: Number,
    close_price: Number,
    fee_rate_open: Number,
    fee_rate_close: Number,
    funding_fees: Number = 0,
) -> Number: ...


def realized_pnl(
    *,
    side: str,
    amount: Number,
    open_price: Number,
    close_price: Number,
    fee_rate_open: Number,
    fee_rate_close: Number,
    funding_fees: Number = 0,
) -> Number:
    """Realized PnL of closing ``amount`` of a position, net of trading fees and funding (quote currency).

    s·amount·(close − open) − amount·open·fee_rate_open − amount·close·fee_rate_close + funding_fees.
    Fees are charged on each fill's notional (Binance: notional × maker/taker rate; a negative rate is a
    rebate); ``funding_fees`` is the sum of ``funding_fee`` over the holding period (positive = received).
    """
    s = _sign(side)
    _, v = _coerce(
        {
            "amount": amount,
            "open_price": open_price,
            "close_price": close_price,
            "fee_rate_open": fee_rate_open,
            "fee_rate_close": fee_rate_close,
            "funding_fees": funding_fees,
        }
    )
    _positive(v, "amount", "open_price", "close_price")
    size, opened, closed = v["amount"], v["open_price"], v["close_price"]
    gross = s * size * (closed - opened)
    fees = size * opened * v["fee_rate_open"] + size * closed * v["fee_rate_close"]
    return cast(Number, gross - fees + v["funding_fees"])
