"""Prometheus metrics; one registry per process."""

from prometheus_client import Counter, Gauge, Histogram

RISK_PROFILE_ACTIVE = Gauge(
    "risk_profile_active",
    "1 for the risk profile in force in this process",
    ["profile"],
)
TRADES_APPROVED = Counter("trades_approved_total", "Trades approved by RiskGuard", ["profile"])
TRADES_DENIED = Counter(
    "trades_denied_total",
    "Trade intents denied by RiskGuard, per reason code",
    ["profile", "reason"],
)
DRAWDOWN_PCT = Gauge("drawdown_pct", "Daily drawdown of the account in percent")
EVENT_HANDLER_FAILURES = Counter("event_handler_failures_total", "Event handlers that raised", ["event", "handler"])
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
POLICY_BACKEND_UP = Gauge("policy_backend_up", "1 when the policy backend answered its last call")
SIGNALS = Counter("signals_total", "Signals served, by source (ensemble or fallback_momentum)", ["source"])
FALLBACK_SIGNALS = Counter("fallback_signals_total", "Signals produced by the momentum fallback rule")
