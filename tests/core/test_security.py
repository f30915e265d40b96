"""Security headers on every response; request bodies over MAX_REQUEST_BODY_BYTES are a JSON 413."""

import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from app.bootstrap import Container, bootstrap
from app.core.security import DEFAULT_CSP, BodySizeLimitMiddleware
from app.core.settings import Settings
from tests.support import running, trade_body

Api = tuple[httpx.AsyncClient, Container]
LIMIT = 1024


def assert_hardened(response: httpx.Response, csp: str | None = DEFAULT_CSP) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert len(response.headers.get_list("content-security-policy")) == 1
    if csp is not None:
        assert response.headers["content-security-policy"] == csp


@pytest.fixture
async def small(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a 1 KiB body limit."""
    async with running(bootstrap(make_settings(max_request_body_bytes=LIMIT))) as client:
        yield client


async def chunks(body: bytes, size: int = 100) -> AsyncIterator[bytes]:
    """A body streamed without Content-Length (chunked transfer)."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_headers_on_json_errors_and_docs(api: Api) -> None:
    client, _ = api
    assert_hardened(await client.get("/health"))
    assert_hardened(await client.get("/api/v2/policy/risk-profile"))
    assert_hardened(await client.get("/no-such-route"))  # 404
    invalid = await client.post("/trades", json={"symbol": "BTCUSDT"})
    assert invalid.status_code == 422
    assert_hardened(invalid)
    denied = await client.post("/api/v2/risk/kill-switch", json={"active": True}, headers={"X-API-Key": "wrong"})
    assert denied.status_code == 401
    assert_hardened(denied)
    for page in ("/docs", "/redoc"):
        docs = await client.get(page)
        # The docs pages keep their own, wider policy (their scripts and styles); only one is sent.
        assert_hardened(docs, csp=None)
        assert "script-src 'self'" in docs.headers["content-security-policy"]


async def test_a_declared_body_over_the_limit_is_refused_before_reading(small: httpx.AsyncClient) -> None:
    body = json.dumps(trade_body(client_order_id="x" * 40, padding="y" * LIMIT)).encode()
    response = await small.post("/trades", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    payload = response.json()
    assert payload["error"] == "payload_too_large"
    assert str(LIMIT) in payload["detail"]
    assert payload["trace_id"] == response.headers["x-trace-id"]
    assert response.headers["connection"] == "close"
    assert_hardened(response)
    assert (await small.get("/trades")).json()["items"] == []


async def test_a_chunked_body_over_the_limit_is_refused_while_streaming(small: httpx.AsyncClient) -> None:
    body = json.dumps(trade_body(padding="y" * 2 * LIMIT)).encode()
    request = small.build_request("POST", "/trades", content=chunks(body), headers={"Content-Type": "application/json"})
    assert "content-length" not in request.headers and request.headers["transfer-encoding"] == "chunked"
    response = await small.send(request)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert response.json()["trace_id"] == response.headers["x-trace-id"]
    assert_hardened(response)
    assert (await small.get("/trades")).json()["items"] == []


async def test_bodies_within_the_limit_pass(small: httpx.AsyncClient) -> None:
    opened = await small.post("/trades", json=trade_body())
    assert opened.status_code == 201, opened.text
    streamed = json.dumps(trade_body(client_order_id="streamed-1")).encode()
    assert len(streamed) < LIMIT
    response = await small.post("/trades", content=chunks(streamed, 16), headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text
    # Exactly at the limit is allowed (here: a body the validation then refuses on its merits).
    at_limit = b'{"symbol": "' + b"A" * (LIMIT - 14) + b'"}'
    assert len(at_limit) == LIMIT
    assert (
        await small.post("/trades", content=at_limit, headers={"Content-Type": "application/json"})
    ).status_code == 422
    over = at_limit[:-2] + b'A"}'
    assert (await small.post("/trades", content=over, headers={"Content-Type": "application/json"})).status_code == 413


async def test_the_default_limit_is_64_kib(api: Api) -> None:
    client, container = api
    assert container.settings.max_request_body_bytes == 64 * 1024
    ok = await client.post("/trades", content=b"{" + b" " * (64 * 1024 - 2) + b"}")
    assert ok.status_code == 422
    too_large = await client.post("/trades", content=b"{" + b" " * (64 * 1024 - 1) + b"}")
    assert too_large.status_code == 413


async def test_an_app_that_answers_after_the_limit_is_replaced_by_the_413() -> None:
    """Whatever the inner app does with the failed read (answer 400, or raise), the client sees the 413."""
    sent: list[Message] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            while (await receive()).get("more_body"):
                pass
        except Exception:
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"bad body"})
            raise

    messages = iter(
        [{"type": "http.request", "body": b"x" * 6, "more_body": True}, {"type": "http.request", "body": b"x" * 6}]
    )

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"transfer-encoding", b"chunked")]}
    await BodySizeLimitMiddleware(inner, max_body_bytes=10)(scope, receive, send)
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [413]
    assert json.loads(sent[-1]["body"])["error"] == "payload_too_large"
