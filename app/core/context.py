"""Per-request context (trace id) carried through logs, decisions and events."""

import uuid
from contextvars import ContextVar

trace_id_var: ContextVar[str | None] = ContextVar("trace_id", default=None)


def new_trace_id() -> str:
    return uuid.uuid4().hex


def current_trace_id() -> str:
    """The request's trace id, or a fresh one for work outside a request."""
    trace_id = trace_id_var.get()
    if trace_id is None:
        trace_id = new_trace_id()
        trace_id_var.set(trace_id)
    return trace_id
