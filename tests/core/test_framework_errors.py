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
    assert response.headers["allow"]


async def test_a_body_that_is_not_text_is_a_json_400(api: API) -> None:
    client, _ = api
    raw = str(trade_body()).encode()[:-1] + b"\xff\xfe"
    response = await client.post("/trades", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 422)
    body = response.json()
    assert body["error"] in ("bad_request", "validation_error") and body["trace_id"] == response.headers["x-trace-id"]
