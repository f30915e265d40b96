"""Amount and price rounding by ccxt's own ``amount_to_precision`` / ``price_to_precision``, offline.

One ``ccxt.binanceusdm`` instance in DECIMAL_PLACES precision mode (the bundled market file stores precision
as decimal places), given the app's bundled markets with ``set_markets``: ``load_markets`` and every other
network call are never made. Amounts are truncated to the amount step, prices rounded (half up) to the tick,
exactly as ccxt does; this module adds only symbol resolution, input checks and error mapping.
"""

import decimal
import json
import math
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import ccxt

from app.core.symbols import find_symbol
from app.domains.execution.margin import UnknownSymbolError

# The app's bundled ccxt markets (a slice of ccxt's Binance fixture: the seven USDT-M perpetuals).
BUNDLED_MARKETS = Path(__file__).resolve().parents[1] / "markets" / "data" / "binance_usdm_swaps.json"


class PrecisionError(ValueError):
    """ccxt refused to round: the value is below the market's smallest amount step or price tick."""


def get_exchange(markets_file: Path | None = None) -> Any:
    """The cached ccxt Binance USDⓈ-M client on `markets_file` (default the bundled markets;
    DECIMAL_PLACES; no network)."""
    return _exchange(markets_file or BUNDLED_MARKETS)  # cached per path as given: no file-system lookup per call


@lru_cache(maxsize=8)
def _exchange(path: Path) -> Any:
    markets = json.loads(path.read_text(encoding="utf-8"))
    client = ccxt.binanceusdm({"precisionMode": ccxt.DECIMAL_PLACES})
    client.set_markets(list(markets.values()))
    return client


def resolve_symbol(symbol: str, markets_file: Path | None = None) -> str:
    """The ccxt unified symbol for a Binance id (``BTCUSDT``) or a unified symbol (``BTC/USDT:USDT``)."""
    client = get_exchange(markets_file)
    found = find_symbol(symbol, client.markets)
    if found is not None:
        return found
    known = ", ".join(sorted(client.markets))
    raise UnknownSymbolError(f"unknown symbol {symbol!r}; known: {known} (or their Binance ids)")


def _check(name: str, value: float | Decimal) -> None:
    if not isinstance(value, (int, float, Decimal)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a float or a Decimal, got {type(value).__name__}")
    finite = value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)
    if not finite or not value > 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")


@lru_cache(maxsize=16384)  # pure: the same price or amount recurs (plans at one mark, every fill at a tick)
def _round(kind: str, symbol: str, value: float | Decimal, markets_file: Path | None) -> Decimal:
    _check(kind, value)
    unified = resolve_symbol(symbol, markets_file)
    client = get_exchange(markets_file)
    number = format(value, "f") if isinstance(value, Decimal) else value
    # ccxt's decimal_to_precision changes the thread's decimal context (traps, rounding): keep it local.
    with decimal.localcontext():
        try:
            if kind == "amount":
                text = client.amount_to_precision(unified, number)
            else:
                text = client.price_to_precision(unified, number)
        except ccxt.InvalidOrder as exc:
            raise PrecisionError(f"{kind} {value} of {unified}: {exc}") from exc
    return Decimal(text)


def amount_to_precision(symbol: str, amount: float | Decimal, markets_file: Path | None = None) -> Decimal:
    """``amount`` (contracts) truncated to the market's amount step by ccxt: BTC 0.0123456 → 0.012.

    PrecisionError when it truncates to zero (below one step); UnknownSymbolError for an unknown symbol.
    """
    return _round("amount", symbol, amount, markets_file)


def price_to_precision(symbol: str, price: float | Decimal, markets_file: Path | None = None) -> Decimal:
    """``price`` rounded (half up) to the market's tick by ccxt: BTC 43210.94 → 43210.9.

    PrecisionError when it rounds to zero (below half a tick); UnknownSymbolError for an unknown symbol.
    """
    return _round("price", symbol, price, markets_file)
