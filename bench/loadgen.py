"""A small asyncio HTTP/1.1 keep-alive load generator over raw sockets.

Why not httpx: on 2 cores a full-featured Python client spends more CPU per request than
the server under test and becomes the bottleneck. Here every request is pre-built bytes
(or built by a cheap factory), and a response is parsed just enough to find its status
and its end (Content-Length or chunked).

Each connection runs closed-loop (send, wait for the full response, send again). A run
has a warm-up phase (not recorded) and a measured phase bounded by duration and count.
"""

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

RequestFactory = Callable[[int], bytes]
T = TypeVar("T")

MAX_ERRORS_KEPT = 20


def build_request(
    method: str,
    path: str,
    host: str,
    port: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> bytes:
    """Raw HTTP/1.1 request bytes (keep-alive)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_response(reader: asyncio.StreamReader) -> tuple[Response, bool]:
    """Read one response; return it and whether the server will close the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    status_line = lines[0]
    if not status_line.startswith(b"HTTP/1."):
        raise ValueError(f"bad status line {status_line[:80]!r}")
    status = int(status_line[9:12])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    closes = headers.get("connection", "").lower() == "close" or status_line.startswith(b"HTTP/1.0")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif status in (204, 304) or 100 <= status < 200:
        body = b""
    else:
        body = await reader.read()
        closes = True
    return Response(status, headers, body), closes


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def request_once(host: str, port: int, raw: bytes, limit_s: float = 10.0) -> Response:
    """One request on a fresh connection (setup calls, health polling)."""
    async with asyncio.timeout(limit_s):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(raw)
            response, _ = await read_response(reader)
            return response
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@dataclass
class LoadResult:
    """Measured phase only, except `warmup_statuses`."""

    connections: int
    duration_s: float
    latencies_ns: list[int] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    warmup_statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    client_cpu_pct: float = 0.0
    server_cpu_pct: float = 0.0
    machine_busy_pct: float = 0.0
    wall_s: float = 0.0
    bad_samples: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies_ns)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def non_ok(self, ok: int) -> int:
        """Responses whose status is not `ok`, in both phases, plus transport errors."""
        bad = sum(n for s, n in self.statuses.items() if s != ok)
        bad += sum(n for s, n in self.warmup_statuses.items() if s != ok)
        return bad + self.error_count


async def run_load(
    host: str,
    port: int,
    make_request: RequestFactory,
    *,
    connections: int,
    warmup_s: float,
    duration_s: float,
    max_requests: int,
    ok_status: int = 200,
) -> LoadResult:
    """Closed-loop load on `connections` keep-alive connections.

    The measured window starts when warm-up ends and stops at `duration_s` or after
    `max_requests` requests were started, whichever comes first; requests in flight at
    the end are awaited and counted. Throughput is measured requests divided by the
    time from the end of warm-up to the last measured completion.
    """
    counter = iter(range(1 << 62))
    result = LoadResult(connections=connections, duration_s=0.0)
    cpu_before = time.process_time()
    started = time.perf_counter_ns()
    warm_end = started + int(warmup_s * 1e9)
    deadline = warm_end + int(duration_s * 1e9)
    budget = [max_requests]
    last_done = [warm_end]

    def note_error(message: str) -> None:
        result.error_count += 1
        if len(result.errors) < MAX_ERRORS_KEPT:
            result.errors.append(message)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        perf = time.perf_counter_ns
        latencies = result.latencies_ns
        statuses = result.statuses
        try:
            while True:
                t0 = perf()
                if t0 >= deadline:
                    return
                measured = t0 >= warm_end
                if measured:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                try:
                    writer.write(make_request(next(counter)))
                    response, closes = await read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    note_error(f"{type(exc).__name__}: {exc}")
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                t1 = perf()
                if measured:
                    latencies.append(t1 - t0)
                    statuses[response.status] += 1
                    last_done[0] = max(last_done[0], t1)
                else:
                    result.warmup_statuses[response.status] += 1
                if response.status != ok_status and len(result.bad_samples) < MAX_ERRORS_KEPT:
                    result.bad_samples.append(f"{response.status}: {response.body[:300]!r}")
                if closes:
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
        finally:
            writer.close()

    hard_limit = warmup_s + duration_s + 30.0
    async with asyncio.timeout(hard_limit):
        outcomes = await asyncio.gather(*(worker() for _ in range(connections)), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            note_error(f"connection failed: {type(outcome).__name__}: {outcome}")
    result.duration_s = (last_done[0] - warm_end) / 1e9
    result.wall_s = (time.perf_counter_ns() - started) / 1e9
    result.client_cpu_pct = 100 * (time.process_time() - cpu_before) / result.wall_s
    return result


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on uvloop when installed (as uvicorn[standard] does), to keep the client cheap."""
    try:
        import uvloop
    except ImportError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)
