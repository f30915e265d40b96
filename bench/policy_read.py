"""GET /api/v2/policy/risk-profile throughput against a bare FastAPI endpoint.

Both run in their own uvicorn process with identical flags; rounds alternate between
them (ABBA order) so drift on a noisy machine hits both alike. Two variants of our app:
the embedded default (SQLite, in-process policy backend) and Redis as policy backend.
The read itself never touches the database or Redis (the profile is cached), so the
ratio shows the per-request overhead of our middleware, dependencies and response model.
"""

import json
import statistics
import uuid
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
    redis_prefix_keys,
    register_cleanup,
    running,
    scratch_dir,
)
from bench.loadgen import LoadResult, build_request, request_once, run_async

NAME = "policy_read"
PATH = "/api/v2/policy/risk-profile"
REDIS_URL = "redis://127.0.0.1:6379/0"
TARGET_RATIO = 0.8
CONNECTIONS = 32


def _check_body(server: Server, backend: str | None) -> int:
    raw = build_request("GET", PATH, HOST, server.port)
    response = run_async(request_once(HOST, server.port, raw))
    if response.status != 200:
        raise BenchError(f"{server.label}: GET {PATH} gave {response.status}: {response.body[:300]!r}")
    body = json.loads(response.body)
    if backend is not None and (body.get("backend") != backend or body.get("degraded") is not False):
        raise BenchError(f"{server.label}: expected backend={backend} not degraded, got {body}")
    return len(response.body)


def _load(server: Server, warmup_s: float, duration_s: float) -> LoadResult:
    raw = build_request("GET", PATH, HOST, server.port)
    return load(
        server,
        lambda _: raw,
        connections=CONNECTIONS,
        warmup_s=warmup_s,
        duration_s=duration_s,
        max_requests=2_000_000,
        ok_status=200,
        what=f"GET {PATH}",
    )


def _variant(variant: str, quick: bool) -> tuple[list[Figure], dict[str, Any]]:
    rounds, warmup_s, duration_s = (2, 0.5, 1.5) if quick else (5, 1.0, 5.0)
    with scratch_dir(f"qt-bench-{variant}-") as tmp:
        url = f"sqlite+aiosqlite:///{tmp / 'quantum.db'}"
        migrate(url)
        extra: dict[str, str] = {}
        backend = "in_process"
        delete_keys = None
        if variant == "redis":
            prefix = f"qt-bench-{uuid.uuid4().hex[:12]}"
            extra = {"REDIS_URL": REDIS_URL, "REDIS_PREFIX": prefix}
            backend = "redis"
            delete_keys = register_cleanup(f"redis keys {prefix}:*", redis_prefix_keys(REDIS_URL, prefix))
        ours = Server(
            f"ours-{variant}",
            "app.main:app",
            clean_env(DATABASE_URL=url, API_KEY=API_KEY, LOG_LEVEL="WARNING", **extra),
            tmp,
        )
        bare = Server(f"bare-{variant}", "bench.bare_policy_app:app", clean_env(LOG_LEVEL="WARNING"), tmp)
        try:
            with running(ours, bare):
                sizes = {"ours": _check_body(ours, backend), "bare": _check_body(bare, None)}
                results: dict[str, list[LoadResult]] = {"ours": [], "bare": []}
                for r in range(rounds):
                    order = [("ours", ours), ("bare", bare)]
                    for key, server in order if r % 2 == 0 else reversed(order):
                        results[key].append(_load(server, warmup_s, duration_s))
        finally:
            if delete_keys is not None:
                delete_keys()

    rps = {k: [res.rps for res in v] for k, v in results.items()}
    med = {k: statistics.median(v) for k, v in rps.items()}
    ratio = med["ours"] / med["bare"]
    paired = [o / b for o, b in zip(rps["ours"], rps["bare"], strict=True)]
    figures = []
    details: dict[str, Any] = {
        "rounds": rounds,
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "connections": CONNECTIONS,
        "response_bytes": sizes,
        "paired_round_ratios": [round(x, 3) for x in paired],
        "server_command": ours.command[1:],
    }
    label = "embedded" if variant == "embedded" else "redis backend"
    for key, who in (("ours", "ours"), ("bare", "bare FastAPI")):
        requests = sum(res.requests for res in results[key])
        latencies = sorted(ns / 1e6 for res in results[key] for ns in res.latencies_ns)
        details[key] = {
            "rps_per_round": [round(x, 1) for x in rps[key]],
            "server_cpu_pct_per_round": [round(res.server_cpu_pct) for res in results[key]],
            "client_cpu_pct_per_round": [round(res.client_cpu_pct) for res in results[key]],
            "machine_busy_pct_per_round": [round(res.machine_busy_pct) for res in results[key]],
            "requests": requests,
        }
        figures.append(
            Figure(
                name=f"{who} ({label})",
                unit="req/s",
                value=med[key],
                stat=f"median of {rounds} rounds",
                samples=requests,
                sample_kind="requests",
                note=f"min {min(rps[key]):.0f}, max {max(rps[key]):.0f}; {cpu_note(results[key])}",
            )
        )
        p50, p90, p99 = (percentile(latencies, q) for q in (50, 90, 99))
        figures.append(
            Figure(
                name=f"{who} ({label}) latency p99",
                unit="ms",
                value=p99,
                stat="p99 of all requests",
                samples=requests,
                sample_kind="requests",
                p50=p50,
                p90=p90,
                p99=p99,
                note=f"{CONNECTIONS} connections",
            )
        )
    figures.append(
        Figure(
            name=f"ratio ours/bare ({label})",
            unit="x",
            value=ratio,
            stat="ratio of medians",
            samples=rounds,
            sample_kind="paired rounds",
            target=Target(">=", TARGET_RATIO),
            note=f"paired rounds {min(paired):.2f}..{max(paired):.2f}",
        )
    )
    return figures, details


def run(quick: bool) -> tuple[list[Figure], dict[str, Any]]:
    figures: list[Figure] = []
    details: dict[str, Any] = {}
    for variant in ("embedded", "redis"):
        f, d = _variant(variant, quick)
        figures += f
        details[variant] = d
    return figures, details
