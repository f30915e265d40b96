"""On PostgreSQL, where these inputs used to be 500s: NUL in stored or queried strings, an infinite
profile cap that broke every later trade (JSON refuses Infinity), offsets beyond BIGINT."""

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from app.bootstrap import bootstrap
from app.core.settings import Settings
from app.core.validation import MAX_OFFSET
from tests.routes.test_input_validation import BODY_STRINGS, LISTS, QUERY_STRINGS, REASON, _fill, _raw, assert_names
from tests.support import running, trade_body

pytestmark = pytest.mark.postgres


@pytest.fixture
async def client(pg_url: str, make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with running(bootstrap(make_settings(database_url=pg_url))) as http:
        yield http


async def test_nul_in_every_string_input_is_422_and_the_service_keeps_working(client: httpx.AsyncClient) -> None:
    for method, path, body, field in BODY_STRINGS:
        assert_names(await client.request(method, path, **_raw(_fill(body, "\x00"))), field)
    for method, path, params, field in QUERY_STRINGS:
        assert_names(await client.request(method, path, params=_fill(params, "\x00")), field)
    assert_names(await client.put("/api/v2/risk/blocklist/BTC%00USDT", json={"reason": REASON}), "symbol")
    assert_names(await client.delete("/api/v2/risk/blocklist/BTC%00USDT"), "symbol")
    headers = {"X-Actor": "ops\x00team"}
    assert_names(
        await client.post("/api/v2/risk/kill-switch", json={"active": True, "reason": REASON}, headers=headers),
        "x-actor",
    )
    assert (await client.post("/trades", json=trade_body(source="ensemble"))).status_code == 201
    assert (await client.get("/api/v2/policy/history", params={"kind": "RISK_MODE"})).status_code == 200
    assert (await client.get("/trades", params={"symbol": "BTCUSDT"})).json()["total"] == 1


async def test_an_infinite_cap_is_refused_and_trades_keep_working(client: httpx.AsyncClient) -> None:
    for raw in ('"1e400"', "1e400", '"Infinity"', "true"):
        content = f'{{"position_size_cap_usd": {raw}, "reason": "{REASON}"}}'.encode()
        response = await client.patch(
            "/api/v2/policy/risk-profile", content=content, headers={"Content-Type": "application/json"}
        )
        assert_names(response, "position_size_cap_usd")
    assert (await client.post("/trades", json=trade_body())).status_code == 201
    largest = await client.patch(
        "/api/v2/policy/risk-profile", json={"position_size_cap_usd": "1e12", "reason": REASON}
    )
    assert largest.status_code == 200 and largest.json()["position_size_cap_usd"] == 1e12
    opened = await client.post("/trades", json=trade_body())
    assert opened.status_code == 201, opened.text
    assert opened.json()["decision"]["limits"]["profile"]["position_size_cap_usd"] == 1e12


async def test_offsets_beyond_the_bound_are_422_and_the_bound_itself_works(client: httpx.AsyncClient) -> None:
    for path in LISTS:
        assert_names(await client.get(path, params={"offset": 2**63}), "offset")
        page = await client.get(path, params={"offset": MAX_OFFSET})
        assert page.status_code == 200, page.text


async def test_a_nul_among_concurrent_trades_fails_alone(client: httpx.AsyncClient) -> None:
    bodies: list[dict[str, Any]] = [trade_body(notional="100", client_order_id=f"ok-{i}") for i in range(40)]
    bodies.insert(20, trade_body(notional="100", source="ens\x00emble"))
    await client.patch("/api/v2/policy/risk-profile", json={"max_open_positions": 100, "reason": REASON})
    responses = await asyncio.gather(*(client.post("/trades", **_raw(b)) for b in bodies))
    poisoned = responses.pop(20)
    assert_names(poisoned, "source")
    assert [r.status_code for r in responses] == [201] * 40
    assert (await client.get("/trades")).json()["total"] == 40
