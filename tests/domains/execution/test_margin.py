"""Exchange math: liquidation price, leverage tiers, funding and realized PnL against worked examples.

Every expected value is computed by hand in the comment above it; Decimal cases compare exactly.
"""

import json
import math
from decimal import Decimal as D
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from app.domains.execution.margin import (
    BUNDLED_LEVERAGE_TIERS,
    LeverageTier,
    UnknownSymbolError,
    funding_fee,
    leverage_tier,
    liquidation_price,
    load_leverage_tiers,
    realized_pnl,
)

MARKETS_FILE = Path(__file__).parents[3] / "app" / "domains" / "markets" / "data" / "binance_usdm_swaps.json"
SHARED_TIERS = Path("/work/shared/data/market/binance_leverage_tiers.json")

# --- liquidation price --------------------------------------------------------------------------------


def test_binance_published_example_isolated_long() -> None:
    # Binance's example: isolated, 3683.979 ETH long at 1456.84, wallet 1,535,443.01, MMR 10 %, cum 135,365.
    # 3683.979 × 1456.84 = 5,366,967.96636
    # LP = (1,535,443.01 + 135,365 − 5,366,967.96636) / (3683.979 × 0.1 − 3683.979)
    #    = −3,696,159.95636 / −3315.5811 = 1114.7849… → 1114.78
    kwargs: dict[str, Any] = {
        "side": "LONG",
        "open_price": D("1456.84"),
        "amount": D("3683.979"),
        "wallet_balance": D("1535443.01"),
        "mm_ratio": D("0.1"),
        "maintenance_amount": D("135365"),
    }
    lp = liquidation_price(**kwargs)
    assert isinstance(lp, D)
    assert lp.quantize(D("0.01")) == D("1114.78")
    assert lp == D("-3696159.95636") / D("-3315.5811")
    float_kwargs: dict[str, Any] = {k: float(v) if isinstance(v, D) else v for k, v in kwargs.items()}
    as_float = liquidation_price(**float_kwargs)
    assert isinstance(as_float, float)
    assert round(as_float, 2) == 1114.78


def test_isolated_long_by_hand() -> None:
    # 1 BTC long at 50,000 with 5,000 margin (10x), MMR 0.004, cum 0:
    # LP = (5000 + 0 − 1·1·50000) / (1·0.004 − 1) = −45000 / −0.996 = 45180.7228915…
    lp = liquidation_price(
        side="LONG",
        open_price=D(50000),
        amount=D(1),
        wallet_balance=D(5000),
        mm_ratio=D("0.004"),
        maintenance_amount=D(0),
    )
    assert lp == D(45000) / D("0.996")
    assert lp is not None and lp.quantize(D("0.01")) == D("45180.72")


def test_isolated_short_mirror_by_hand() -> None:
    # The same position short: LP = (5000 + 0 + 1·50000) / (0.004 + 1) = 55000 / 1.004 = 54780.8764940…
    lp = liquidation_price(
        side="SHORT",
        open_price=D(50000),
        amount=D(1),
        wallet_balance=D(5000),
        mm_ratio=D("0.004"),
        maintenance_amount=D(0),
    )
    assert lp == D(55000) / D("1.004")
    assert lp is not None and lp.quantize(D("0.01")) == D("54780.88")
    # a short is liquidated above its entry, a long below
    assert lp > 50000


def test_short_with_maintenance_amount_by_hand() -> None:
    # 10 ETH short at 2000, margin 2000, MMR 0.01, cum 100 (a higher tier):
    # LP = (2000 + 100 + 10·2000) / (10·0.01 + 10) = 22100 / 10.1 = 2188.1188…
    lp = liquidation_price(
        side="SHORT", open_price=2000.0, amount=10.0, wallet_balance=2000.0, mm_ratio=0.01, maintenance_amount=100.0
    )
    assert lp is not None and lp == pytest.approx(22100 / 10.1, rel=1e-12)
    assert round(lp, 2) == 2188.12


OTHER_ETH_SHORT = {
    # upnl = −1·10·(2100 − 2000) = −1000; maintenance = 10·2100·0.005 − 10 = 95; term = −1095
    "side": "SHORT",
    "amount": D(10),
    "open_price": D(2000),
    "mark_price": D(2100),
    "mm_ratio": D("0.005"),
    "maintenance_amount": D(10),
}
OTHER_XRP_LONG = {
    # upnl = +1·1000·(0.6 − 0.5) = 100; maintenance = 1000·0.6·0.01 − 0 = 6; term = +94
    "side": "LONG",
    "amount": D(1000),
    "open_price": D("0.5"),
    "mark_price": D("0.6"),
    "mm_ratio": D("0.01"),
    "maintenance_amount": D(0),
}
BTC_LONG: dict[str, Any] = {
    "side": "LONG",
    "open_price": D(50000),
    "amount": D(1),
    "wallet_balance": D(10000),
    "mm_ratio": D("0.004"),
    "maintenance_amount": D(0),
}


def test_cross_with_one_other_position_by_hand() -> None:
    # 1 BTC long at 50,000, cross wallet 10,000, MMR 0.004, cum 0, plus the ETH short above (term −1095):
    # LP = (10000 − 1095 + 0 − 50000) / (0.004 − 1) = −41095 / −0.996 = 41260.0401606…
    lp = liquidation_price(**BTC_LONG, margin_mode="cross", other_positions=[OTHER_ETH_SHORT])
    assert lp == D(41095) / D("0.996")
    assert lp is not None and lp.quantize(D("0.01")) == D("41260.04")


def test_cross_with_two_other_positions_by_hand() -> None:
    # terms −1095 + 94 = −1001: LP = (10000 − 1001 − 50000) / −0.996 = 41001 / 0.996 = 41165.6626…
    lp = liquidation_price(**BTC_LONG, margin_mode="cross", other_positions=[OTHER_ETH_SHORT, OTHER_XRP_LONG])
    assert lp == D(41001) / D("0.996")


def test_cross_without_other_positions_equals_isolated_and_isolated_ignores_them() -> None:
    # (10000 − 50000) / −0.996 = 40160.6425702…
    isolated = liquidation_price(**BTC_LONG, other_positions=[OTHER_ETH_SHORT])
    assert isolated == D(40000) / D("0.996")
    assert liquidation_price(**BTC_LONG, margin_mode="cross") == isolated


def test_cross_other_positions_take_the_kind_of_the_call() -> None:
    # float call, Decimal other position: computed in float, float out (same value as by hand)
    floats: dict[str, Any] = {k: float(v) if isinstance(v, D) else v for k, v in BTC_LONG.items()}
    lp = liquidation_price(**floats, margin_mode="cross", other_positions=[OTHER_ETH_SHORT])
    assert isinstance(lp, float)
    assert lp == pytest.approx(41095 / 0.996, rel=1e-12)


@pytest.mark.parametrize(
    ("wallet_balance", "mm_ratio"),
    [
        # numerator 50000 + 0 − 50000 = 0 → LP 0: a 1x long cannot be liquidated
        (D(50000), D("0.004")),
        # numerator 60000 − 50000 > 0 over a negative denominator → LP < 0
        (D(60000), D("0.004")),
        # MMR 1 on a long: denominator 1·1 − 1 = 0
        (D(5000), D(1)),
    ],
)
def test_no_liquidation_is_none(wallet_balance: D, mm_ratio: D) -> None:
    assert (
        liquidation_price(
            side="LONG",
            open_price=D(50000),
            amount=D(1),
            wallet_balance=wallet_balance,
            mm_ratio=mm_ratio,
            maintenance_amount=D(0),
        )
        is None
    )


def test_cross_short_whose_other_positions_eat_the_wallet_is_none() -> None:
    # short 1 BTC at 50,000, wallet 100; other: long 100 ETH at 2000 marked at 100, MMR 0.005, cum 0:
    # upnl 100·(100 − 2000) = −190,000; maintenance 100·100·0.005 = 50; term −190,050
    # numerator 100 − 190,050 + 0 + 50,000 = −139,950 over 1.004 → LP < 0 → None
    other = {**OTHER_ETH_SHORT, "side": "LONG", "amount": D(100), "mark_price": D(100), "maintenance_amount": D(0)}
    lp = liquidation_price(
        side="SHORT",
        open_price=D(50000),
        amount=D(1),
        wallet_balance=D(100),
        mm_ratio=D("0.004"),
        maintenance_amount=D(0),
        margin_mode="cross",
        other_positions=[other],
    )
    assert lp is None


def test_kinds_in_and_out() -> None:
    floats = liquidation_price(
        side="LONG", open_price=50000.0, amount=1.0, wallet_balance=5000.0, mm_ratio=0.004, maintenance_amount=0.0
    )
    assert type(floats) is float
    ints = liquidation_price(
        side="LONG", open_price=50000, amount=1, wallet_balance=5000, mm_ratio=0, maintenance_amount=0
    )
    assert type(ints) is float and ints == 45000.0  # (5000 − 50000) / (0 − 1)
    mixed = liquidation_price(
        side="LONG", open_price=50000.0, amount=1.0, wallet_balance=5000.0, mm_ratio=D("0.004"), maintenance_amount=0.0
    )
    assert type(mixed) is D and mixed == D(45000) / D("0.996")


@pytest.mark.parametrize(
    ("change", "argument"),
    [
        ({"side": "long"}, "side"),
        ({"side": "BUY"}, "side"),
        ({"amount": D(0)}, "amount"),
        ({"amount": D(-1)}, "amount"),
        ({"open_price": D(0)}, "open_price"),
        ({"open_price": D("NaN")}, "open_price"),
        ({"open_price": math.inf}, "open_price"),
        ({"wallet_balance": math.nan}, "wallet_balance"),
        ({"wallet_balance": D(-1)}, "wallet_balance"),
        ({"mm_ratio": D("1.5")}, "mm_ratio"),
        ({"maintenance_amount": D("-0.1")}, "maintenance_amount"),
        ({"margin_mode": "portfolio"}, "margin_mode"),
    ],
)
def test_invalid_inputs_name_the_argument(change: dict[str, Any], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        liquidation_price(**{**BTC_LONG, **change})


@pytest.mark.parametrize(
    ("change", "argument"),
    [
        ({"side": "short"}, r"other_positions\[0\]\.side"),
        ({"amount": D(0)}, r"other_positions\[0\]\.amount"),
        ({"mark_price": math.nan}, r"other_positions\[0\]\.mark_price"),
        ({"mark_price": D(-5)}, r"other_positions\[0\]\.mark_price"),
    ],
)
def test_invalid_other_positions_name_the_field(change: dict[str, Any], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        liquidation_price(**BTC_LONG, margin_mode="cross", other_positions=[{**OTHER_ETH_SHORT, **change}])


def test_other_position_missing_a_key() -> None:
    incomplete = {k: v for k, v in OTHER_ETH_SHORT.items() if k != "mark_price"}
    with pytest.raises(ValueError, match=r"other_positions\[0\] lacks mark_price"):
        liquidation_price(**BTC_LONG, margin_mode="cross", other_positions=[incomplete])


def test_not_a_number_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="amount"):
        liquidation_price(**{**BTC_LONG, "amount": "1"})
    with pytest.raises(TypeError, match="amount"):
        liquidation_price(**{**BTC_LONG, "amount": True})


def test_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        liquidation_price("LONG", D(50000), D(1), D(5000), D("0.004"), D(0))  # type: ignore[call-overload]


# --- leverage tiers --------------------------------------------------------------------------------

TIER_1 = LeverageTier(
    symbol="BTC/USDT:USDT",
    tier=1,
    min_notional=D(0),
    max_notional=D(50000),
    mm_ratio=D("0.004"),
    maintenance_amount=D(0),
    max_leverage=D(125),
)
TIER_2 = LeverageTier(
    symbol="BTC/USDT:USDT",
    tier=2,
    min_notional=D(50000),
    max_notional=D(600000),
    mm_ratio=D("0.005"),
    maintenance_amount=D(50),
    max_leverage=D(100),
)


@pytest.mark.parametrize("symbol", ["BTC/USDT:USDT", "BTCUSDT", "btcusdt", " BTC/USDT:USDT "])
@pytest.mark.parametrize(
    ("notional", "expected"),
    [
        (0, TIER_1),
        (10000.0, TIER_1),
        (D("49999.99"), TIER_1),
        # the boundary belongs to the tier whose [min, max) contains it: tier 2
        (50000.0, TIER_2),
        (D(50000), TIER_2),
        (D("599999.99"), TIER_2),
    ],
)
def test_btc_tiers_1_and_2(symbol: str, notional: float | D, expected: LeverageTier) -> None:
    assert leverage_tier(symbol=symbol, notional=notional) == expected


def test_tier_above_two_and_last() -> None:
    # BTC tier 3: 600,000–3,000,000, MMR 0.0065, cum 950, 75x (from the data file)
    tier = leverage_tier(symbol="BTCUSDT", notional=600000)
    assert (tier.tier, tier.mm_ratio, tier.maintenance_amount, tier.max_leverage) == (3, D("0.0065"), D(950), D(75))
    last = leverage_tier(symbol="BTCUSDT", notional=D("1799999999"))
    assert (last.tier, last.max_leverage, last.mm_ratio) == (12, D(1), D("0.5"))


def test_notional_beyond_the_last_tier() -> None:
    with pytest.raises(ValueError, match="beyond the last leverage tier"):
        leverage_tier(symbol="BTCUSDT", notional=1_800_000_000)


@pytest.mark.parametrize("notional", [-1, math.nan, D("Infinity")])
def test_invalid_notional(notional: float | D) -> None:
    with pytest.raises(ValueError, match="notional"):
        leverage_tier(symbol="BTCUSDT", notional=notional)


@pytest.mark.parametrize("symbol", ["SOLUSDT", "SOL/USDT:USDT", "BTC/USDT", "BTCUSD", ""])
def test_unknown_symbol(symbol: str) -> None:
    with pytest.raises(UnknownSymbolError, match="no leverage tiers") as info:
        leverage_tier(symbol=symbol, notional=1000)
    assert isinstance(info.value, KeyError)
    assert str(info.value).startswith("no leverage tiers for symbol")  # the message, not KeyError's repr


def test_the_bundled_tiers_are_the_seven_markets_rows_of_binances_table() -> None:
    bundled = json.loads(BUNDLED_LEVERAGE_TIERS.read_text())
    markets = json.loads(MARKETS_FILE.read_text())
    assert sorted(bundled) == sorted(markets)
    assert sorted(load_leverage_tiers()) == sorted(markets)
    if not SHARED_TIERS.exists():
        pytest.skip(f"{SHARED_TIERS} is not on this machine")
    source = json.loads(SHARED_TIERS.read_text())
    assert {symbol: source[symbol] for symbol in bundled} == bundled


@pytest.mark.parametrize("symbol", ["ADA", "BTC", "DOGE", "ETH", "LTC", "TRX", "XRP"])
def test_tiers_are_contiguous_and_maintenance_margin_is_continuous(symbol: str) -> None:
    # Binance's cum makes the maintenance margin (notional·MMR − cum) continuous at every boundary:
    # cum_n = cum_{n−1} + floor_n·(MMR_n − MMR_{n−1}), e.g. BTC tier 2: 0 + 50,000·(0.005 − 0.004) = 50.
    tiers = load_leverage_tiers()[f"{symbol}/USDT:USDT"]
    assert tiers[0].min_notional == 0
    assert [t.tier for t in tiers] == list(range(1, len(tiers) + 1))
    for lower, upper in pairwise(tiers):
        assert lower.max_notional == upper.min_notional
        at = upper.min_notional
        assert at * lower.mm_ratio - lower.maintenance_amount == at * upper.mm_ratio - upper.maintenance_amount
        assert upper.max_leverage <= lower.max_leverage


def test_tiers_from_a_configured_path(tmp_path: Path) -> None:
    rows = [
        {
            "tier": 1.0,
            "currency": "USDT",
            "minNotional": 0.0,
            "maxNotional": 1000.0,
            "maintenanceMarginRate": 0.02,
            "maxLeverage": 20.0,
            "info": {"cum": "0.0"},
        },
        {
            "tier": 2.0,
            "currency": "USDT",
            "minNotional": 1000.0,
            "maxNotional": 5000.0,
            "maintenanceMarginRate": 0.05,
            "maxLeverage": 10.0,
            "info": {"cum": "30.0"},
        },
    ]
    path = tmp_path / "tiers.json"
    path.write_text(json.dumps({"SOL/USDT:USDT": rows}))
    tier = leverage_tier(symbol="SOLUSDT", notional=1000, path=path)
    assert (tier.tier, tier.mm_ratio, tier.maintenance_amount, tier.max_leverage) == (2, D("0.05"), D(30), D(10))
    assert load_leverage_tiers(path) is load_leverage_tiers(str(path))  # cached per file
    with pytest.raises(UnknownSymbolError):
        leverage_tier(symbol="BTCUSDT", notional=1000, path=path)


def test_a_tier_file_with_a_gap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gap.json"
    rows: list[dict[str, Any]] = [
        {"tier": 1, "minNotional": 0, "maxNotional": 1000, "maintenanceMarginRate": 0.02, "maxLeverage": 20},
        {"tier": 2, "minNotional": 2000, "maxNotional": 5000, "maintenanceMarginRate": 0.05, "maxLeverage": 10},
    ]
    for row in rows:
        row["info"] = {"cum": "0"}
    path.write_text(json.dumps({"X/USDT:USDT": rows}))
    with pytest.raises(ValueError, match="not contiguous"):
        load_leverage_tiers(path)


def test_leverage_tier_is_frozen() -> None:
    with pytest.raises(AttributeError):
        TIER_1.mm_ratio = D("0.1")  # type: ignore[misc]


# --- funding -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "rate", "expected"),
    [
        # 2 BTC at mark 40,000: notional 80,000
        ("LONG", D("0.0001"), D(-8)),  # −1·2·40000·0.0001 = −8: a long pays a positive rate
        ("SHORT", D("0.0001"), D(8)),  # +8: a short receives it
        ("LONG", D("-0.0002"), D(16)),  # −1·2·40000·(−0.0002) = +16: a negative rate reverses
        ("SHORT", D("-0.0002"), D(-16)),
        ("LONG", D(0), D(0)),
    ],
)
def test_funding_signs(side: str, rate: D, expected: D) -> None:
    fee = funding_fee(side=side, amount=D(2), mark_price=D(40000), funding_rate=rate)
    assert type(fee) is D and fee == expected
    as_float = funding_fee(side=side, amount=2.0, mark_price=40000.0, funding_rate=float(rate))
    assert type(as_float) is float and as_float == pytest.approx(float(expected))


def test_funding_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="side"):
        funding_fee(side="Long", amount=1.0, mark_price=1.0, funding_rate=0.0001)
    with pytest.raises(ValueError, match="mark_price"):
        funding_fee(side="LONG", amount=1.0, mark_price=0.0, funding_rate=0.0001)
    with pytest.raises(ValueError, match="funding_rate"):
        funding_fee(side="LONG", amount=1.0, mark_price=1.0, funding_rate=math.inf)


# --- realized PnL --------------------------------------------------------------------------------------


def test_realized_pnl_long_by_hand() -> None:
    # 2 BTC long 40,000 → 42,000; taker 0.04 % in, maker 0.02 % out; paid 8 funding:
    # gross 2·2000 = 4000; fees 2·40000·0.0004 = 32 and 2·42000·0.0002 = 16.8; 4000 − 32 − 16.8 − 8 = 3943.2
    pnl = realized_pnl(
        side="LONG",
        amount=D(2),
        open_price=D(40000),
        close_price=D(42000),
        fee_rate_open=D("0.0004"),
        fee_rate_close=D("0.0002"),
        funding_fees=D(-8),
    )
    assert type(pnl) is D and pnl == D("3943.2")


def test_realized_pnl_short_by_hand() -> None:
    # 10 ETH short 2000 → 1900, taker both ways, received 3.5 funding:
    # gross −1·10·(1900 − 2000) = 1000; fees 10·2000·0.0004 = 8 and 10·1900·0.0004 = 7.6; 1000 − 15.6 + 3.5 = 987.9
    won = realized_pnl(
        side="SHORT",
        amount=10.0,
        open_price=2000.0,
        close_price=1900.0,
        fee_rate_open=0.0004,
        fee_rate_close=0.0004,
        funding_fees=3.5,
    )
    assert type(won) is float and won == pytest.approx(987.9, abs=1e-9)
    # the short closed at 2100 instead: gross −1000; fees 8 + 8.4; no funding → −1016.4
    lost = realized_pnl(
        side="SHORT",
        amount=D(10),
        open_price=D(2000),
        close_price=D(2100),
        fee_rate_open=D("0.0004"),
        fee_rate_close=D("0.0004"),
    )
    assert lost == D("-1016.4")


def test_realized_pnl_with_a_maker_rebate_and_mixed_kinds() -> None:
    # 1 BTC long 50,000 → 50,000 (flat), maker rebate −0.01 % in, taker 0.04 % out:
    # 0 − 1·50000·(−0.0001) − 1·50000·0.0004 = 5 − 20 = −15; one Decimal makes it Decimal
    pnl = realized_pnl(
        side="LONG",
        amount=1.0,
        open_price=50000.0,
        close_price=50000.0,
        fee_rate_open=D("-0.0001"),
        fee_rate_close=0.0004,
    )
    assert type(pnl) is D and pnl == D(-15)


def test_realized_pnl_invalid_inputs() -> None:
    base: dict[str, Any] = {
        "side": "LONG",
        "amount": 1.0,
        "open_price": 1.0,
        "close_price": 1.0,
        "fee_rate_open": 0.0,
        "fee_rate_close": 0.0,
    }
    for name, bad in [("close_price", 0.0), ("amount", -1.0), ("funding_fees", math.nan), ("fee_rate_open", math.inf)]:
        with pytest.raises(ValueError, match=name):
            realized_pnl(**{**base, name: bad})
