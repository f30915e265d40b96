"""The request latency the edge middleware reports (metrics and the access log) is the request's own."""

import logging
import time

import httpx
import pytest
from prometheus_client import REGISTRY

from app.bootstrap import Container


def _sum(route: str) -> float:
    labels = {"method": "GET", "route": route, "status": "200"}
    return REGISTRY.get_sample_value("http_request_duration_seconds_sum", labels) or 0.0


async def test_latency_is_the_requests_own_time(
    api: tuple[httpx.AsyncClient, Container], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = api
    before = _sum("/health")
    caplog.set_level(logging.INFO, logger="app.http")
    began = time.perf_counter()
    assert (await client.get("/health")).status_code == 200
    wall = time.perf_counter() - began
    observed = _sum("/health") - before
    assert 0 < observed <= wall  # was perf_counter() minus a boolean: the process's uptime
    logged = [r for r in caplog.records if getattr(r, "route", None) == "/health"]
    assert logged and 0 < logged[-1].duration_ms <= wall * 1000  # type: ignore[attr-defined]
