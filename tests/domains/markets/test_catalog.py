"""MarketCatalog: symbol resolution, and amount/price precision checked against ccxt (offline)."""

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import pytest

from app.domains.markets.catalog import BUNDLED, BelowExchangeMinimum, Market, MarketCatalog, UnknownSymbol

CATALOG = MarketCatalog.load()
RAW: dict[str, dict[str, Any]] = json.loads(Path(BUNDLED).read_text())

SYMBOLS = [
    "ADA/USDT:USDT",
    "BTC/USDT:USDT",
    "DOGE/USDT:USDT",
    "ETH/USDT:USDT",
    "LTC/USDT:USDT",
    "TRX/USDT:USDT",
    "XRP/USDT:USDT",
]
# A plausible price per market (within the market's price limits).
PRICES = {
    "ADA/USDT:USDT": Decimal("0.4567"),
    "BTC/USDT:USDT": Decimal("43210.9"),
    "DOGE/USDT:USDT": Decimal("0.08123"),
    "ETH/USDT:USDT": Decimal("2345.67"),
    "LTC/USDT:USDT": Decimal("71.23"),
    "TRX/USDT:USDT": Decimal("0.10234"),
    "XRP/USDT:USDT": Decimal("0.5123"),
}
NOTIONALS = [Decimal("150"), Decimal("1234.5678"), Decimal("98765.4321")]
PRICE_FACTORS = [Decimal(1), Decimal("1.0000123"), Decimal("0.987654321"), Decimal("3.3333333")]


@pytest.fixture(scope="module")
def exchange() -> ccxt.Exchange:
    """ccxt's Binance USD-M client on the bundled market data: no load_markets, no network."""
    ex = ccxt.binanceusdm({"precisionMode": ccxt.DECIMAL_PLACES})
    ex.set_markets(list(RAW.values()))
    return ex


# --- loading and resolving ----------------------------------------------------------------


def test_the_bundled_markets_are_the_seven_usdt_perpetuals() -> None:
    assert CATALOG.symbols() == SYMBOLS


def test_market_rules_are_read_from_the_metadata() -> None:
    assert CATALOG.resolve("BTC/USDT:USDT") == Market(
        symbol="BTC/USDT:USDT",
        exchange_id="BTCUSDT",
        amount_step=Decimal("0.001"),
        price_tick=Decimal("0.1"),
        min_amount=Decimal("0.001"),
        min_cost=Decimal(5),
        taker_fee=Decimal("0.0004"),
        maker_fee=Decimal("0.0002"),
    )
    doge = CATALOG.resolve("DOGE/USDT:USDT")
    assert (doge.amount_step, doge.price_tick, doge.min_amount) == (Decimal(1), Decimal("0.00001"), Decimal(1))


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_every_market_matches_its_raw_metadata(symbol: str) -> None:
    raw = RAW[symbol]
    market = CATALOG.resolve(symbol)

    assert market.exchange_id == raw["id"]
    assert market.amount_step == Decimal(10) ** -raw["precision"]["amount"]
    assert market.price_tick == Decimal(10) ** -raw["precision"]["price"]
    assert market.min_amount == Decimal(str(raw["limits"]["amount"]["min"]))
    assert market.min_cost == Decimal(5)


@pytest.mark.parametrize("spelling", ["BTCUSDT", "btcusdt", "BTC/USDT:USDT", "  BTCUSDT  ", "BtcUsdt"])
def test_resolve_accepts_the_exchange_id_and_the_unified_symbol(spelling: str) -> None:
    assert CATALOG.resolve(spelling).symbol == "BTC/USDT:USDT"


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_every_exchange_id_resolves_to_its_unified_symbol(symbol: str) -> None:
    exchange_id = RAW[symbol]["id"]

    assert CATALOG.resolve(exchange_id).symbol == symbol
    assert CATALOG.resolve(exchange_id.lower()).symbol == symbol
    assert CATALOG.resolve(symbol) is CATALOG.resolve(exchange_id)


@pytest.mark.parametrize("symbol", ["FOOUSDT", "", "BTC/USDT", "BTCUSD", "BTC-USDT", "SOLUSDT"])
def test_unknown_symbols_are_rejected(symbol: str) -> None:
    with pytest.raises(UnknownSymbol, match="unknown symbol") as raised:
        CATALOG.resolve(symbol)
    assert "BTCUSDT" in str(raised.value)  # the message lists what is tradable
    assert isinstance(raised.value, ValueError)


def test_load_skips_markets_that_are_not_linear_swaps(tmp_path: Path) -> None:
    spot = {**RAW["BTC/USDT:USDT"], "symbol": "BTC/USDT", "id": "BTCUSDT_SPOT", "swap": False, "spot": True}
    inverse = {**RAW["ETH/USDT:USDT"], "symbol": "ETH/USD:ETH", "id": "ETHUSD_PERP", "linear": False}
    path = tmp_path / "markets.json"
    path.write_text(json.dumps({**RAW, "BTC/USDT": spot, "ETH/USD:ETH": inverse}))

    assert MarketCatalog.load(path).symbols() == SYMBOLS


# --- quantity ------------------------------------------------------------------------------

KNOWN_QUANTITIES = [
    # symbol, notional, price, quantity
    ("BTC/USDT:USDT", Decimal("123.456"), Decimal(10_000), Decimal("0.012")),  # 0.0123456
    ("ETH/USDT:USDT", Decimal("2469.12"), Decimal(2000), Decimal("1.234")),  # 1.23456
    ("DOGE/USDT:USDT", Decimal("123.456"), Decimal("0.1"), Decimal(1234)),  # 1234.56
]


@pytest.mark.parametrize(("symbol", "notional", "price", "quantity"), KNOWN_QUANTITIES)
def test_known_quantities(
    exchange: ccxt.Exchange, symbol: str, notional: Decimal, price: Decimal, quantity: Decimal
) -> None:
    ours = CATALOG.resolve(symbol).quantity_for(notional, price)

    assert ours == quantity
    assert ours.as_tuple().exponent == quantity.as_tuple().exponent
    assert Decimal(exchange.amount_to_precision(symbol, float(notional / price))) == quantity


@pytest.mark.parametrize("symbol", SYMBOLS)
@pytest.mark.parametrize("notional", NOTIONALS, ids=str)
@pytest.mark.parametrize("factor", PRICE_FACTORS, ids=str)
def test_quantity_is_truncated_like_ccxt(
    exchange: ccxt.Exchange, symbol: str, notional: Decimal, factor: Decimal
) -> None:
    market = CATALOG.resolve(symbol)
    price = market.round_price(PRICES[symbol] * factor)

    ours = market.quantity_for(notional, price)

    assert ours == Decimal(exchange.amount_to_precision(symbol, float(notional / price)))
    assert ours <= notional / price < ours + market.amount_step  # truncated, never rounded up
    assert ours == ours.quantize(market.amount_step)


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_quantity_exactly_on_a_step_is_kept(exchange: ccxt.Exchange, symbol: str) -> None:
    market = CATALOG.resolve(symbol)
    price = PRICES[symbol]
    steps = (Decimal(10) / (price * market.amount_step)).to_integral_value() + 1  # > 10 USDT
    quantity = steps * market.amount_step

    assert market.quantity_for(quantity * price, price) == quantity
    assert Decimal(exchange.amount_to_precision(symbol, float(quantity))) == quantity


# --- exchange minimums ---------------------------------------------------------------------


def test_below_minimum_amount_is_rejected() -> None:
    btc = CATALOG.resolve("BTCUSDT")

    with pytest.raises(BelowExchangeMinimum, match=r"gives quantity 0\.000 < minimum 0\.001 for BTC/USDT:USDT"):
        btc.quantity_for(Decimal(40), Decimal("43210.9"))  # 0.000925 contracts


MIN_COST_CASES = [
    # symbol, price: the minimum amount at this price is worth exactly 5 USDT
    ("BTC/USDT:USDT", Decimal(5000)),  # 0.001 BTC
    ("XRP/USDT:USDT", Decimal(50)),  # 0.1 XRP
    ("ADA/USDT:USDT", Decimal(5)),  # 1 ADA
]


@pytest.mark.parametrize(("symbol", "price"), MIN_COST_CASES)
def test_order_worth_exactly_the_minimum_notional_passes(symbol: str, price: Decimal) -> None:
    market = CATALOG.resolve(symbol)

    assert market.quantity_for(Decimal(5), price) == market.min_amount


@pytest.mark.parametrize(("symbol", "price"), MIN_COST_CASES)
def test_order_worth_less_than_the_minimum_notional_is_rejected(symbol: str, price: Decimal) -> None:
    market = CATALOG.resolve(symbol)
    cheaper = price - market.price_tick

    with pytest.raises(BelowExchangeMinimum, match=f"< minimum notional 5 USDT for {symbol}"):
        market.quantity_for(Decimal(5), cheaper)


def test_truncation_can_push_an_order_below_the_minimum_notional() -> None:
    ada = CATALOG.resolve("ADAUSDT")

    assert ada.quantity_for(Decimal(5), Decimal("0.5")) == Decimal(10)
    with pytest.raises(BelowExchangeMinimum, match=r"order value 4\.8 < minimum notional 5 USDT"):
        ada.quantity_for(Decimal(5), Decimal("0.3"))  # 16.67 ADA truncated to 16: 4.80 USDT


# --- price ---------------------------------------------------------------------------------

KNOWN_PRICES = [
    ("BTC/USDT:USDT", "43210.94", "43210.9"),
    ("ETH/USDT:USDT", "2345.6789", "2345.68"),
    ("DOGE/USDT:USDT", "0.0812345", "0.08123"),
]


@pytest.mark.parametrize(("symbol", "price", "rounded"), KNOWN_PRICES)
def test_known_prices(exchange: ccxt.Exchange, symbol: str, price: str, rounded: str) -> None:
    ours = CATALOG.resolve(symbol).round_price(Decimal(price))

    assert str(ours) == rounded
    assert exchange.price_to_precision(symbol, float(price)) == rounded


def price_samples(symbol: str) -> list[Decimal]:
    """Prices around the market's level, including exact half ticks (where rounding modes differ)."""
    tick = CATALOG.resolve(symbol).price_tick
    base = PRICES[symbol]
    return [
        base,
        base + tick / 2,  # a tie: half up
        base - tick / 2,
        base + tick * Decimal("0.49"),
        base + tick * Decimal("0.51"),
        base * Decimal("1.2345678"),
        base * Decimal("0.8765432"),
        base * 10 + tick / 3,
    ]


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_price_is_rounded_like_ccxt(exchange: ccxt.Exchange, symbol: str) -> None:
    market = CATALOG.resolve(symbol)

    for price in price_samples(symbol):
        ours = market.round_price(price)
        assert ours == Decimal(exchange.price_to_precision(symbol, float(price))), price
        assert ours == ours.quantize(market.price_tick)
        assert abs(ours - price) <= market.price_tick / 2


def test_price_ties_round_half_up() -> None:
    btc = CATALOG.resolve("BTCUSDT")

    assert btc.round_price(Decimal("43210.85")) == Decimal("43210.9")
    assert btc.round_price(Decimal("43210.95")) == Decimal("43211.0")
    assert btc.round_price(Decimal("43210.8499")) == Decimal("43210.8")
