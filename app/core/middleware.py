"""Pure ASGI middleware at the edge: trace id per request, security headers, a JSON answer for an
exception no handler took, JSON access log, latency histogram.

It runs on every request, so it does little, in one layer: no Request object, cached metric
children, and the access-log record is built only when INFO is enabled.
"""

import logging
import random
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.context import trace_id_var
from app.core.metrics import HTTP_LATENCY
from app.core.security import with_security_headers

logger = logging.getLogger("app.http")
_VALID_TRACE = re.compile(rb"^[A-Za-z0-9\-_.]{8,64}$")
_children: dict[tuple[str, str, int], Any] = {}


def _histogram(method: str, route: str, status: int) -> Any:
    key = (method, route, status)
    child = _children.get(key)
    if child is None:
        child = _children[key] = HTTP_LATENCY.labels(method, route, str(status))
    return child


ErrorResponder = Callable[[Exception], ASGIApp]


class TraceMiddleware:
    """The outermost user middleware. `on_error` answers an exception that no handler took (it
    would otherwise reach Starlette's ServerErrorMiddleware, outside this one: no X-Trace-Id, no
    trace id in its log line) unless the response had already started."""

    def __init__(self, app: ASGIApp, on_error: ErrorResponder | None = None) -> None:
        self.app = app
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace_id = None
        for name, value in scope["headers"]:
            if name == b"x-trace-id" and _VALID_TRACE.match(value):
                trace_id = value.decode()
                break
        if trace_id is None:
            trace_id = f"{random.getrandbits(128):032x}"  # unique, not secret: no syscall
        token = trace_id_var.set(trace_id)
        header = (b"x-trace-id", trace_id.encode())
        started = time.perf_counter()
        status = 500
        responded = False  # the response has started: an error can no longer be turned into one

        async def send_with_trace(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                message["headers"] = with_security_headers([*message.get("headers", ()), header])
            await send(message)

        try:
            try:
                await self.app(scope, receive, send_with_trace)
            except Exception as exc:
                if responded or self.on_error is None:
                    raise
                await self.on_error(exc)(scope, receive, send_with_trace)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            _histogram(scope["method"], route, status).observe(elapsed)
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "http_request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                    },
                )
            trace_id_var.reset(token)
