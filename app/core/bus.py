"""In-process event bus.

Events are immutable facts published after the database commit. Every handler runs in its
own task: a failing or slow handler is logged with the event id and counted, and never
blocks the publisher or the other handlers. Safety checks are never event handlers.
"""

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from app.core.clock import utcnow
from app.core.context import trace_id_var
from app.core.metrics import EVENT_HANDLER_FAILURES

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Event:
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    occurred_at: datetime = field(default_factory=utcnow)
    trace_id: str | None = field(default_factory=trace_id_var.get)


Handler = Callable[[Event], Awaitable[None]]
HandlerTable = dict[type[Event], list[Handler]]


class EventBus:
    def __init__(self, handlers: HandlerTable | None = None) -> None:
        self._handlers: HandlerTable = handlers or {}
        self._pending: set[asyncio.Task[None]] = set()
        self.failures = 0

    def subscribe(self, event_type: type[Event], handler: Handler) -> None:
        self._handlers.setdefault(event_type, []).append(handler)

    def publish(self, event: Event) -> None:
        for handler in self._handlers.get(type(event), ()):
            task = asyncio.get_running_loop().create_task(self._run(handler, event))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def publish_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.publish(event)

    async def _run(self, handler: Handler, event: Event) -> None:
        token = trace_id_var.set(event.trace_id)
        try:
            await handler(event)
        except Exception:
            self.failures += 1
            name = getattr(handler, "__qualname__", repr(handler))
            EVENT_HANDLER_FAILURES.labels(event=type(event).__name__, handler=name).inc()
            logger.exception(
                "event_handler_failed",
                extra={
                    "event_id": event.event_id,
                    "event_type": type(event).__name__,
                    "handler": name,
                },
            )
        finally:
            trace_id_var.reset(token)

    async def drain(self, wait_seconds: float = 5.0) -> None:
        """Wait for handlers still running (shutdown, tests)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=wait_seconds)
