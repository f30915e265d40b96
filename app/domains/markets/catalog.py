"""Tradable markets and their exchange rules, read from ccxt market metadata (offline).

The bundled file is a slice of ccxt's Binance market fixture: the USDT-margined linear
perpetual swaps. Its precision is in decimal places (ccxt's DECIMAL_PLACES mode). Amounts and
prices are rounded by ccxt itself (`app.domains.execution.precision`), never re-implemented here.
"""

import json
from dataclasses import dataclass
from decimal import Decimal, DecimalException
from pathlib import Path

from app.core.symbols import find_symbol
from app.domains.execution.precision import PrecisionError, amount_to_precision, price_to_precision

BUNDLED = Path(__file__).parent / "data" / "binance_usdm_swaps.json"


class UnknownSymbol(ValueError):
    pass


class BelowExchangeMinimum(ValueError):
    pass


class OutOfRange(ValueError):
    """An order whose quantity cannot be computed exactly (Decimal overflow or too many digits)."""


@dataclass(frozen=True, slots=True)
class Market:
    symbol: str  # ccxt unified, e.g. BTC/USDT:USDT (the canonical form we store)
    exchange_id: str  # Binance id, e.g. BTCUSDT
    amount_step: Decimal
    price_tick: Decimal
    min_amount: Decimal
    min_cost: Decimal
    taker_fee: Decimal
    maker_fee: Decimal

    markets_file: Path | None = None  # the ccxt markets file it came from (None: the bundled one)

    def quantity_for(self, notional: Decimal, price: Decimal) -> Decimal:
        """Contracts for `notional` at `price`, truncated to the amount step by ccxt (as the exchange does)."""
        if self.round_price(price) <= 0:
            raise BelowExchangeMinimum(f"price {price} is below the price tick {self.price_tick} of {self.symbol}")
        try:
            raw = notional / price
            if raw.adjusted() >= 20:  # more than the 20 integer digits a stored quantity holds
                raise DecimalException(f"quantity {raw:.3E}")
        except DecimalException as exc:
            raise OutOfRange(
                f"notional {notional} at price {price} gives a quantity out of range for {self.symbol}"
            ) from exc
        try:
            quantity = amount_to_precision(self.symbol, raw, self.markets_file)
        except PrecisionError:  # below one amount step: ccxt truncates to nothing
            quantity = Decimal(0).quantize(self.amount_step)
        except (DecimalException, ValueError) as exc:
            raise OutOfRange(
                f"notional {notional} at price {price} gives a quantity out of range for {self.symbol}"
            ) from exc
        if quantity < self.min_amount:
            raise BelowExchangeMinimum(
                f"notional {notional} at price {price} gives quantity {quantity} "
                f"< minimum {self.min_amount} for {self.symbol}"
            )
        if quantity * price < self.min_cost:
            raise BelowExchangeMinimum(
                f"order value {quantity * price} < minimum notional {self.min_cost} USDT for {self.symbol}"
            )
        return quantity

    def round_price(self, price: Decimal) -> Decimal:
        """`price` rounded to the tick by ccxt (half up); 0 when below half a tick."""
        try:
            return price_to_precision(self.symbol, price, self.markets_file)
        except PrecisionError:
            return Decimal(0)


def _step(decimal_places: float) -> Decimal:
    return Decimal(1).scaleb(-int(decimal_places))


class MarketCatalog:
    def __init__(self, markets: list[Market]) -> None:
        self._by_symbol = {m.symbol: m for m in markets}
        self._by_id = {m.exchange_id: m for m in markets}

    @classmethod
    def load(cls, path: str | Path | None = None) -> "MarketCatalog":
        raw = json.loads(Path(path or BUNDLED).read_text())
        markets = [
            Market(
                symbol=m["symbol"],
                exchange_id=m["id"],
                amount_step=_step(m["precision"]["amount"]),
                price_tick=_step(m["precision"]["price"]),
                min_amount=Decimal(str(m["limits"]["amount"]["min"])),
                min_cost=Decimal(str((m["limits"].get("cost") or {}).get("min") or 0)),
                taker_fee=Decimal(str(m["taker"])),
                maker_fee=Decimal(str(m["maker"])),
                markets_file=Path(path) if path else None,
            )
            for m in raw.values()
            if m.get("swap") and m.get("linear") and m.get("precision", {}).get("amount") is not None
        ]
        return cls(markets)

    def resolve(self, symbol: str) -> Market:
        """Accept a Binance id (`BTCUSDT`) or a ccxt unified symbol (`BTC/USDT:USDT`)."""
        found = find_symbol(symbol, self._by_symbol)
        market = self._by_symbol.get(found) if found is not None else None
        if market is None:
            known = ", ".join(sorted(self._by_id))
            raise UnknownSymbol(f"unknown symbol {symbol!r}; tradable: {known} (or their ccxt unified form)")
        return market

    def symbols(self) -> list[str]:
        return sorted(self._by_symbol)
