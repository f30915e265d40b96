"""Pure ASGI middleware: trace id per request, JSON access log, latency histogram."""

import logging
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.context import new_trace_id, trace_id_var
from app.core.metrics import HTTP_LATENCY

logger = logging.getLogger("app.http")
_VALID_TRACE = re.compile(r"^[A-Za-z0-9\-_.]{8,64}$")


class TraceMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-trace-id", b"").decode("latin-1")
        trace_id = incoming if _VALID_TRACE.match(incoming) else new_trace_id()
        token = trace_id_var.set(trace_id)
        started = time.perf_counter()
        status = 500

        async def send_with_trace(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-trace-id", trace_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            HTTP_LATENCY.labels(scope["method"], path, str(status)).observe(elapsed)
            logger.info(
                "http_request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
            trace_id_var.reset(token)
