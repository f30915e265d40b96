"""Pure ASGI middleware: trace id per request, JSON access log, latency histogram.

It runs on every request, so it does little: no Request object, cached metric children,
and the access-log record is built only when INFO is enabled.
"""

import logging
import random
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.context import trace_id_var
from app.core.metrics import HTTP_LATENCY

logger = logging.getLogger("app.http")
_VALID_TRACE = re.compile(rb"^[A-Za-z0-9\-_.]{8,64}$")
_children: dict[tuple[str, str, int], Any] = {}


def _histogram(method: str, route: str, status: int) -> Any:
    key = (method, route, status)
    child = _children.get(key)
    if child is None:
        child = _children[key] = HTTP_LATENCY.labels(method, route, str(status))
    return child


class TraceMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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

        async def send_with_trace(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
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
