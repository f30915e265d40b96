"""Pure ASGI middleware for HTTP hardening: security headers and a request body size limit.

Both run on every request, so they do little: headers are encoded once, the body limit reads
one request header and counts bytes, and neither builds a Request object.
"""

import json
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.context import current_trace_id

# JSON needs no sources at all; pages that need more (the docs) send their own policy.
DEFAULT_CSP: Final = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
_CSP = b"content-security-policy"
_HEADERS: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


_DEFAULT_CSP_HEADER: Final = (_CSP, DEFAULT_CSP.encode())


def with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` plus nosniff, DENY framing, no-referrer, and the strict CSP unless the response set
    its own (the docs pages do). Called by TraceMiddleware on every response start: one pass, no copies."""
    headers.extend(_HEADERS)
    for name, _ in headers:
        if name == _CSP or name.lower() == _CSP:
            return headers
    headers.append(_DEFAULT_CSP_HEADER)
    return headers


class _BodyTooLarge(Exception):
    """Raised from `receive` once the streamed body passes the limit."""


class BodySizeLimitMiddleware:
    """Refuses a request body over `max_body_bytes` with a JSON 413, before the app buffers it.

    A declared Content-Length over the limit is refused without reading anything. A body without
    one (chunked) is counted as it streams; once it passes the limit, `receive` raises, whatever
    the app was about to answer is dropped, and the 413 is sent instead.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    break
                if int(value) > limit:
                    await self._refuse(send)
                    return
                # Declared and within the limit: the server delivers no more than declared.
                await self.app(scope, receive, send)
                return
            if name == b"transfer-encoding":
                chunked = True
        if not chunked:  # neither header: no body (every GET), nothing to count
            await self.app(scope, receive, send)
            return

        received = 0
        too_large = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_large and not started:
                return  # the app's answer to a truncated body (e.g. a 400): the 413 replaces it
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            if started:
                raise
        if too_large and not started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "error": "payload_too_large",
                "detail": f"the request body exceeds {self.max_body_bytes} bytes (MAX_REQUEST_BODY_BYTES)",
                "trace_id": current_trace_id(),
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # The rest of the body is never read: the connection cannot be reused.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
