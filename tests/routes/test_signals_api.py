"""/api/ai: the champion's vote with per-model versions, or the fallback, marked and counted; only tradable
symbols with data are offered, and a proposed size is one POST /trades takes."""

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from app.bootstrap import bootstrap
from app.core.settings import Settings
from app.domains.learning.pipeline import TrainPlan, train_and_promote
from app.domains.markets.marketdata import ReplayMarketData, default_data_root
from app.domains.markets.universe import NO_MARKET_DATA, NOT_TRADABLE
from app.domains.policy.profiles import DEFAULT_PROFILES, RiskMode
from app.domains.risk.stack import profile_layer, stack
from app.domains.signals.fallback import momentum_signal
from app.domains.signals.modelset import TrainingConfig
from app.domains.signals.registry.events import ModelPromoted
from app.domains.signals.registry.gate import PromotionMargins
from app.domains.signals.registry.repository import RegistryRepository
from app.domains.signals.registry.service import ModelRegistry
from app.domains.signals.service import Signal
from tests.support import running, trade_body

AS_OF = "2023-06-01T00:00:00+00:00"
AS_OF_MS = int(datetime.fromisoformat(AS_OF).timestamp() * 1000)


@pytest.fixture(autouse=True)
def _needs_data() -> None:
    if not (default_data_root() / "BTC_USDT_USDT-1h-futures.csv.gz").exists():
        pytest.skip("!!! market data missing beside the repository")


def fallback_count() -> float:
    return REGISTRY.get_sample_value("fallback_signals_total") or 0.0


async def test_without_a_champion_the_fallback_answers_and_says_so(make_settings: Callable[..., Settings]) -> None:
    async with running(bootstrap(make_settings())) as client:
        before = fallback_count()
        response = await client.post("/api/ai/signal", json={"symbol": "BTCUSDT", "as_of": AS_OF})
        assert response.status_code == 200, response.text
        body = response.json()
        # the candles closed by as_of: the last one opened an hour before
        closed_by = AS_OF_MS - 3_600_000 + 1
        candles = await ReplayMarketData().candles("BTC/USDT:USDT", "1h", AS_OF_MS - 720 * 3_600_000, closed_by)
        rule = momentum_signal(candles)
        assert (body["source"], body["side"], body["votes"]) == ("fallback_momentum", rule.side, [])
        assert body["confidence"] == pytest.approx(rule.confidence)
        assert body["as_of"] == "2023-06-01T00:00:00Z" and body["model_version_id"] is None
        assert "no champion" in body["detail"]
        assert fallback_count() == before + 1
        ready = (await client.get("/ready")).json()["components"]["signals"]
        assert (ready["serving"], ready["fallback_signals"]) == ("fallback_momentum", 1)


async def test_fallback_disabled_is_503(make_settings: Callable[..., Settings]) -> None:
    async with running(bootstrap(make_settings(signal_fallback_enabled=False))) as client:
        response = await client.post("/api/ai/signal", json={"symbol": "BTCUSDT"})
        assert response.status_code == 503
        assert "fallback is disabled" in response.json()["detail"]
        assert (await client.get("/ready")).json()["components"]["signals"]["status"] == "down"


async def test_signal_needs_the_api_key(make_settings: Callable[..., Settings]) -> None:
    async with running(bootstrap(make_settings())) as client:
        before = fallback_count()
        for headers in ({"X-API-Key": ""}, {"X-API-Key": "wrong-key-0123456789"}):
            client.headers.pop("X-API-Key", None)
            response = await client.post("/api/ai/signal", json={"symbol": "BTCUSDT"}, headers=headers)
            assert response.status_code == 401, response.text
            assert response.json()["error"] == "unauthorized"
        assert fallback_count() == before  # no model ran


@pytest.mark.parametrize(("body", "status"), [({"symbol": "FOOUSDT"}, 404), ({"symbol": ""}, 422), ({}, 422)])
async def test_bad_symbols(make_settings: Callable[..., Settings], body: dict[str, str], status: int) -> None:
    async with running(bootstrap(make_settings())) as client:
        assert (await client.post("/api/ai/signal", json=body)).status_code == status


@pytest.mark.parametrize(
    ("symbol", "unified", "status", "reason"),
    [
        ("SOLUSDT", "SOL/USDT:USDT", 422, NOT_TRADABLE),  # candles, but POST /trades refuses it (422 too)
        ("BNB/USDT:USDT", "BNB/USDT:USDT", 422, NOT_TRADABLE),
        ("LTCUSDT", "LTC/USDT:USDT", 404, NO_MARKET_DATA),  # tradable, but nothing to compute a signal from
        ("trxusdt", "TRX/USDT:USDT", 404, NO_MARKET_DATA),
    ],
)
async def test_symbols_not_offered_say_why(
    make_settings: Callable[..., Settings], symbol: str, unified: str, status: int, reason: str
) -> None:
    async with running(bootstrap(make_settings())) as client:
        response = await client.post("/api/ai/signal", json={"symbol": symbol, "leverage": 2})
        assert response.status_code == status, response.text
        body = response.json()
        assert (body["symbol"], body["reason"]) == (unified, reason)
        assert reason in body["detail"] and "BTC/USDT:USDT" in body["detail"]  # and what is offered
        if status == 422:
            trade = await client.post("/trades", json=trade_body(symbol=symbol))
            assert trade.status_code == 422, "the trades path refuses it too"


async def test_fallback_sourced_trades_are_refused_unless_allowed(make_settings: Callable[..., Settings]) -> None:
    body = trade_body(source="fallback_momentum")
    async with running(bootstrap(make_settings())) as client:
        denied = await client.post("/trades", json=body)
        assert denied.status_code == 403
        assert [r["code"] for r in denied.json()["reasons"]] == ["FALLBACK_SIGNAL"]
    async with running(bootstrap(make_settings(accept_fallback_signals=True))) as client:
        assert (await client.post("/trades", json=body)).status_code == 201


@pytest.fixture
async def with_champion(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    """A registry holding one trained set whose ensemble is made champion directly."""
    settings = make_settings(model_dir=str(tmp_path / "models"))
    (tmp_path / "models").mkdir()
    container = bootstrap(settings)
    registry: ModelRegistry = container.registry
    outcome = await train_and_promote(
        ReplayMarketData(),
        registry,
        (tmp_path / "models").resolve(),
        TrainPlan(("BTC/USDT:USDT", "ETH/USDT:USDT"), AS_OF_MS - 30 * 86_400_000, train_days=120, test_days=20),
        TrainingConfig(torch_epochs=1),
        PromotionMargins(),
    )
    if not outcome.decisions["ensemble"].promoted:
        async with container.sessions() as session, session.begin():
            await RegistryRepository(session).set_status(
                [outcome.versions["ensemble"].id], "champion", datetime.now(UTC)
            )
    await container.engine.dispose()
    return settings


async def test_champion_signal_has_every_models_vote(with_champion: Settings) -> None:
    container = bootstrap(with_champion)
    async with running(container) as client:
        champion = container.signals.champion
        assert champion is not None
        response = await client.post("/api/ai/signal", json={"symbol": "ETH/USDT:USDT", "as_of": AS_OF})
        body = response.json()
        assert response.status_code == 200, body
        assert body["source"] == "ensemble" and body["model_version_id"] == str(champion.version.id)
        assert body["side"] in ("LONG", "SHORT", "HOLD") and 0 < body["confidence"] <= 1
        assert body["regime"] in ("trending", "ranging", "volatile")
        assert body["strategy"] in ("trend_following", "mean_reversion", "stand_aside")
        votes = {v["kind"]: v for v in body["votes"]}
        assert set(votes) == {"xgboost", "lightgbm", "nhits", "patchtst"}
        for kind, vote in votes.items():
            assert vote["version_id"] == champion.member_ids[kind]
            assert vote["weight"] == pytest.approx(champion.trained.ensemble.weights[kind])
            if vote["weight"] > 0:
                assert vote["ran"] is True and sum(vote["probabilities"].values()) == pytest.approx(1.0)
            else:  # a member without weight is not run: it says so rather than show numbers it did not compute
                assert vote["ran"] is False and vote["probabilities"] is None and vote["side"] is None
        assert body["as_of"] == "2023-06-01T00:00:00Z"
        models = (await client.get("/api/ai/models", params={"kind": "ensemble"})).json()
        champions = [m for m in models["items"] if m["status"] == "champion"]
        assert [m["id"] for m in champions] == [str(champion.version.id)]  # the refit, or the tested candidate
        one = (await client.get(f"/api/ai/models/{champion.version.id}")).json()
        assert set(one["metrics"]) >= {"accuracy", "log_loss", "net_return"}
        assert (await client.get("/api/ai/models/00000000-0000-0000-0000-000000000000")).status_code == 404
        assert (await client.get("/ready")).json()["components"]["signals"]["status"] == "up"


async def test_promotion_event_reloads_the_champion(with_champion: Settings) -> None:
    container = bootstrap(with_champion)
    async with running(container):
        container.signals.champion = None
        container.bus.publish(
            ModelPromoted(kind="ensemble", candidate_id="x", previous_champion_id=None, promoted=True, reason="test")
        )
        await container.bus.drain()
        assert container.signals.champion is not None


async def test_signal_sizes_only_with_a_leverage(make_settings: Callable[..., Settings]) -> None:
    async with running(bootstrap(make_settings())) as client:
        body = (await client.post("/api/ai/signal", json={"symbol": "ETHUSDT", "as_of": "2024-03-05T00:00:00Z"})).json()
        assert body["side"] != "HOLD", "pick an as_of where the momentum rule takes a side"
        assert body["sizing"]["notional"] is None and body["sizing"]["skipped_reason"].startswith("LEVERAGE_MISSING")
        signal = (
            await client.post(
                "/api/ai/signal",
                json={"symbol": "ETHUSDT", "as_of": "2024-03-05T00:00:00Z", "leverage": 2, "stop_loss_pct": 1.5},
            )
        ).json()
        sized = signal["sizing"]
        assert sized["source"] == "kelly" and sized["leverage"] == "2"
        assert 0 < float(sized["notional"]) <= 1000  # within NORMAL's position cap
        # rounded as the fill is: a whole number of 0.001 ETH, worth quantity × price
        quantity, price = Decimal(sized["quantity"]), Decimal(repr(signal["price"]))
        assert quantity == quantity.quantize(Decimal("0.001")) and Decimal(sized["notional"]) == quantity * price
        too_high = await client.post("/api/ai/signal", json={"symbol": "ETHUSDT", "leverage": 500})
        assert too_high.status_code == 422


async def test_a_trained_sizing_policy_is_used(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    from app.domains.sizing.policy import SizingPolicy, replay_episodes

    episodes = await replay_episodes(ReplayMarketData(), AS_OF_MS - 60 * 86_400_000, AS_OF_MS)
    policy = SizingPolicy()
    policy.train_on_episodes(episodes, epochs=5)
    policy.save(tmp_path / "models" / "sizing")
    async with running(bootstrap(make_settings(model_dir=str(tmp_path / "models")))) as client:
        sized = (
            await client.post(
                "/api/ai/signal", json={"symbol": "ETHUSDT", "as_of": "2024-03-05T00:00:00Z", "leverage": 2}
            )
        ).json()["sizing"]
        assert sized["source"] == "policy" and 0.25 <= sized["multiplier"] <= 1.5


async def test_universe_ranking(make_settings: Callable[..., Settings]) -> None:
    async with running(bootstrap(make_settings())) as client:
        client.headers.pop("X-API-Key", None)  # a read: no key needed
        body = (await client.get("/api/ai/universe", params={"top_n": 3, "as_of": "2024-06-01T00:00:00Z"})).json()
        assert len(body["scores"]) == 5 and len(body["selected"]) == 3
        assert body["selected"] == [s["symbol"] for s in body["scores"][:3]]
        scores = [s["score"] for s in body["scores"]]
        assert scores == sorted(scores, reverse=True)
        # candles for BNB and SOL but no exchange metadata; LTC and TRX are tradable but have no candles
        assert body["excluded"] == [
            {"symbol": "BNB/USDT:USDT", "reason": NOT_TRADABLE},
            {"symbol": "LTC/USDT:USDT", "reason": NO_MARKET_DATA},
            {"symbol": "SOL/USDT:USDT", "reason": NOT_TRADABLE},
            {"symbol": "TRX/USDT:USDT", "reason": NO_MARKET_DATA},
        ]


async def test_every_universe_symbol_gets_a_signal_and_a_trade(make_settings: Callable[..., Settings]) -> None:
    """What the universe offers, the signal route answers and POST /trades opens (or denies with a reason)."""
    async with running(bootstrap(make_settings(accept_fallback_signals=True))) as client:
        universe = (await client.get("/api/ai/universe", params={"top_n": 100})).json()
        assert len(universe["selected"]) == 5
        for symbol in universe["selected"]:
            signal = (await client.post("/api/ai/signal", json={"symbol": symbol, "leverage": 2})).json()
            sizing = signal["sizing"]
            if sizing["notional"] is None:
                assert sizing["skipped_reason"], sizing
                continue
            trade = await client.post(
                "/trades",
                json={
                    "symbol": symbol,
                    "side": "LONG" if signal["side"] == "HOLD" else signal["side"],
                    "notional": sizing["notional"],
                    "leverage": sizing["leverage"],
                    "price": signal["price"],
                    "confidence": 0.99,
                },
            )
            assert trade.status_code == 201, trade.text
            assert Decimal(trade.json()["trade"]["quantity"]) == Decimal(sizing["quantity"])


async def test_a_proposed_size_is_never_refused_for_its_size(make_settings: Callable[..., Settings]) -> None:
    """Property: over random offered symbols, prices, equities, profiles and leverages, a size proposed by the
    service, sent to POST /trades with the same price, is filled at its own quantity (201) or denied by
    RiskGuard (403, the live account is not the random one): never a 422."""
    rng = np.random.default_rng(31)
    container = bootstrap(make_settings())
    async with running(container) as client:
        symbols = ["ADA/USDT:USDT", "BTC/USDT:USDT", "DOGE/USDT:USDT", "ETH/USDT:USDT", "XRP/USDT:USDT"]
        seen: dict[int, int] = {}
        below = 0
        for _ in range(150):
            symbol = symbols[int(rng.integers(len(symbols)))]
            price = round(float(10 ** rng.uniform(-2, 5.3)), int(rng.integers(1, 9)))
            if price <= 0:
                continue
            side = "LONG" if rng.random() < 0.5 else "SHORT"
            signal = Signal(
                symbol,
                side,
                float(rng.uniform(0.55, 1)),
                "ensemble",
                None,
                None,
                [],
                datetime.now(UTC),
                None,
                price,
                0.005,
            )
            profile = DEFAULT_PROFILES[list(RiskMode)[int(rng.integers(len(RiskMode)))]]
            leverage = Decimal(int(rng.integers(1, int(profile.max_leverage) + 1)))
            equity = Decimal(repr(round(float(10 ** rng.uniform(1, 6)), 2)))
            decision = container.sizing.size(
                signal,
                equity=equity,
                used_margin=Decimal(0),
                open_notional=Decimal(0),
                pnl_trend=0.0,
                limits=stack(profile_layer(profile)),
                leverage=leverage,
                stop_distance_pct=None,
                assumed_stop_pct=container.guard.config.assumed_stop_distance_pct,
            )
            if decision.notional is None:
                below += decision.skipped_reason is not None and decision.skipped_reason.startswith("BELOW_EXCHANGE")
                continue
            body = {
                "symbol": symbol,
                "side": side,
                "notional": str(decision.notional),
                "leverage": str(leverage),
                "price": price,
                "confidence": signal.confidence,
            }
            response = await client.post("/trades", json=body)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code in (201, 403), (body, response.text)
            if response.status_code == 201:
                assert Decimal(response.json()["trade"]["quantity"]) == decision.quantity
        assert seen.get(201, 0) > 10 and below > 10, (seen, below)


async def test_a_size_below_the_minimum_is_no_trade(make_settings: Callable[..., Settings]) -> None:
    # 300 USDT of equity proposes a few USDT: below 0.001 BTC at 2024 prices, so no trade, with the minimum
    async with running(bootstrap(make_settings(paper_starting_balance=Decimal(300)))) as client:
        signal = (
            await client.post(
                "/api/ai/signal", json={"symbol": "BTCUSDT", "as_of": "2024-03-05T00:00:00Z", "leverage": 2}
            )
        ).json()
        assert signal["side"] != "HOLD"
        sizing = signal["sizing"]
        assert (sizing["notional"], sizing["quantity"], sizing["leverage"]) == (None, None, None)
        assert sizing["skipped_reason"].startswith("BELOW_EXCHANGE_MINIMUM") and "0.001" in sizing["skipped_reason"]
