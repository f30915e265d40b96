"""Position sizing: Kelly fallback, the learned multiplier, every risk clip, the exchange's rounding and minimums,
skipped signals, save/load, training."""

import asyncio
import logging
import math
import pickle
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from app.domains.markets.candles import Candles
from app.domains.markets.catalog import BelowExchangeMinimum, MarketCatalog
from app.domains.markets.marketdata import ReplayMarketData, default_data_root
from app.domains.policy.profiles import DEFAULT_PROFILES, RiskMode, RiskProfile
from app.domains.risk.guard import AccountState, DenialCode, RiskGuard, SafetyView, Side, TradeIntent
from app.domains.risk.stack import profile_layer, stack
from app.domains.signals.fallback import momentum_series, momentum_signal
from app.domains.sizing.policy import (
    INPUTS,
    WEIGHTS_FILE,
    Episode,
    EpisodeConfig,
    SizeDecision,
    SizingConfig,
    SizingInputs,
    SizingPolicy,
    SizingPolicyNet,
    build_episode,
    fit_to_market,
    kelly_fraction,
    kelly_multiplier,
    mean_utility,
    replay_episodes,
    size_position,
)
from app.domains.trading.schemas import TradeCreate

NORMAL = DEFAULT_PROFILES[RiskMode.NORMAL]
CONFIG = SizingConfig()
EQUITY = Decimal(10_000)
PRICE = Decimal(60_000)
# At confidence 0.9 and payoff 1, half Kelly (0.4) is above kelly_full_scale: the multiplier is 1.5.
SURE = SizingInputs(confidence=0.9, volatility=0.005, pnl_trend=0.0, margin_use=0.0)
SIZE_SKIPPED = {
    DenialCode.MAX_RISK_PER_TRADE,
    DenialCode.POSITION_SIZE_CAP,
    DenialCode.HARD_POSITION_EQUITY,
    DenialCode.HARD_MARGIN_RATIO,
    DenialCode.MAX_LEVERAGE,
    DenialCode.HARD_MAX_LEVERAGE,
}


def ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


def profile(**overrides: Any) -> RiskProfile:
    return RiskProfile.model_validate({**NORMAL.model_dump(), **overrides})


def roomy(**overrides: Any) -> RiskProfile:
    """A profile whose own limits never bind, to isolate the others."""
    values: dict[str, Any] = {"position_size_cap_usd": Decimal(10**9), "max_risk_pct_per_trade": Decimal(100)}
    return profile(**{**values, **overrides})


def size(
    inputs: SizingInputs = SURE,
    *,
    equity: Decimal = EQUITY,
    risk_profile: RiskProfile = NORMAL,
    policy: SizingPolicy | None = None,
    config: SizingConfig = CONFIG,
    leverage: Any = Decimal(3),
    stop: Decimal | None = None,
    price: Decimal = PRICE,
) -> SizeDecision:
    return size_position(equity, price, inputs, stack(profile_layer(risk_profile)), policy, config, leverage, stop)


# --- Kelly ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "b", "expected"),
    [(0.6, 1.0, 0.2), (0.5, 2.0, 0.25), (0.55, 1.5, 0.25), (0.75, 3.0, 2 / 3), (1.0, 1.0, 1.0), (0.8, 0.5, 0.4)],
)
def test_kelly_fraction_is_p_minus_q_over_b(p: float, b: float, expected: float) -> None:
    assert kelly_fraction(p, b) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("p", "b"), [(0.5, 1.0), (0.4, 1.0), (0.0, 5.0), (0.3, 2.0), (0.6, 0.5)])
def test_kelly_never_bets_without_an_edge(p: float, b: float) -> None:
    assert kelly_fraction(p, b) == 0.0
    assert kelly_multiplier(p, b, CONFIG) == 0.0


@pytest.mark.parametrize(
    ("p", "b"), [(-0.1, 1.0), (1.1, 1.0), (math.nan, 1.0), (0.6, 0.0), (0.6, -1.0), (0.6, math.inf)]
)
def test_kelly_rejects_impossible_inputs(p: float, b: float) -> None:
    with pytest.raises(ValueError):
        kelly_fraction(p, b)


def test_kelly_multiplier_mapping() -> None:
    # half Kelly 0.1 is half of kelly_full_scale 0.2: halfway from 0.25 to 1.5
    assert kelly_multiplier(0.6, 1.0, CONFIG) == pytest.approx(0.875)
    assert kelly_multiplier(0.7, 1.0, CONFIG) == pytest.approx(1.5)
    assert kelly_multiplier(0.99, 1.0, CONFIG) == 1.5
    assert kelly_multiplier(0.5001, 1.0, CONFIG) == pytest.approx(0.25, abs=1e-3)


def test_kelly_multiplier_stays_in_range_for_random_inputs() -> None:
    rng = np.random.default_rng(7)
    for p, b in zip(rng.uniform(0, 1, 2000), rng.lognormal(0, 1.5, 2000), strict=True):
        m = kelly_multiplier(float(p), float(b), CONFIG)
        if p > 1 / (1 + b):  # an edge
            assert 0.25 <= m <= 1.5
        else:
            assert m == 0.0


def test_config_refuses_dollar_sizes_and_multipliers_outside_the_range() -> None:
    with pytest.raises(ValueError):
        SizingConfig(base_fraction=100.0)  # a dollar amount is not a fraction of equity
    with pytest.raises(ValueError):
        SizingConfig(max_multiplier=2.0)
    with pytest.raises(ValueError):
        SizingConfig(min_multiplier=0.1)
    with pytest.raises(ValueError):
        SizingConfig(risk_aversion=math.nan)


# --- the net ----------------------------------------------------------------------------------------


def test_net_output_stays_in_range_for_random_weights_and_inputs() -> None:
    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    for _ in range(20):
        net = SizingPolicyNet()
        with torch.no_grad():
            for param in net.parameters():
                param.mul_(float(rng.uniform(1, 50)))
        x = torch.from_numpy(rng.normal(0, 1, (500, 4)) * 10.0 ** rng.integers(-3, 7, (500, 1)))
        out = net(x)
        assert out.shape == (500,)
        assert bool(((out >= 0.25) & (out <= 1.5)).all())


# --- clipping ---------------------------------------------------------------------------------------


def test_notional_is_a_fraction_of_equity_times_the_multiplier() -> None:
    decision = size(risk_profile=roomy())
    assert decision == SizeDecision(Decimal("300.00"), Decimal(3), 1.5, "kelly", None, None)
    assert size(equity=Decimal(20_000), risk_profile=roomy()).notional == Decimal("600.00")
    half = size(SizingInputs(0.6, 0.005, 0.0, 0.0), risk_profile=roomy())
    assert half.notional == Decimal("175.00") and half.multiplier == 0.875


def test_position_size_cap_at_its_boundary() -> None:
    at = size(risk_profile=roomy(position_size_cap_usd=Decimal(300)))
    assert (at.notional, at.limited_by) == (Decimal("300.00"), None)
    below = size(risk_profile=roomy(position_size_cap_usd=Decimal("299.99")))
    assert (below.notional, below.limited_by) == (Decimal("299.99"), "POSITION_SIZE_CAP profile=NORMAL")


def test_risk_per_trade_assumes_a_two_percent_stop_when_none_is_given() -> None:
    # 300 × 2 % = 6 = 10 000 × 0.06 %
    at = size(risk_profile=roomy(max_risk_pct_per_trade=Decimal("0.06")))
    assert (at.notional, at.limited_by) == (Decimal("300.00"), None)
    below = size(risk_profile=roomy(max_risk_pct_per_trade=Decimal("0.05")))
    assert (below.notional, below.limited_by) == (Decimal("250.00"), "MAX_RISK_PER_TRADE profile=NORMAL")


def test_risk_per_trade_uses_the_given_stop() -> None:
    # 300 × 0.5 % = 1.5 = 10 000 × 0.015 %
    tight = roomy(max_risk_pct_per_trade=Decimal("0.015"))
    assert size(risk_profile=tight, stop=Decimal("0.5")).notional == Decimal("300.00")
    wide = size(risk_profile=tight, stop=Decimal("0.6"))
    assert (wide.notional, wide.limited_by) == (Decimal("250.00"), "MAX_RISK_PER_TRADE profile=NORMAL")
    odd = size(risk_profile=tight, stop=Decimal(7))  # 10 000 × 0.015 / 7 = 21.428… rounded down
    assert odd.notional == Decimal("21.42")


def test_one_position_is_at_most_half_of_equity() -> None:
    # 0.4 × 1.25 = exactly half of equity
    at = size(config=SizingConfig(base_fraction=0.4, max_multiplier=1.25), risk_profile=roomy(), leverage=Decimal(5))
    assert (at.notional, at.limited_by) == (Decimal("5000.00"), None)
    above = size(
        config=SizingConfig(base_fraction=0.41, max_multiplier=1.25), risk_profile=roomy(), leverage=Decimal(5)
    )
    assert (above.notional, above.limited_by) == (Decimal("5000.00"), "HARD_POSITION_EQUITY hard")


def test_free_margin_floor() -> None:
    # margin in use 0.8999 × equity leaves 0.0001 × 10 000 = 1 USDT of margin: 3 USDT notional at 3x
    crowded = SizingInputs(0.9, 0.005, 0.0, 0.8999)
    decision = size(crowded, risk_profile=roomy())
    assert (decision.notional, decision.limited_by) == (Decimal("3.00"), "HARD_MARGIN_RATIO hard")
    full = size(SizingInputs(0.9, 0.005, 0.0, 0.95), risk_profile=roomy())
    assert full.skipped_reason is not None and full.skipped_reason.startswith("NO_SIZE")


def test_every_clipped_size_passes_risk_guard() -> None:
    guard = RiskGuard()
    rng = np.random.default_rng(11)
    now = datetime(2024, 1, 1, tzinfo=UTC)
    safety = SafetyView(halted=False, state="NORMAL", reason="")
    sized = 0
    for _ in range(400):
        risk_profile = profile(
            position_size_cap_usd=Decimal(str(round(float(rng.uniform(5, 5000)), 2))),
            max_risk_pct_per_trade=Decimal(str(round(float(rng.uniform(0.01, 5)), 3))),
            max_leverage=Decimal(int(rng.integers(1, 20))),
        )
        equity = Decimal(str(round(float(rng.uniform(50, 100_000)), 2)))
        inputs = SizingInputs(float(rng.uniform(0.5, 1)), 0.005, 0.0, float(rng.uniform(0, 0.95)))
        leverage = Decimal(int(rng.integers(1, int(risk_profile.max_leverage) + 1)))
        stop = None if rng.random() < 0.5 else Decimal(str(round(float(rng.uniform(0.1, 20)), 2)))
        config = SizingConfig(base_fraction=float(rng.uniform(0.001, 1.0)))
        decision = size(inputs, equity=equity, risk_profile=risk_profile, config=config, leverage=leverage, stop=stop)
        if decision.notional is None:
            continue
        sized += 1
        intent = TradeIntent(
            symbol="BTC/USDT:USDT",
            side=Side.LONG,
            notional=decision.notional,
            leverage=leverage,
            price=PRICE,
            confidence=Decimal(1),
            stop_loss=None if stop is None else PRICE * (1 - stop / 100),
        )
        used = Decimal(repr(inputs.margin_use)) * equity
        account = AccountState(equity, 0, Decimal(0), used, equity)
        result = guard.check(intent, account, risk_profile, safety, now=now, trace_id="t")
        assert not {r.code for r in result.reasons} & SIZE_SKIPPED, (decision, result.reasons)
    assert sized > 300


# --- skipped signals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leverage", "code"),
    [
        (None, "LEVERAGE_MISSING"),
        (Decimal(0), "LEVERAGE_INVALID"),
        (Decimal(-2), "LEVERAGE_INVALID"),
        (Decimal("NaN"), "LEVERAGE_INVALID"),
        (Decimal("sNaN"), "LEVERAGE_INVALID"),
        (Decimal("Infinity"), "LEVERAGE_INVALID"),
        (Decimal("5.01"), "LEVERAGE_ABOVE_MAX"),
        (Decimal(10), "LEVERAGE_ABOVE_MAX"),
    ],
)
def test_unusable_leverage_is_skipped_never_defaulted(
    leverage: Decimal | None, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="app.domains.sizing.policy"):
        decision = size(leverage=leverage)
    assert decision.notional is None and decision.leverage is None and decision.skipped
    assert decision.skipped_reason is not None and decision.skipped_reason.startswith(code)
    record = next(r for r in caplog.records if r.getMessage() == "sizing_skipped")
    assert record.__dict__["reason"] == decision.skipped_reason


def test_leverage_at_the_profile_max_is_used_as_given() -> None:
    assert size(leverage=Decimal(5)).leverage == Decimal(5)
    assert size(leverage=Decimal("1.5")).leverage == Decimal("1.5")


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"equity": Decimal(0)}, "NO_EQUITY"),
        ({"equity": Decimal("NaN")}, "NO_EQUITY"),
        ({"price": Decimal(0)}, "PRICE_INVALID"),
        ({"stop": Decimal(0)}, "STOP_INVALID"),
        ({"stop": Decimal("Infinity")}, "STOP_INVALID"),
        ({"inputs": SizingInputs(math.nan, 0.005, 0.0, 0.0)}, "INPUTS_INVALID"),
        ({"inputs": SizingInputs(1.2, 0.005, 0.0, 0.0)}, "INPUTS_INVALID"),
        ({"inputs": SizingInputs(0.9, -0.1, 0.0, 0.0)}, "INPUTS_INVALID"),
    ],
)
def test_unusable_requests_are_skipped_with_a_reason(kwargs: dict[str, Any], code: str) -> None:
    decision = size(**kwargs)
    assert decision.notional is None
    assert decision.skipped_reason is not None and decision.skipped_reason.startswith(code)


def test_no_edge_under_kelly_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="app.domains.sizing.policy"):
        decision = size(SizingInputs(0.5, 0.005, 0.0, 0.0))
    assert decision.source == "kelly" and decision.notional is None and decision.multiplier == 0.0
    assert decision.skipped_reason is not None and decision.skipped_reason.startswith("NO_EDGE")
    assert any(r.getMessage() == "sizing_skipped" for r in caplog.records)


def test_an_untrained_policy_falls_back_to_kelly() -> None:
    assert size(policy=SizingPolicy()).source == "kelly"
    with pytest.raises(RuntimeError):
        SizingPolicy().multiplier(SURE)


def test_a_size_that_rounds_to_nothing_is_skipped() -> None:
    decision = size(equity=Decimal("0.10"), risk_profile=roomy())
    assert decision.notional is None
    assert decision.skipped_reason is not None and decision.skipped_reason.startswith("NO_SIZE")


# --- the exchange's rounding and minimums -----------------------------------------------------------

CATALOG = MarketCatalog.load()
BTC = CATALOG.resolve("BTCUSDT")


def clipped(notional: str) -> SizeDecision:
    return SizeDecision(Decimal(notional), Decimal(3), 1.0, "kelly", None, "position_size_cap")


def test_a_size_is_truncated_to_the_amount_step_like_the_paper_fill() -> None:
    price = Decimal("64000.5")
    fitted = fit_to_market(clipped("500.00"), BTC, price)
    assert fitted.quantity == Decimal("0.007") == BTC.quantity_for(Decimal("500.00"), price)
    assert fitted.notional == Decimal("448.0035")  # 0.007 × 64000.5: what the fill is worth, under the clip
    assert (fitted.leverage, fitted.multiplier, fitted.limited_by, fitted.skipped_reason) == (
        Decimal(3),
        1.0,
        "position_size_cap",
        None,
    )


@pytest.mark.parametrize(
    ("symbol", "notional", "price", "minimum"),
    [
        ("BTCUSDT", "79.89", "100000", "0.001"),  # 0.0007989 BTC: below the minimum amount of 0.001
        ("DOGEUSDT", "4.99", "0.1", "5"),  # 49 DOGE is above the minimum amount, but worth 4.9 < 5 USDT
    ],
)
def test_a_size_below_the_markets_minimum_is_no_trade(
    symbol: str, notional: str, price: str, minimum: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="app.domains.sizing.policy"):
        decision = fit_to_market(clipped(notional), CATALOG.resolve(symbol), Decimal(price))
    assert (decision.notional, decision.leverage, decision.quantity) == (None, None, None)
    reason = decision.skipped_reason
    assert reason is not None and reason.startswith("BELOW_EXCHANGE_MINIMUM: ")
    assert f"minimum {minimum}" in reason or f"minimum notional {minimum}" in reason
    assert [r.__dict__["reason"] for r in caplog.records if r.getMessage() == "sizing_skipped"] == [reason]


def test_a_quantity_out_of_decimal_range_is_no_trade() -> None:
    decision = fit_to_market(clipped("1e30"), BTC, Decimal("0.1"))  # 1e31 BTC: more digits than Decimal keeps
    assert decision.notional is None
    assert decision.skipped_reason is not None and decision.skipped_reason.startswith("OUT_OF_RANGE")


def test_a_skipped_size_is_left_as_it_is() -> None:
    skipped = size(leverage=None)
    assert fit_to_market(skipped, BTC, PRICE) is skipped


def test_a_fitted_size_is_filled_exactly_by_the_trades_path() -> None:
    """Property: over random markets, prices (0 to 8 decimals, on the tick or not), equities, profiles and
    leverages, a fitted size is a valid POST /trades body whose fill (`quantity_for`) is its own quantity,
    meets the market's minimums and stays within the clipped size; or it is no trade, and the clipped size
    would indeed have been refused."""
    rng = np.random.default_rng(23)
    markets = [CATALOG.resolve(s) for s in CATALOG.symbols()]
    fitted = below = 0
    for _ in range(2000):
        market = markets[int(rng.integers(len(markets)))]
        price = Decimal(repr(float(10 ** rng.uniform(-2, 5.3)))).quantize(Decimal(10) ** -int(rng.integers(0, 9)))
        if price <= 0:
            continue
        equity = Decimal(repr(round(float(10 ** rng.uniform(1, 6)), 2)))
        risk_profile = DEFAULT_PROFILES[list(RiskMode)[int(rng.integers(len(RiskMode)))]]
        leverage = Decimal(int(rng.integers(1, int(risk_profile.max_leverage) + 1)))
        inputs = SizingInputs(float(rng.uniform(0.55, 1)), 0.005, 0.0, float(rng.uniform(0, 0.5)))
        before = size(inputs, equity=equity, risk_profile=risk_profile, leverage=leverage, price=price)
        if before.notional is None:
            continue
        decision = fit_to_market(before, market, price)
        if decision.notional is None:
            below += 1
            assert decision.skipped_reason is not None and decision.skipped_reason.startswith("BELOW_EXCHANGE_MINIMUM")
            with pytest.raises(BelowExchangeMinimum):
                market.quantity_for(before.notional, price)
            continue
        fitted += 1
        assert decision.quantity is not None and decision.quantity == market.quantity_for(decision.notional, price)
        assert market.min_cost <= decision.notional <= before.notional and decision.quantity >= market.min_amount
        body = {"symbol": market.exchange_id, "side": "LONG", "notional": str(decision.notional), "price": str(price)}
        TradeCreate.model_validate({**body, "leverage": str(leverage)})
    assert fitted > 500 and below > 100, (fitted, below)


# --- replayed episodes and training -----------------------------------------------------------------


@pytest.fixture(scope="module")
def market() -> ReplayMarketData:
    root = default_data_root()
    for symbol in ("BTC", "ETH"):
        if not (root / f"{symbol}_USDT_USDT-1h-futures.csv.gz").is_file():
            pytest.skip(f"!!! market data missing under {root} (expected ../shared beside the repository)")
    return ReplayMarketData(root)


@pytest.fixture(scope="module")
def episodes_2023(market: ReplayMarketData) -> list[Episode]:
    return asyncio.run(replay_episodes(market, ms("2023-01-01"), ms("2024-01-01")))


@pytest.fixture(scope="module")
def trained(episodes_2023: list[Episode]) -> tuple[SizingPolicy, dict[str, float]]:
    policy = SizingPolicy()
    report = policy.train_on_episodes(episodes_2023, epochs=300, seed=0)
    return policy, report


def test_proxy_signal_is_the_momentum_fallback(btc_candles: Candles) -> None:
    direction, confidence = momentum_series(btc_candles)
    for end in (30, 500, 1234, 4999):
        signal = momentum_signal(btc_candles.slice(0, end + 1))
        expected = {"LONG": 1.0, "SHORT": -1.0, "HOLD": 0.0}[signal.side]
        assert direction[end] == expected
        assert confidence[end] == pytest.approx(signal.confidence, abs=1e-9)
    assert np.isnan(confidence[:24]).all()


def test_episode_inputs_use_no_future_candles(btc_candles: Candles) -> None:
    config = EpisodeConfig()
    full = build_episode(btc_candles, config)
    cut = build_episode(btc_candles.slice(0, 3000), config)
    assert len(cut) > 1000
    # every step of the shorter replay (its exit known within it) is the same step in the longer one
    index = np.searchsorted(full.timestamp, cut.timestamp)
    np.testing.assert_array_equal(full.timestamp[index], cut.timestamp)
    np.testing.assert_allclose(full.inputs[index], cut.inputs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(full.stake_return[index], cut.stake_return, rtol=0, atol=1e-15)
    assert full.inputs.shape[1] == len(INPUTS) and np.isfinite(full.inputs).all()
    assert (full.inputs[:, 0] > 0.5).all() and (full.inputs[:, 3] >= 0).all()


def test_training_on_replayed_episodes_beats_the_unit_multiplier(
    episodes_2023: list[Episode], trained: tuple[SizingPolicy, dict[str, float]]
) -> None:
    policy, report = trained
    assert [e.symbol for e in episodes_2023] == ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    assert all(len(e) > 3000 for e in episodes_2023)
    assert all(ms("2023-01-01") <= e.timestamp.min() and e.timestamp.max() < ms("2024-01-01") for e in episodes_2023)
    returns = np.concatenate([e.stake_return for e in episodes_2023])
    unit = mean_utility(returns, 1.0, CONFIG.risk_aversion)
    assert report["unit_utility"] == pytest.approx(unit)
    assert report["utility"] == pytest.approx(policy.utility(episodes_2023))
    assert report["utility"] > unit + 1e-4
    assert report["seconds"] < 10
    multipliers = policy.multipliers(np.concatenate([e.inputs for e in episodes_2023]))
    assert multipliers.min() >= 0.25 and multipliers.max() <= 1.5
    assert multipliers.std() > 0.01  # it sizes by state, not one constant


def test_training_is_deterministic_for_a_seed(
    episodes_2023: list[Episode], trained: tuple[SizingPolicy, dict[str, float]]
) -> None:
    again = SizingPolicy()
    report = again.train_on_episodes(episodes_2023, epochs=300, seed=0)
    assert report["utility"] == trained[1]["utility"]
    for mine, theirs in zip(again.net.state_dict().values(), trained[0].net.state_dict().values(), strict=True):
        assert torch.equal(mine, theirs)


def test_a_trained_policy_sizes_the_trade(trained: tuple[SizingPolicy, dict[str, float]]) -> None:
    policy = trained[0]
    decision = size(SizingInputs(0.6, 0.004, 0.0, 0.1), policy=policy, risk_profile=roomy())
    expected = EQUITY * Decimal(repr(CONFIG.base_fraction)) * Decimal(repr(decision.multiplier))
    assert decision.source == "policy" and decision.notional == expected.quantize(Decimal("0.01"), ROUND_DOWN)
    # a low-confidence signal is sized by the policy too: the policy decides how much, the gate whether
    assert size(SizingInputs(0.5, 0.004, 0.0, 0.1), policy=policy).source == "policy"


def test_save_then_load_gives_identical_multipliers(
    trained: tuple[SizingPolicy, dict[str, float]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = trained[0]
    saved = policy.save(tmp_path / "policy")
    calls: list[dict[str, Any]] = []
    real_load = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    loaded = SizingPolicy.load(tmp_path / "policy", expected_sha256=saved["sha256"])
    assert calls and all(call.get("weights_only") is True for call in calls)
    x = np.random.default_rng(5).uniform([0.5, 0.001, -0.05, 0.0], [1.0, 0.02, 0.05, 1.0], (1000, 4))
    np.testing.assert_array_equal(loaded.multipliers(x), policy.multipliers(x))
    assert loaded.trained and loaded.config == policy.config
    assert loaded.training_report == pytest.approx(policy.training_report)
    inputs = SizingInputs(0.7, 0.006, 0.01, 0.2)
    assert loaded.multiplier(inputs) == policy.multiplier(inputs)


def test_load_refuses_pickled_objects_and_wrong_hashes(
    trained: tuple[SizingPolicy, dict[str, float]], tmp_path: Path
) -> None:
    directory = tmp_path / "policy"
    trained[0].save(directory)
    with pytest.raises(ValueError, match="SHA-256"):
        SizingPolicy.load(directory, expected_sha256="0" * 64)
    (directory / WEIGHTS_FILE).write_bytes(pickle.dumps({"body.0.weight": Evil()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        SizingPolicy.load(directory)


def test_an_untrained_policy_cannot_be_saved(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        SizingPolicy().save(tmp_path)


class Evil:
    """Unpickling this would run code; weights_only loading must refuse it."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("pwned",))
