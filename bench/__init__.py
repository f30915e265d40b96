"""Performance benchmarks of Quantum Trader against bare baselines; run `python -m bench`.

Benchmarks: `risk_guard` (in-process RiskGuard.check latency), `policy_read`
(GET /api/v2/policy/risk-profile vs a bare FastAPI endpoint) and `trades_write`
(POST /trades on Postgres vs a minimal validate-and-insert endpoint). Results go to
`bench/results/latest.json` and `latest.md`.
"""
