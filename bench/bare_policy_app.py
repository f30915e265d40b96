"""Baseline for `policy_read`: a bare FastAPI endpoint returning a constant dict.

Same path and a body of the same shape and size as GET /api/v2/policy/risk-profile, so
the difference in throughput is what our app adds (middleware, dependencies, response
model) on top of FastAPI and uvicorn themselves.
"""

from typing import Any

from fastapi import FastAPI

PROFILE: dict[str, Any] = {
    "name": "NORMAL",
    "max_leverage": 5.0,
    "max_risk_pct_per_trade": 1.5,
    "max_daily_drawdown_pct": 5.0,
    "emergency_drawdown_pct": 8.0,
    "max_open_positions": 30,
    "position_size_cap_usd": 1000.0,
    "global_min_confidence": 0.65,
    "allow_new_positions": True,
    "overridden_fields": [],
    "policy_version": 1,
    "backend": "in_process",
    "degraded": False,
}

app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/api/v2/policy/risk-profile")
async def risk_profile() -> dict[str, Any]:
    return PROFILE
