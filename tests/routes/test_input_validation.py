"""Every string and number from outside is checked at the edge: 422 naming the field, nothing stored.

Control characters (NUL, C0, DEL, C1) and lone surrogates in bodies, query and path parameters and
the X-Actor header; infinite, huge, over-precise and boolean numbers; unbounded pagination.
"""

import json
from typing import Any

import httpx
import pytest

from app.bootstrap import Container
from app.core.validation import MAX_OFFSET
from tests.support import trade_body

Api = tuple[httpx.AsyncClient, Container]
REASON = "operator reason"
# Characters PostgreSQL or UTF-8 refuse, and invisible ones that would forge log or audit lines.
BAD_CHARS = ["\x00", "\x01", "\n", "\x1b", "\x7f", "\x85", "\x9f", "\ud800"]
# Query strings, paths and headers arrive as bytes: no lone surrogate can be sent there.
BAD_URL_CHARS = ["\x00", "\x01", "\n", "\x1b", "\x7f"]


def _raw(body: dict[str, Any]) -> dict[str, Any]:
    """Request kwargs sending `body` as JSON text exactly as written (lone surrogates escaped)."""
    return {"content": json.dumps(body).encode(), "headers": {"Content-Type": "application/json"}}


def assert_names(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["error"] in ("validation_error", "invalid_request"), payload
    assert field in payload["detail"], payload
    if payload["error"] == "validation_error":
        assert any(e["loc"][-1] == field for e in payload["errors"]), payload


# (method, path, body with the bad value at "{bad}", field) for every string in a request body.
BODY_STRINGS: list[tuple[str, str, dict[str, Any], str]] = [
    ("POST", "/trades", trade_body(symbol="BTC{bad}USDT"), "symbol"),
    ("POST", "/trades", trade_body(source="ens{bad}emble"), "source"),
    ("POST", "/trades", trade_body(client_order_id="id-{bad}-1"), "client_order_id"),
    ("POST", "/api/v2/policy/risk-mode", {"mode": "DEFENSIVE", "reason": "why{bad}"}, "reason"),
    ("PATCH", "/api/v2/policy/risk-profile", {"max_open_positions": 3, "reason": "why{bad}"}, "reason"),
    ("POST", "/api/v2/policy/risk-profile/reset", {"reason": "why{bad}"}, "reason"),
    ("POST", "/api/v2/risk/kill-switch", {"active": True, "reason": "why{bad}"}, "reason"),
    ("PUT", "/api/v2/risk/blocklist/BTCUSDT", {"reason": "why{bad}"}, "reason"),
    ("POST", "/api/v2/safety/reset", {"reason": "why{bad}"}, "reason"),
    ("POST", "/api/clm/retrain", {"reason": "why{bad}"}, "reason"),
    ("POST", "/api/ai/signal", {"symbol": "BTC{bad}USDT", "leverage": 2}, "symbol"),
]


def _fill(body: dict[str, Any], bad: str) -> dict[str, Any]:
    return {k: v.replace("{bad}", bad) if isinstance(v, str) else v for k, v in body.items()}


@pytest.mark.parametrize("bad", BAD_CHARS, ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize(
    ("method", "path", "body", "field"), BODY_STRINGS, ids=[f"{m} {p} {f}" for m, p, _, f in BODY_STRINGS]
)
async def test_control_characters_in_body_strings_are_422_naming_the_field(
    api: Api, method: str, path: str, body: dict[str, Any], field: str, bad: str
) -> None:
    client, container = api
    response = await client.request(method, path, **_raw(_fill(body, bad)))
    assert_names(response, field)
    assert container.policy_store.snapshot.mode.value == "NORMAL"
    assert container.policy_store.snapshot.state.kill_switch is None
    assert (await client.get("/trades")).json()["total"] == 0


QUERY_STRINGS: list[tuple[str, str, dict[str, str], str]] = [
    ("GET", "/api/v2/policy/history", {"kind": "RISK{bad}MODE"}, "kind"),
    ("GET", "/trades", {"symbol": "BTC{bad}USDT"}, "symbol"),
    ("GET", "/api/ai/models", {"kind": "xgb{bad}oost"}, "kind"),
    ("GET", "/api/ai/models", {"status": "champ{bad}ion"}, "status"),
    ("DELETE", "/api/v2/risk/blocklist/BTCUSDT", {"reason": "why{bad}"}, "reason"),
]


@pytest.mark.parametrize("bad", BAD_URL_CHARS, ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize(
    ("method", "path", "params", "field"), QUERY_STRINGS, ids=[f"{m} {p} {f}" for m, p, _, f in QUERY_STRINGS]
)
async def test_control_characters_in_query_parameters_are_422_naming_the_field(
    api: Api, method: str, path: str, params: dict[str, str], field: str, bad: str
) -> None:
    client, _ = api
    response = await client.request(method, path, params=_fill(params, bad))
    assert_names(response, field)


@pytest.mark.parametrize("bad", ["%00", "%01", "%0A", "%1B", "%7F", "%C2%85"])
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_control_characters_in_the_symbol_path_are_refused(api: Api, method: str, bad: str) -> None:
    client, container = api
    kwargs: dict[str, Any] = {"json": {"reason": REASON}} if method == "PUT" else {}
    response = await client.request(method, f"/api/v2/risk/blocklist/BTC{bad}USDT", **kwargs)
    if bad == "%0A":
        assert response.status_code == 404  # the router's path pattern stops at a newline: no route
    else:
        assert_names(response, "symbol")
    assert container.policy_store.snapshot.state.blocked_symbols == {}


@pytest.mark.parametrize("bad", ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\x9f"])
async def test_control_characters_in_x_actor_are_422(api: Api, bad: str) -> None:
    client, container = api
    headers = {b"X-Actor": f"ops{bad}team".encode("latin-1")}  # header bytes are read as Latin-1
    response = await client.post(
        "/api/v2/policy/risk-mode", json={"mode": "DEFENSIVE", "reason": REASON}, headers=headers
    )
    assert_names(response, "x-actor")
    assert container.policy_store.snapshot.mode.value == "NORMAL"


async def test_x_actor_length_is_bounded_and_a_good_one_is_audited(api: Api) -> None:
    client, _ = api
    too_long = await client.post(
        "/api/v2/policy/risk-mode", json={"mode": "DEFENSIVE", "reason": REASON}, headers={"X-Actor": "a" * 129}
    )
    assert_names(too_long, "x-actor")
    ok = await client.post(
        "/api/v2/policy/risk-mode", json={"mode": "DEFENSIVE", "reason": REASON}, headers={"X-Actor": "ops-team"}
    )
    assert ok.status_code == 200, ok.text
    history = (await client.get("/api/v2/policy/history")).json()["items"]
    assert history[0]["actor"] == "ops-team"


# Numbers --------------------------------------------------------------------------------------

BAD_PROFILE_NUMBERS: list[tuple[str, str]] = [
    ("position_size_cap_usd", '"1e400"'),
    ("position_size_cap_usd", "1e400"),
    ("position_size_cap_usd", '"Infinity"'),
    ("position_size_cap_usd", "Infinity"),
    ("position_size_cap_usd", "NaN"),
    ("position_size_cap_usd", '"1000000000001"'),
    ("position_size_cap_usd", "true"),
    ("max_risk_pct_per_trade", '"1e-400"'),
    ("max_leverage", "126"),
    ("max_leverage", "true"),
    ("max_open_positions", "true"),
    ("max_open_positions", "3.0"),
    ("max_open_positions", '"3"'),
    ("max_open_positions", "1000001"),
    ("max_open_positions", "99999999999999999999999"),
    ("allow_new_positions", "1"),
    ("allow_new_positions", '"yes"'),
]


@pytest.mark.parametrize(("field", "raw"), BAD_PROFILE_NUMBERS, ids=[f"{f}={r}" for f, r in BAD_PROFILE_NUMBERS])
async def test_profile_numbers_out_of_range_or_of_the_wrong_type_are_422(api: Api, field: str, raw: str) -> None:
    client, _ = api
    content = f'{{"{field}": {raw}, "reason": "{REASON}"}}'.encode()
    response = await client.patch(
        "/api/v2/policy/risk-profile", content=content, headers={"Content-Type": "application/json"}
    )
    assert_names(response, field)
    profile = (await client.get("/api/v2/policy/risk-profile")).json()
    assert profile["position_size_cap_usd"] == 1000 and profile["overridden_fields"] == []


async def test_the_largest_cap_is_stored_finite_and_trades_still_work(api: Api) -> None:
    client, _ = api
    response = await client.patch(
        "/api/v2/policy/risk-profile", json={"position_size_cap_usd": "1e12", "reason": REASON}
    )
    assert response.status_code == 200, response.text
    assert response.json()["position_size_cap_usd"] == 1e12
    assert (await client.post("/trades", json=trade_body())).status_code == 201


BAD_TRADE_NUMBERS: list[tuple[str, dict[str, Any], str]] = [
    ("notional", {"notional": "1e15", "price": "1e-11", "stop_loss": None}, "notional"),
    ("notional true", {"notional": True}, "notional"),
    ("notional 1e400", {"notional": "1e400"}, "notional"),
    ("leverage true", {"leverage": True}, "leverage"),
    ("leverage above 1000", {"leverage": "1001"}, "leverage"),
    ("price Infinity", {"price": "Infinity"}, "price"),
    ("price NaN", {"price": "NaN"}, "price"),
    ("price over-precise", {"price": "60000.0000000000001"}, "price"),
    ("price below 1e-12", {"price": "1e-13", "stop_loss": None}, "price"),
    ("stop_loss 1e400", {"stop_loss": "1e400"}, "stop_loss"),
    ("confidence true", {"confidence": True}, "confidence"),
    # In range for the schema, but below the market's price tick: no fill at a price of 0.
    ("price below the tick", {"notional": "1e12", "price": "1e-12", "stop_loss": None}, "price"),
]


@pytest.mark.parametrize(("_", "changes", "field"), BAD_TRADE_NUMBERS, ids=[n for n, _, _ in BAD_TRADE_NUMBERS])
async def test_trade_numbers_out_of_range_are_422_naming_the_field(
    api: Api, _: str, changes: dict[str, Any], field: str
) -> None:
    client, _container = api
    response = await client.post("/trades", json=trade_body(**changes))
    assert_names(response, field)
    assert (await client.get("/api/v2/risk/decisions")).json()["total"] == 0


async def test_raw_1e400_literal_is_422(api: Api) -> None:
    client, _ = api
    raw = b'{"symbol":"BTCUSDT","side":"LONG","notional":1e400,"leverage":2,"price":60000,"confidence":0.8}'
    response = await client.post("/trades", content=raw, headers={"Content-Type": "application/json"})
    assert_names(response, "notional")


async def test_a_risk_beyond_decimal_range_is_422_naming_the_fields(api: Api) -> None:
    """A SHORT at a tiny price with a stop 1e14 times higher: the risk is too large to compute exactly."""
    client, _ = api
    body = trade_body(symbol="DOGEUSDT", side="SHORT", notional="1e12", price="0.00001", stop_loss="1e9")
    response = await client.post("/trades", json=body)
    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["error"] == "invalid_request"
    assert payload["fields"] == ["notional", "price", "stop_loss"]
    assert "stop_loss" in payload["detail"]
    assert (await client.get("/api/v2/risk/decisions")).json()["total"] == 0
    assert (await client.post("/trades", json=trade_body())).status_code == 201


async def test_close_price_is_bounded(api: Api) -> None:
    client, _ = api
    trade = (await client.post("/trades", json=trade_body())).json()["trade"]
    for bad in ("1e400", "Infinity", "0", "1e10", True):
        assert_names(await client.post(f"/trades/{trade['id']}/close", json={"price": bad}), "price")
    assert (await client.post(f"/trades/{trade['id']}/close", json={"price": "60500"})).status_code == 200


async def test_signal_numbers_are_bounded(api: Api) -> None:
    client, _ = api
    for field, bad in (("leverage", "126"), ("leverage", True), ("leverage", "1e400"), ("stop_loss_pct", "1e-9")):
        response = await client.post("/api/ai/signal", json={"symbol": "BTCUSDT", field: bad})
        assert_names(response, field)


LISTS = ["/trades", "/api/v2/risk/decisions", "/api/v2/policy/history", "/api/ai/models"]


@pytest.mark.parametrize("path", LISTS)
async def test_pagination_is_bounded_on_every_list(api: Api, path: str) -> None:
    client, _ = api
    for params, field in (
        ({"offset": 2**63}, "offset"),
        ({"offset": MAX_OFFSET + 1}, "offset"),
        ({"offset": -1}, "offset"),
        ({"offset": "1e3"}, "offset"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": 2**64}, "limit"),
    ):
        assert_names(await client.get(path, params=params), field)
    page = await client.get(path, params={"offset": MAX_OFFSET, "limit": 500})
    assert page.status_code == 200, page.text
    assert page.json()["items"] == [] and page.json()["offset"] == MAX_OFFSET
