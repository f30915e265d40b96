"""Exit Brain: the default ladder by hand, volatility and governance scaling, merging, the trailing stop,
the partial-exit variant, validation, and the old system's failure (a percentage stop beyond liquidation or
below zero) as a regression test; property tests over random positions and price paths.

Worked position: BTC/USDT:USDT at 40,000 (tick 0.1, amount step and minimum 0.001), 0.1 BTC = 4,000 USDT
notional, leverage tier 1 (MMR 0.4 %, cum 0). Isolated margin = 4,000 / leverage, so the liquidation price
of a long is (4000/L - 4000) / (0.0004 - 0.1) and of a short (4000/L + 4000) / (0.0004 + 0.1).
"""

from dataclasses import replace
from decimal import Decimal as D

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.domains.execution.margin import DEFAULT_LIQUIDATION_BUFFER_PCT, leverage_tier, liquidation_price
from app.domains.execution.precision import amount_to_precision, price_to_precision
from app.domains.exits.plan import (
    ExitConfig,
    ExitContext,
    ExitLeg,
    ExitPlan,
    ExitStyle,
    LegKind,
    PlanRefused,
    TrailingStop,
    build_plan,
    validate_plan,
)
from app.domains.markets.catalog import MarketCatalog

CATALOG = MarketCatalog.load()
BTC = "BTC/USDT:USDT"
BUFFER = DEFAULT_LIQUIDATION_BUFFER_PCT / 100


def ctx(**overrides: object) -> ExitContext:
    base: dict[str, object] = {
        "side": "LONG",
        "entry_price": D("40000"),
        "amount": D("0.1"),
        "leverage": 10,
        "symbol": BTC,
    }
    base.update(overrides)
    return ExitContext(**base)  # type: ignore[arg-type]


def plan_of(context: ExitContext, config: ExitConfig | None = None) -> ExitPlan:
    plan = build_plan(context, config)
    assert isinstance(plan, ExitPlan), plan
    return plan


def prices(plan: ExitPlan) -> list[tuple[LegKind, D, D, D]]:
    return [(leg.kind, leg.trigger_price, leg.fraction, leg.quantity) for leg in plan.legs]


# --- the default ladder, by hand ------------------------------------------------------------------------------


def test_default_ladder_btc_long_by_hand() -> None:
    plan = plan_of(ctx())
    # 40000 * 1.0195 = 40780, * 1.0325 = 41300, * 1.052 = 42080; stop 40000 * 0.98 = 39200.
    assert prices(plan) == [
        (LegKind.TP, D("40780.0"), D("0.3"), D("0.03")),
        (LegKind.TP, D("41300.0"), D("0.3"), D("0.03")),
        (LegKind.TP, D("42080.0"), D("0.4"), D("0.04")),
        (LegKind.SL, D("39200.0"), D(1), D("0.1")),
    ]
    assert plan.notes == ()
    assert plan.symbol == BTC and plan.side == "LONG"
    # 10x: WB 400, LP = (400 - 4000) / (0.0004 - 0.1) = 36144.578...; the bound is 200 (0.5 % of entry) above it.
    assert plan.liquidation_price is not None and plan.stop_bound is not None
    assert abs(plan.liquidation_price - D("36144.5783")) < D("0.001")
    assert plan.stop_bound - plan.liquidation_price == D("200.000")
    assert [leg.reason for leg in plan.legs] == [
        "TP1 +1.95% for 30%",
        "TP2 +3.25% for 30%",
        "TP3 +5.2% for 40%",
        "stop -2%",
    ]
    assert plan.trailing_stop() is None


def test_default_ladder_btc_short_by_hand() -> None:
    plan = plan_of(ctx(side="SHORT"))
    assert prices(plan) == [
        (LegKind.TP, D("39220.0"), D("0.3"), D("0.03")),
        (LegKind.TP, D("38700.0"), D("0.3"), D("0.03")),
        (LegKind.TP, D("37920.0"), D("0.4"), D("0.04")),
        (LegKind.SL, D("40800.0"), D(1), D("0.1")),
    ]
    # 10x short: LP = (400 + 4000) / (0.0004 + 0.1) = 43824.70...
    assert plan.liquidation_price is not None
    assert abs(plan.liquidation_price - D("43824.7012")) < D("0.001")


def test_prices_are_rounded_to_the_tick_by_ccxt() -> None:
    plan = plan_of(ctx(entry_price=D("43210.9")))
    # 43210.9 * 1.0195 = 44053.5125 -> 44053.5; * 0.98 = 42346.682 -> 42346.7.
    assert plan.take_profits[0].trigger_price == D("44053.5")
    assert plan.stop_loss.trigger_price == D("42346.7")


def test_floats_are_accepted_and_binance_ids_resolve() -> None:
    plan = plan_of(ctx(entry_price=40000.0, amount=0.1, leverage=10.0, symbol="BTCUSDT"))
    assert plan.symbol == BTC
    assert plan.stop_loss.trigger_price == D("39200.0")


# --- dynamic distances -----------------------------------------------------------------------------------------


def test_atr_scales_take_profits_and_stop() -> None:
    # ATR 800 on 40000 = 2 %: SL 2 x 2 % = 4 %, TPs 1.95/3.25/5.2 x 2 % = 3.9/6.5/10.4 %.
    plan = plan_of(ctx(atr=D("800"), leverage=5))
    assert [leg.trigger_price for leg in plan.legs] == [D("41560.0"), D("42600.0"), D("44160.0"), D("38400.0")]
    short = plan_of(ctx(side="SHORT", atr=D("800"), leverage=5))
    assert [leg.trigger_price for leg in short.legs] == [D("38440.0"), D("37400.0"), D("35840.0"), D("41600.0")]


def test_volatility_fraction_scales_and_one_percent_gives_the_static_ladder() -> None:
    half = plan_of(ctx(volatility=0.005))
    assert [leg.trigger_price for leg in half.legs] == [D("40390.0"), D("40650.0"), D("41040.0"), D("39600.0")]
    one = plan_of(ctx(volatility=0.01))
    assert prices(one) == prices(plan_of(ctx()))


def test_atr_wins_over_volatility_and_says_so() -> None:
    plan = plan_of(ctx(atr=D("800"), volatility=0.001, leverage=5))
    assert plan.stop_loss.trigger_price == D("38400.0")
    assert any("ATR is used" in note for note in plan.notes)


def test_custom_multiples() -> None:
    config = ExitConfig(atr_tp_multiples=(1.0, 2.0, 3.0), atr_sl_multiple=1.0)
    plan = plan_of(ctx(volatility=0.01), config)
    assert [leg.trigger_price for leg in plan.legs] == [D("40400.0"), D("40800.0"), D("41200.0"), D("39600.0")]


def test_tiny_volatility_hits_the_distance_floor_and_equal_targets_merge() -> None:
    plan = plan_of(ctx(volatility=0.00001))
    # Every distance floors at 0.2 %: one target at 40080 for the whole position, stop at 39920.
    assert prices(plan) == [(LegKind.TP, D("40080.0"), D(1), D("0.1")), (LegKind.SL, D("39920.0"), D(1), D("0.1"))]
    assert sum("same price" in note for note in plan.notes) == 2


def test_governance_policy_scales_the_stop_only() -> None:
    balanced = plan_of(ctx(policy="BALANCED"))
    conservative = plan_of(ctx(policy="CONSERVATIVE"))
    aggressive = plan_of(ctx(policy="AGGRESSIVE"))
    assert balanced.stop_loss.trigger_price == D("39200.0")  # 2 %
    assert conservative.stop_loss.trigger_price == D("38800.0")  # 3 %
    assert aggressive.stop_loss.trigger_price == D("39360.0")  # 1.6 %
    assert balanced.take_profits == conservative.take_profits == aggressive.take_profits
    short = plan_of(ctx(side="SHORT", policy="CONSERVATIVE"))
    assert short.stop_loss.trigger_price == D("41200.0")
    # With volatility: 2 x 2 % x 1.5 = 6 %.
    assert plan_of(ctx(volatility=0.02, policy="CONSERVATIVE", leverage=3)).stop_loss.trigger_price == D("37600.0")


def test_governance_policy_enum_is_accepted_and_unknown_policy_refused() -> None:
    from app.domains.governance.policy import PortfolioPolicy

    assert plan_of(ctx(policy=PortfolioPolicy.AGGRESSIVE)).stop_loss.trigger_price == D("39360.0")
    refused = build_plan(ctx(policy="YOLO"))
    assert isinstance(refused, PlanRefused) and "governance policy" in refused.reason


def test_regime_scales_the_take_profits() -> None:
    from app.domains.signals.regime import Regime

    trending = plan_of(ctx(regime=Regime.TRENDING))
    # 1.95 % x 1.25 = 2.4375 % -> 40975; 3.25 x 1.25 = 4.0625 % -> 41625; 5.2 x 1.25 = 6.5 % -> 42600.
    assert [leg.trigger_price for leg in trending.take_profits] == [D("40975.0"), D("41625.0"), D("42600.0")]
    assert trending.stop_loss.trigger_price == D("39200.0")
    ranging = plan_of(ctx(regime="ranging"))
    assert [leg.trigger_price for leg in ranging.take_profits] == [D("40624.0"), D("41040.0"), D("41664.0")]
    unknown = plan_of(ctx(regime="sideways"))
    assert prices(unknown) == prices(plan_of(ctx()))
    assert any("unknown regime" in note for note in unknown.notes)


# --- merging below the minimum amount ----------------------------------------------------------------------------


def test_a_leg_below_the_minimum_merges_into_the_next() -> None:
    # 0.002 BTC: TP1 would be 0.0006 < 0.001, merged into TP2 (0.6 -> 0.0012 -> 0.001), TP3 takes the rest.
    plan = plan_of(ctx(amount=D("0.002")))
    assert prices(plan) == [
        (LegKind.TP, D("41300.0"), D("0.6"), D("0.001")),
        (LegKind.TP, D("42080.0"), D("0.4"), D("0.001")),
        (LegKind.SL, D("39200.0"), D(1), D("0.002")),
    ]
    assert len(plan.notes) == 1 and "below the minimum amount" in plan.notes[0] and "TP1" in plan.notes[0]


def test_the_minimum_position_gets_one_target() -> None:
    plan = plan_of(ctx(amount=D("0.001")))
    assert prices(plan) == [(LegKind.TP, D("42080.0"), D(1), D("0.001")), (LegKind.SL, D("39200.0"), D(1), D("0.001"))]
    assert len(plan.notes) == 2


def test_the_last_leg_below_the_minimum_merges_into_the_previous() -> None:
    # With min amount = amount step (every bundled market) the last leg, taking the remainder, is never below
    # the minimum; a market with a minimum of 5 steps shows the rule: 0.04 x (0.5, 0.4, 0.1) = 0.02, 0.016,
    # 0.004 < 0.005, so TP3 merges into TP2 (its price kept).
    btc = CATALOG.resolve(BTC)
    catalog = MarketCatalog([replace(btc, min_amount=D("0.005"))])
    config = ExitConfig(tp_fractions=(0.5, 0.4, 0.1))
    plan = build_plan(ctx(amount=D("0.04")), config, catalog=catalog)
    assert isinstance(plan, ExitPlan)
    assert prices(plan) == [
        (LegKind.TP, D("40780.0"), D("0.5"), D("0.02")),
        (LegKind.TP, D("41300.0"), D("0.5"), D("0.02")),
        (LegKind.SL, D("39200.0"), D(1), D("0.04")),
    ]
    assert len(plan.notes) == 1 and "TP3" in plan.notes[0] and "merged into TP2" in plan.notes[0]


def test_quantities_truncate_and_the_last_takes_the_remainder() -> None:
    plan = plan_of(ctx(amount=D("0.017")))  # 0.0051 -> 0.005, 0.0051 -> 0.005, rest 0.007
    assert [leg.quantity for leg in plan.take_profits] == [D("0.005"), D("0.005"), D("0.007")]


def test_a_position_below_the_market_minimum_is_refused() -> None:
    refused = build_plan(ctx(symbol="DOGE/USDT:USDT", entry_price=D("0.08"), amount=D("0.5")))
    assert isinstance(refused, PlanRefused) and "minimum amount" in refused.reason


# --- the partial-exit variant and the trailing stop ----------------------------------------------------------


def test_partial_exit_variant() -> None:
    config = ExitConfig(style=ExitStyle.PARTIAL_TRAILING)
    plan = plan_of(ctx(), config)
    # The trailing leg arms at +1 % (40400); 50 % at +3 % (41200); the stop protects everything.
    assert prices(plan) == [
        (LegKind.TRAILING, D("40400.0"), D("0.5"), D("0.05")),
        (LegKind.TP, D("41200.0"), D("0.5"), D("0.05")),
        (LegKind.SL, D("39200.0"), D(1), D("0.1")),
    ]
    trailing = plan.trailing_stop()
    assert trailing == TrailingStop(side="LONG", entry_price=D("40000"), activation=D("0.01"), distance=D("0.005"))
    short = plan_of(ctx(side="SHORT"), config)
    assert [leg.trigger_price for leg in short.legs] == [D("39600.0"), D("38800.0"), D("40800.0")]


def test_trailing_stop_arms_above_one_percent_and_ratchets_long() -> None:
    t = TrailingStop(side="LONG", entry_price=D("100"))
    t = t.update(D("100.9"))
    assert not t.armed and t.best_price == D("100.9")
    t = t.update(D("101"))  # exactly +1 %: not yet exceeded
    assert not t.armed
    t = t.update(D("102"))
    assert t.stop_price == D("102") * D("0.995") == D("101.490")
    assert not t.triggered(D("101.5")) and t.triggered(D("101.49"))
    t = t.update(D("101.6"))  # pulls back: the stop stays
    assert t.stop_price == D("101.490") and t.best_price == D("102")
    t = t.update(D("104"))
    assert t.stop_price == D("103.480")
    t = t.update(D("90"))  # a crash never loosens it
    assert t.stop_price == D("103.480") and t.triggered(D("90"))


def test_trailing_stop_short_mirror() -> None:
    t = TrailingStop(side="SHORT", entry_price=D("100"), activation=D("0.01"), distance=D("0.02"))
    t = t.update(D("99.5"))
    assert not t.armed
    t = t.update(D("98"))
    assert t.stop_price == D("98") * D("1.02")
    t = t.update(D("99"))
    assert t.stop_price == D("99.96")
    t = t.update(D("95"))
    assert t.stop_price == D("96.90")
    assert t.triggered(D("97")) and not t.triggered(D("96.8"))


def test_trailing_stop_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="side"):
        TrailingStop(side="UP", entry_price=D(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distance"):
        TrailingStop(side="LONG", entry_price=D(1), distance=D(0))
    with pytest.raises(ValueError, match="mark"):
        TrailingStop(side="LONG", entry_price=D(1)).update(float("nan"))
    with pytest.raises(ValueError, match="mark"):
        TrailingStop(side="LONG", entry_price=D(1)).update(D(0))


PATHS = st.lists(st.decimals(min_value=D("50"), max_value=D("200"), places=2, allow_nan=False), max_size=60)


@given(
    side=st.sampled_from(["LONG", "SHORT"]),
    path=PATHS,
    distance=st.decimals(min_value=D("0.001"), max_value=D("0.2"), places=3),
    activation=st.decimals(min_value=D("0"), max_value=D("0.1"), places=3),
)
def test_trailing_stop_only_ratchets(side: str, path: list[D], distance: D, activation: D) -> None:
    s = 1 if side == "LONG" else -1
    entry = D("100")
    t = TrailingStop(side=side, entry_price=entry, activation=activation, distance=distance)  # type: ignore[arg-type]
    best: D | None = None
    for mark in path:
        before = t
        t = t.update(mark)
        best = mark if best is None else (max(best, mark) if s > 0 else min(best, mark))
        assert t.best_price == best
        if before.stop_price is not None:
            assert t.stop_price is not None  # once armed, always armed
            assert s * (t.stop_price - before.stop_price) >= 0  # never moves against the position
        armed_now = s * (best - entry) / entry > activation
        assert t.armed == armed_now  # arms exactly when the best price's profit exceeds the activation
        if t.stop_price is not None:
            assert t.stop_price == best * (1 - s * distance)
            assert s * (best - t.stop_price) > 0  # behind the best price


@given(
    side=st.sampled_from(["LONG", "SHORT"]),
    path=PATHS,
    start_best=st.decimals(min_value=D("50"), max_value=D("200"), places=2),
    start_stop=st.decimals(min_value=D("50"), max_value=D("200"), places=2),
)
def test_a_restored_or_moved_stop_is_never_loosened(side: str, path: list[D], start_best: D, start_stop: D) -> None:
    """A state restored from storage (or a stop another source moved, e.g. to break-even) keeps its stop:
    a later, looser candidate from the best price never replaces it."""
    s = 1 if side == "LONG" else -1
    t = TrailingStop(side=side, entry_price=D("100"), best_price=start_best, stop_price=start_stop)  # type: ignore[arg-type]
    for mark in path:
        before = t.stop_price
        t = t.update(mark)
        assert before is not None and t.stop_price is not None
        assert s * (t.stop_price - before) >= 0


def test_trailing_stop_keeps_a_tighter_stop_than_its_candidate() -> None:
    t = TrailingStop(side="LONG", entry_price=D("100"), best_price=D("102"), stop_price=D("101.9"))
    assert t.update(D("102.5")).stop_price == D("101.9875")  # candidate 101.9875 > 101.9: moves up
    t = TrailingStop(side="LONG", entry_price=D("100"), best_price=D("102"), stop_price=D("102"))
    assert t.update(D("102.4")).stop_price == D("102")  # candidate 101.888 < 102: stays


# --- validation and refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"side": "FLAT"}, "side"),
        ({"entry_price": float("nan")}, "entry price"),
        ({"entry_price": D("-1")}, "entry price"),
        ({"entry_price": float("inf")}, "entry price"),
        ({"amount": D(0)}, "amount"),
        ({"amount": D("0.0105")}, "amount precision"),
        ({"leverage": D("0.5")}, "leverage"),
        ({"symbol": "FOO/USDT:USDT"}, "unknown symbol"),
        ({"volatility": -0.01}, "volatility"),
        ({"atr": float("nan")}, "ATR"),
        ({"wallet_balance": D("-5")}, "wallet balance"),
        ({"margin_mode": "portfolio"}, "margin mode"),
        ({"margin_mode": "cross", "other_positions": [{"side": "LONG", "amount": 1}]}, "no liquidation price"),
        ({"entry_price": D("2000000"), "amount": D("1000")}, "leverage tier"),  # 2 bn USDT: beyond the last tier
    ],
)
def test_invalid_contexts_are_refused_with_a_reason(overrides: dict[str, object], words: str) -> None:
    refused = build_plan(ctx(**overrides))
    assert isinstance(refused, PlanRefused)
    assert words in refused.reason


def test_a_short_target_at_or_below_zero_is_refused_not_clamped() -> None:
    refused = build_plan(ctx(side="SHORT", volatility=0.25, leverage=2))  # TP3 = 5.2 x 25 % = 130 % below
    assert isinstance(refused, PlanRefused) and "<= 0" in refused.reason


def test_validate_plan_finds_every_broken_invariant() -> None:
    plan = plan_of(ctx())
    assert validate_plan(plan) == []
    tp1, tp2, tp3, sl = plan.legs

    def problems(*legs: ExitLeg, **changes: object) -> str:
        return " | ".join(validate_plan(replace(plan, legs=legs, **changes)))  # type: ignore[arg-type]

    assert "wrong side" in problems(replace(tp1, trigger_price=D("39000.0")), tp2, tp3, sl)
    assert "wrong side" in problems(tp1, tp2, tp3, replace(sl, trigger_price=D("40100.0")))
    assert "not finite" in problems(tp1, tp2, tp3, replace(sl, trigger_price=D("-100")))
    assert "not finite" in problems(tp1, tp2, tp3, replace(sl, trigger_price=D("NaN")))
    assert "price tick" in problems(replace(tp1, trigger_price=D("40780.05")), tp2, tp3, sl)
    assert "do not add up to 1" in problems(replace(tp1, fraction=D("0.2")), tp2, tp3, sl)
    assert "minimum amount" in problems(replace(tp1, quantity=D("0.0005")), tp2, tp3, sl)
    assert "amount precision" in problems(replace(tp1, quantity=D("0.0305")), tp2, tp3, sl)
    assert "whole position" in problems(tp1, tp2, tp3, replace(sl, quantity=D("0.05")))
    assert "exactly one stop-loss" in problems(tp1, tp2, tp3)
    assert "liquidation" in problems(tp1, tp2, tp3, replace(sl, trigger_price=D("36300.0")))
    assert "liquidation" in problems(tp1, tp2, tp3, sl, stop_bound=D("39200.0"))


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="sum to exactly 1"):
        ExitConfig(tp_fractions=(0.3, 0.3, 0.3))
    with pytest.raises(ValueError, match="same length"):
        ExitConfig(tp_fractions=(0.5, 0.5))
    with pytest.raises(ValueError, match="strictly increasing"):
        ExitConfig(tp_distances=(0.03, 0.02, 0.05))
    with pytest.raises(ValueError, match="sl_distance"):
        ExitConfig(sl_distance=0)
    with pytest.raises(ValueError, match="partial_fraction"):
        ExitConfig(partial_fraction=1.0)
    with pytest.raises(ValueError, match="liquidation_buffer"):
        ExitConfig(liquidation_buffer=float("nan"))


# --- the old system's failure: a percentage stop beyond liquidation, or below zero -------------------------------


def test_regression_50x_long_stop_beyond_liquidation_is_tightened_inside_the_buffer() -> None:
    # 50x: WB 80, LP = (80 - 4000) / (0.0004 - 0.1) = 39357.43; bound = LP + 200 = 39557.43.
    # The old -2 % stop (39200) lies BEYOND liquidation: the position would be liquidated before it triggered.
    plan = plan_of(ctx(leverage=50))
    assert plan.liquidation_price is not None
    assert abs(plan.liquidation_price - D("39357.4297")) < D("0.001")
    assert D("39200") < plan.liquidation_price
    # Tightened to the first tick strictly inside the bound (39557.43 rounds to 39557.4, one tick up).
    assert plan.stop_loss.trigger_price == D("39557.5")
    assert plan.stop_loss.trigger_price > plan.liquidation_price + D("200")
    assert any("tightened" in note for note in plan.notes)
    assert "tightened" in plan.stop_loss.reason


def test_regression_50x_short_is_tightened_too() -> None:
    # LP = (80 + 4000) / 0.1004 = 40637.45; bound = 40437.45; the +2 % stop 40800 lies beyond it.
    plan = plan_of(ctx(side="SHORT", leverage=50))
    assert plan.liquidation_price is not None and abs(plan.liquidation_price - D("40637.4502")) < D("0.001")
    assert plan.stop_loss.trigger_price == D("40437.4")
    assert any("tightened" in note for note in plan.notes)


@pytest.mark.parametrize("side", ["LONG", "SHORT"])
@pytest.mark.parametrize("leverage", [100, 125])
def test_regression_100x_and_125x_are_refused(side: str, leverage: int) -> None:
    # 125x long: LP = (32 - 4000) / -0.0996 = 39839.36, + buffer 200 = 40039 > entry: no stop can exist.
    # 100x long: LP = 39759.04, + 200 = 39959.04 > 39920 (0.2 % from entry): no stop with room for fees.
    refused = build_plan(ctx(side=side, leverage=leverage))
    assert isinstance(refused, PlanRefused)
    assert "no valid stop" in refused.reason and "must not be opened" in refused.reason


@pytest.mark.parametrize("leverage", [1, 10, 125])
def test_regression_a_huge_percentage_stop_is_never_negative(leverage: int) -> None:
    # The old system computed entry x (1 - 150 %) = -20000 and sent it. Here: at 1x (no liquidation) refused,
    # at 10x tightened inside liquidation, at 125x refused: never a stop <= 0.
    config = ExitConfig(sl_distance=1.5)
    assert D("40000") * (1 - D("1.5")) < 0
    result = build_plan(ctx(leverage=leverage), config)
    if isinstance(result, PlanRefused):
        assert leverage in (1, 125)
        assert "<= 0" in result.reason or "below the price tick" in result.reason or "no valid stop" in result.reason
    else:
        assert leverage == 10
        assert result.stop_loss.trigger_price > 0
        assert result.stop_bound is not None and result.stop_loss.trigger_price > result.stop_bound


def test_cross_margin_counts_the_other_positions() -> None:
    # Wallet 1000; another long of 1 ETH opened at 2000, marked at 1800 (MMR 0.4 %, cum 0): its PnL -200 and
    # maintenance 7.2 reduce the cross terms by 207.2, so LP = (1000 - 207.2 - 4000) / (0.0004 - 0.1).
    other = {
        "side": "LONG",
        "amount": D(1),
        "open_price": D(2000),
        "mark_price": D(1800),
        "mm_ratio": D("0.004"),
        "maintenance_amount": D(0),
    }
    plan = plan_of(ctx(margin_mode="cross", wallet_balance=D(1000), other_positions=[other]))
    assert plan.liquidation_price == (D(1000) - D("207.2") - D(4000)) / (D("0.0004") - D("0.1"))
    alone = plan_of(ctx(margin_mode="cross", wallet_balance=D(1000)))
    assert alone.liquidation_price is not None and alone.liquidation_price < plan.liquidation_price


def test_a_big_cross_wallet_moves_liquidation_away() -> None:
    # Cross margin with a 100k wallet: the 50x position has no liquidation in reach, the -2 % stop stays.
    plan = plan_of(ctx(leverage=50, margin_mode="cross", wallet_balance=D("100000")))
    assert plan.liquidation_price is None and plan.stop_loss.trigger_price == D("39200.0")
    isolated = plan_of(ctx(leverage=50, wallet_balance=D("80")))
    assert isolated.stop_loss.trigger_price == D("39557.5")


# --- properties over random positions -----------------------------------------------------------------------------

REFERENCE_PRICES = {
    "ADA/USDT:USDT": D("0.4567"),
    "BTC/USDT:USDT": D("43210.9"),
    "DOGE/USDT:USDT": D("0.08123"),
    "ETH/USDT:USDT": D("2345.67"),
    "LTC/USDT:USDT": D("71.23"),
    "TRX/USDT:USDT": D("0.10234"),
    "XRP/USDT:USDT": D("0.5123"),
}


@st.composite
def contexts(draw: st.DrawFn) -> ExitContext:
    symbol = draw(st.sampled_from(sorted(REFERENCE_PRICES)))
    market = CATALOG.resolve(symbol)
    factor = draw(st.decimals(min_value=D("0.1"), max_value=D("10"), places=6))
    entry = (REFERENCE_PRICES[symbol] * factor).quantize(D("1E-8"))
    max_steps = int(D("300000") / entry / market.amount_step)  # notional up to ~300k USDT
    steps = draw(st.integers(min_value=int(market.min_amount / market.amount_step), max_value=max(max_steps, 1)))
    volatility = draw(st.none() | st.floats(min_value=1e-5, max_value=0.6))
    use_atr = draw(st.booleans())
    return ExitContext(
        side=draw(st.sampled_from(["LONG", "SHORT"])),
        entry_price=entry,
        amount=market.amount_step * steps,
        leverage=draw(st.integers(min_value=1, max_value=125) | st.floats(min_value=1, max_value=125)),
        symbol=symbol,
        atr=D(repr(volatility)) * entry if volatility is not None and use_atr else None,
        volatility=volatility if not use_atr else None,
        regime=draw(st.none() | st.sampled_from(["trending", "ranging", "volatile"])),
        policy=draw(st.none() | st.sampled_from(["CONSERVATIVE", "BALANCED", "AGGRESSIVE"])),
    )


def _reference_liquidation(context: ExitContext) -> D | None:
    entry, amount = D(str(context.entry_price)), D(str(context.amount))
    tier = leverage_tier(symbol=context.symbol, notional=entry * amount)
    return liquidation_price(
        side=context.side,
        open_price=entry,
        amount=amount,
        wallet_balance=entry * amount / D(repr(context.leverage)),
        mm_ratio=tier.mm_ratio,
        maintenance_amount=tier.maintenance_amount,
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(context=contexts(), style=st.sampled_from(list(ExitStyle)))
def test_no_plan_has_a_bad_price_a_stop_beyond_liquidation_or_broken_quantities(
    context: ExitContext, style: ExitStyle
) -> None:
    result = build_plan(context, ExitConfig(style=style))
    if isinstance(result, PlanRefused):
        assert result.reason
        return
    plan = result
    s = 1 if context.side == "LONG" else -1
    entry = D(str(context.entry_price))
    market = CATALOG.resolve(context.symbol)
    assert validate_plan(plan) == []
    # Every price finite, > 0, at the tick, on its side of the entry.
    for leg in plan.legs:
        price = leg.trigger_price
        assert price.is_finite() and price > 0
        assert price_to_precision(context.symbol, price) == price
        assert s * (price - entry) < 0 if leg.kind is LegKind.SL else s * (price - entry) > 0
    # The stop: strictly inside liquidation and inside liquidation + the 0.5 % buffer (computed independently).
    liquidation = _reference_liquidation(context)
    assert plan.liquidation_price == liquidation
    if liquidation is not None:
        stop = plan.stop_loss.trigger_price
        assert s * (stop - liquidation) > 0
        assert s * (stop - (liquidation + s * BUFFER * entry)) > 0
    # Fractions add up to 1; quantities at precision, at least the minimum, adding up to the position.
    profit = plan.profit_legs
    assert sum(leg.fraction for leg in profit) == 1
    assert sum(leg.quantity for leg in profit) == plan.amount == D(str(context.amount))
    for leg in plan.legs:
        assert leg.quantity >= market.min_amount
        assert amount_to_precision(context.symbol, leg.quantity) == leg.quantity
    assert plan.stop_loss.quantity == plan.amount and plan.stop_loss.fraction == 1
    # Take-profits are ordered away from the entry.
    distances = [s * (leg.trigger_price - entry) for leg in profit]
    assert distances == sorted(distances) and len(set(distances)) == len(distances)


@settings(max_examples=200, deadline=None)
@given(context=contexts())
def test_a_plan_is_refused_only_when_no_valid_stop_or_target_exists(context: ExitContext) -> None:
    """Ordinary positions get a plan: whenever liquidation leaves room and no distance reaches zero."""
    result = build_plan(context)
    s = 1 if context.side == "LONG" else -1
    entry = D(str(context.entry_price))
    liquidation = _reference_liquidation(context)
    room = liquidation is None or s * (entry * (1 - s * D("0.002")) - (liquidation + s * BUFFER * entry)) > 0
    vol = context.volatility if context.atr is None else float(D(str(context.atr)) / entry)
    sane = vol is None or vol * 5.2 * 1.25 < 0.9  # every target and the stop stay well above zero
    fine_tick = CATALOG.resolve(context.symbol).price_tick <= D("0.001") * entry  # 0.2 % is at least two ticks
    assume(room and sane and fine_tick)
    assert isinstance(result, ExitPlan), result


def test_leverages_up_to_the_tier_limit_produce_plans_or_reasoned_refusals() -> None:
    outcomes = {lev: build_plan(ctx(leverage=lev)) for lev in range(1, 126)}
    planned = [lev for lev, r in outcomes.items() if isinstance(r, ExitPlan)]
    refused = [lev for lev, r in outcomes.items() if isinstance(r, PlanRefused)]
    # The -2 % stop fits as is up to ~40x; tightened after that; refused once liquidation + buffer
    # leaves no stop 0.2 % from the entry.
    assert planned == list(range(1, planned[-1] + 1)) and refused == list(range(planned[-1] + 1, 126))
    assert 75 <= planned[-1] < 100
    untouched = [lev for lev in planned if not outcomes[lev].notes]  # type: ignore[union-attr]
    assert untouched == list(range(1, untouched[-1] + 1)) and 30 <= untouched[-1] < 50
