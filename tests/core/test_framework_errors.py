"""The framework's own refusals answer in the app's error shape, with the trace id."""

from tests.support import trade_body

API = tuple


async def test_no_route_is_a_json_404_with_the_trace_id(api: API) -> None:
    client, _ = api
    response = await client.get("/no/such/route")
    body = response.json()
    assert response.status_code == 404
    assert (body["error"], body["detail"]) == ("not_found", "Not Found")
    assert body["trace_id"] == response.headers["x-trace-id"]


async def test_wrong_method_is_a_json_405_keeping_the_allow_header(api: API) -> None:
    client, _ = api
    response = await client.delete("/trades")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert set(response.headers["allow"].split(", ")) == {"GET", "POST"}  # every route at /trades


async def test_a_body_that_is_not_text_is_a_json_400(api: API) -> None:
    client, _ = api
    raw = str(trade_body()).encode()[:-1] + b"\xff\xfe"
    response = await client.post("/trades", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 422)
    body = response.json()
    assert body["error"] in ("bad_request", "validation_error") and body["trace_id"] == response.headers["x-trace-id"]


async def test_a_timestamp_is_iso_text_with_a_timezone(api: API) -> None:
    client, _ = api
    for as_of in ("0.5", "1700000000", "2026-11-30T12:00:00"):
        response = await client.get("/api/ai/universe", params={"as_of": as_of})
        assert response.status_code == 422 and "as_of" in response.json()["detail"], as_of
    trade = await client.post("/trades", json=trade_body(price_as_of=1700000000))
    assert trade.status_code == 422 and "price_as_of" in trade.json()["detail"]
