"""GET /api/risk/assessment on the embedded app: insufficient data, recomputation on TradeClosed and on the timer."""

import asyncio
from collections.abc import Callable
from decimal import Decimal

import httpx
import numpy as np
import pytest

from app.bootstrap import Container, bootstrap
from app.core.settings import Settings
from app.domains.riskbrain.metrics import RiskBrainConfig, historical_var_es, parametric_var_es
from tests.support import FakeClock, running, trade_body

Api = tuple[httpx.AsyncClient, Container]

# Close prices around the 60,000 entry: a fixed mix of gains and losses.
MOVES = [0.012, -0.008, 0.004, -0.021, 0.015, -0.003, 0.007, -0.011, 0.002, -0.016] * 4


async def round_trip(client: httpx.AsyncClient, move: float, i: int) -> None:
    opened = await client.post("/trades", json=trade_body(client_order_id=f"rb-{i}"))
    assert opened.status_code == 201, opened.text
    price = str(round(60000 * (1 + move), 1))
    closed = await client.post(f"/trades/{opened.json()['trade']['id']}/close", json={"price": price})
    assert closed.status_code == 200, closed.text


async def test_no_history_is_insufficient_data_without_numbers(api: Api) -> None:
    client, _ = api
    response = await client.get("/api/risk/assessment")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "insufficient_data"
    assert (body["samples"], body["samples_needed"]) == (0, 30)
    assert body["score"] is None and body["level"] is None and body["components"] is None
    assert body["returns"]["historical"] == {"var_95": None, "var_99": None, "es_95": None, "es_99": None}
    assert body["returns"]["skewness"] is None and body["returns"]["hill_tail_index"] is None
    assert body["exposure"]["equity"] == "10000" and body["exposure"]["open_positions"] == 0
    assert body["trigger"] == "request"
    assert {name for name, a in body["actions"].items() if a["active"]} == set()


async def test_closed_trades_recompute_and_the_figures_match_the_equity_curve(api: Api) -> None:
    client, container = api
    equities = [Decimal(10000)]
    for i, move in enumerate(MOVES[:31]):
        await round_trip(client, move, i)
        equities.append(Decimal((await client.get("/api/v2/account")).json()["equity"]))
    await container.bus.drain()
    latest = container.riskbrain.latest
    assert latest is not None and latest.trigger == "trade_closed"
    assert 1 <= container.riskbrain.runs <= 31  # coalesced, never more than one run per close

    opened = await client.post("/trades", json=trade_body(notional="400", client_order_id="rb-open"))
    assert opened.status_code == 201
    await container.riskbrain.refresh("request")
    body = (await client.get("/api/risk/assessment")).json()
    assert body["status"] == "ok" and body["samples"] == 31
    curve = np.array([float(e) for e in equities])
    returns = curve[1:] / curve[:-1] - 1
    assert body["returns"]["historical"]["var_99"] == pytest.approx(historical_var_es(-returns, 0.99)[0])
    assert body["returns"]["historical"]["es_95"] == pytest.approx(historical_var_es(-returns, 0.95)[1])
    var95, es99 = (
        parametric_var_es(returns.mean(), returns.std(ddof=1), 0.95)[0],
        parametric_var_es(returns.mean(), returns.std(ddof=1), 0.99)[1],
    )
    assert body["returns"]["parametric"]["var_95"] == pytest.approx(var95)
    assert body["returns"]["parametric"]["es_99"] == pytest.approx(es99)
    assert body["returns"]["monte_carlo"]["var_95"] == pytest.approx(var95, rel=0.05)
    exposure = body["exposure"]
    assert exposure["open_positions"] == 1 and exposure["largest_symbol"] == "BTC/USDT:USDT"
    assert exposure["hhi"] == 1.0 and exposure["position_leverage"] == pytest.approx(2.0)
    assert exposure["gross_exposure"] == pytest.approx(float(Decimal(exposure["open_notional"]) / Decimal(
        exposure["equity"])))  # fmt: skip
    assert body["score"] == pytest.approx(sum(c["points"] for c in body["components"]), abs=1e-3)
    assert body["level"] == "LOW"
    assert set(body["actions"]) == {"should_reduce_exposure", "should_tighten_stops", "should_pause_trading"}
    assert body["method"]["mc_paths"] == 100_000
    # The bundled candles end long before the test clock: the market part says so and shows no figure.
    market = body["market"]
    assert market["status"] in {"ok", "insufficient_data", "unavailable"}
    if market["status"] != "ok":
        assert market["var_99_usdt"] is None and market["detail"]


async def test_the_timer_recomputes(make_settings: Callable[..., Settings], clock: FakeClock) -> None:
    container = bootstrap(make_settings(), clock=clock, riskbrain_config=RiskBrainConfig(interval_seconds=0.05))
    async with running(container):
        for _ in range(100):
            if container.riskbrain.latest is not None:
                break
            await asyncio.sleep(0.02)
        latest = container.riskbrain.latest
        assert latest is not None and latest.trigger == "timer"


async def test_concurrent_refreshes_coalesce_and_compute_in_a_thread(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    client, container = api
    for i, move in enumerate(MOVES[:30]):
        await round_trip(client, move, i)
    await container.bus.drain()
    threaded: list[str] = []
    original = asyncio.to_thread

    async def recording(func: Callable[..., object], /, *args: object, **kwargs: object) -> object:
        threaded.append(getattr(func, "__name__", ""))
        return await original(func, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", recording)
    before = container.riskbrain.runs
    results = await asyncio.gather(*(container.riskbrain.refresh("request") for _ in range(10)))
    assert container.riskbrain.runs - before == 2  # one running, one more for everything that came meanwhile
    assert len({id(r) for r in results}) == 2
    assert threaded.count("assess") == 2


async def test_a_failing_timer_keeps_running_and_logs_once_per_cause(
    make_settings: Callable[..., Settings], clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    container = bootstrap(make_settings(), clock=clock, riskbrain_config=RiskBrainConfig(interval_seconds=0.01))
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    container.riskbrain._inputs = broken  # type: ignore[method-assign,assignment]
    async with running(container):
        for _ in range(200):
            if calls >= 5:
                break
            await asyncio.sleep(0.01)
    assert calls >= 5 and container.riskbrain.latest is None
    assert capsys.readouterr().out.count('"event": "riskbrain_refresh_failed"') == 1  # JSON log lines
