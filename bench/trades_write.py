"""POST /trades throughput and latency on Postgres against a minimal validate-and-insert endpoint.

Both servers share one fresh database and run with identical uvicorn flags; rounds
alternate (ABBA). Every request is a distinct, valid trade that RiskGuard approves: the
account is funded so the hard exposure limits never bind, and max_open_positions is
raised through the API first. Any status other than 201 invalidates the run, and the
rows in the database are counted afterwards to prove each 201 stored one trade.
"""

import asyncio
import json
import statistics
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bench.harness import (
    API_KEY,
    HOST,
    BenchError,
    Figure,
    Server,
    Target,
    clean_env,
    cpu_note,
    load,
    migrate,
    percentile,
    pg_fetch,
    postgres_database,
    running,
    scratch_dir,
)
from bench.loadgen import LoadResult, RequestFactory, build_request, request_once, run_async

NAME = "trades_write"
CONNECTIONS = 32
TARGET_RATIO = 0.5
TARGET_P99_MS = 25.0
# (symbol, price, stop): the market of our server's feed (GET /api/v2/market/prices) for every symbol it
# prices, LONG with the stop 1 % below; filled by `_prepare` before any load (the exchange fills at the
# market, so a fixed price would be refused as PRICE_DEVIATION).
SYMBOLS: list[tuple[str, str, str]] = []


def _market(server: Server) -> list[tuple[str, str, str]]:
    raw = build_request("GET", "/api/v2/market/prices", HOST, server.port)
    response = run_async(request_once(HOST, server.port, raw))
    if response.status != 200:
        raise BenchError(f"GET /api/v2/market/prices gave {response.status}: {response.body[:300]!r}")
    prices = json.loads(response.body)["prices"]
    if not prices:
        raise BenchError("the feed prices no symbol (is ../shared/data/market/long there?)")
    return [(p["symbol"], p["price"], str(Decimal(p["price"]) * Decimal("0.99"))) for p in prices]


def trade_requests(port: int, tag: str) -> RequestFactory:
    """Request `i`: a unique client_order_id, symbols in rotation, price_as_of = now."""
    head = (
        f"POST /trades HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {API_KEY}\r\nContent-Length: "
    ).encode()
    parts = [
        (
            f'{{"symbol":"{symbol}","side":"LONG","notional":"200","leverage":2,"price":"{price}","price_as_of":"',
            f'","confidence":0.8,"stop_loss":"{stop}","client_order_id":"{tag}-',
        )
        for symbol, price, stop in SYMBOLS
    ]

    def make(i: int) -> bytes:
        before, middle = parts[i % len(parts)]
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        body = f'{before}{now}{middle}{i}","source":"bench"}}'.encode()
        return head + str(len(body)).encode() + b"\r\n\r\n" + body

    return make


def _post(server: Server, path: str, method: str, payload: dict[str, Any]) -> tuple[int, Any]:
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-API-Key": API_KEY}
    raw = build_request(method, path, HOST, server.port, body, headers)
    response = run_async(request_once(HOST, server.port, raw))
    return response.status, json.loads(response.body or b"null")


def _prepare(ours: Server, minimal: Server, tag: str) -> None:
    """Read the market, raise max_open_positions, then prove one trade per symbol is approved by each server."""
    SYMBOLS[:] = _market(ours)
    patch = {"max_open_positions": 1000000, "reason": "bench"}
    status, body = _post(ours, "/api/v2/policy/risk-profile", "PATCH", patch)
    if status != 200 or body.get("max_open_positions") != 1000000:
        raise BenchError(f"PATCH risk-profile gave {status}: {body}")
    for server in (ours, minimal):
        make = trade_requests(server.port, f"{tag}-{server.label}-probe")
        for i in range(len(SYMBOLS)):
            response = run_async(request_once(HOST, server.port, make(i)))
            if response.status != 201:
                raise BenchError(
                    f"{server.label}: probe trade {SYMBOLS[i][0]} gave {response.status}: {response.body[:500]!r}"
                )
            if server is ours and json.loads(response.body)["decision"]["allowed"] is not True:
                raise BenchError(f"{server.label}: probe trade not allowed: {response.body[:500]!r}")


def _load(server: Server, tag: str, round_no: int, warmup_s: float, duration_s: float) -> LoadResult:
    return load(
        server,
        trade_requests(server.port, f"{tag}-{server.label}-r{round_no}"),
        connections=CONNECTIONS,
        warmup_s=warmup_s,
        duration_s=duration_s,
        max_requests=500_000,
        ok_status=201,
        what=f"POST /trades round {round_no}",
    )


def _count_rows(database: str) -> dict[str, int]:
    rows = asyncio.run(
        pg_fetch(
            database,
            "SELECT (SELECT count(*) FROM trades) AS trades,"
            " (SELECT count(*) FROM risk_decisions WHERE NOT allowed) AS denied,"
            " (SELECT count(*) FROM bench_minimal_trades) AS minimal",
        )
    )
    return {k: int(v) for k, v in dict(rows[0]).items()}


def run(quick: bool) -> tuple[list[Figure], dict[str, Any]]:
    rounds, warmup_s, duration_s = (2, 0.5, 2.0) if quick else (5, 1.5, 6.0)
    tag = uuid.uuid4().hex[:8]
    results: dict[str, list[LoadResult]] = {"ours": [], "minimal": []}
    with postgres_database() as database, scratch_dir("qt-bench-trades-") as tmp:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
        migrate(url)
        ours = Server(
            "ours",
            "app.main:app",
            clean_env(
                DATABASE_URL=url,
                API_KEY=API_KEY,
                LOG_LEVEL="WARNING",
                PAPER_STARTING_BALANCE="1000000000",
                # Many open positions on purpose: the governance policy (5 below MIN_SAMPLES) would cap them.
                GOVERNANCE_LIMITS_ENABLED="false",
            ),
            tmp,
        )
        minimal = Server(
            "minimal", "bench.minimal_trades_app:app", clean_env(DATABASE_URL=url, LOG_LEVEL="WARNING"), tmp
        )
        with running(ours, minimal):
            _prepare(ours, minimal, tag)
            servers = {"ours": ours, "minimal": minimal}
            for r in range(rounds):
                keys = ["ours", "minimal"] if r % 2 == 0 else ["minimal", "ours"]
                for key in keys:
                    results[key].append(_load(servers[key], tag, r, warmup_s, duration_s))
        stored = _count_rows(database)

    probes = len(SYMBOLS)
    created = {k: probes + sum(res.statuses[201] + res.warmup_statuses[201] for res in v) for k, v in results.items()}
    if stored["trades"] != created["ours"] or stored["minimal"] != created["minimal"] or stored["denied"]:
        raise BenchError(f"rows stored {stored} do not match 201 responses {created}")

    details: dict[str, Any] = {
        "rounds": rounds,
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "connections": CONNECTIONS,
        "non_201": 0,
        "rows_stored": stored,
        "server_command": ours.command[1:],
    }
    figures: list[Figure] = []
    med: dict[str, float] = {}
    for key, label in (("ours", "ours POST /trades"), ("minimal", "minimal insert")):
        rps = [res.rps for res in results[key]]
        med[key] = statistics.median(rps)
        latencies = sorted(ns / 1e6 for res in results[key] for ns in res.latencies_ns)
        p = {q: percentile(latencies, q) for q in (50, 90, 99)}
        details[key] = {
            "rps_per_round": [round(x, 1) for x in rps],
            "server_cpu_pct_per_round": [round(res.server_cpu_pct) for res in results[key]],
            "client_cpu_pct_per_round": [round(res.client_cpu_pct) for res in results[key]],
            "machine_busy_pct_per_round": [round(res.machine_busy_pct) for res in results[key]],
            "p99_ms_per_round": [round(percentile(sorted(res.latencies_ns), 99) / 1e6, 2) for res in results[key]],
            "requests": len(latencies),
            "latency_ms": {f"p{q}": round(v, 3) for q, v in p.items()} | {"max": round(latencies[-1], 3)},
        }
        figures.append(
            Figure(
                name=f"{label} throughput",
                unit="req/s",
                value=med[key],
                stat=f"median of {rounds} rounds",
                samples=len(latencies),
                sample_kind="requests",
                note=f"min {min(rps):.0f}, max {max(rps):.0f}; {cpu_note(results[key])}",
            )
        )
        figures.append(
            Figure(
                name=f"{label} latency p99",
                unit="ms",
                value=p[99],
                stat="p99 of all requests",
                samples=len(latencies),
                sample_kind="requests",
                p50=p[50],
                p90=p[90],
                p99=p[99],
                target=Target("<=", TARGET_P99_MS) if key == "ours" else None,
            )
        )
    paired = [o.rps / m.rps for o, m in zip(results["ours"], results["minimal"], strict=True)]
    details["paired_round_ratios"] = [round(x, 3) for x in paired]
    figures.append(
        Figure(
            name="ratio ours/minimal throughput",
            unit="x",
            value=med["ours"] / med["minimal"],
            stat="ratio of medians",
            samples=rounds,
            sample_kind="paired rounds",
            target=Target(">=", TARGET_RATIO),
            note=f"paired rounds {min(paired):.2f}..{max(paired):.2f}",
        )
    )
    return figures, details
