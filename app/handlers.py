"""Event handlers, registered in one table. Each runs isolated (see app.core.bus)."""

import logging

from app.core.bus import Event, Handler, HandlerTable
from app.core.metrics import DRAWDOWN_PCT, TRADES_APPROVED, TRADES_DENIED
from app.domains.policy.events import PolicyChanged, RiskModeChanged
from app.domains.safety.events import SafetyStateChanged
from app.domains.signals.registry.events import ModelPromoted
from app.domains.trading.events import TradeClosed, TradeDenied, TradeOpened

logger = logging.getLogger("app.events")


async def log_event(event: Event) -> None:
    if logger.isEnabledFor(logging.INFO):
        fields = {k: str(v) for k, v in vars(event).items() if k != "trace_id"}
        logger.info(f"event_{type(event).__name__}", extra=fields)


async def count_approved(event: Event) -> None:
    assert isinstance(event, TradeOpened)
    TRADES_APPROVED.labels(profile=event.profile_name).inc()
    logger.info(
        "risk_guard_approved",
        extra={"symbol": event.symbol, "trade_id": event.trade_id},
    )


async def count_and_log_denials(event: Event) -> None:
    assert isinstance(event, TradeDenied)
    for code in event.reason_codes:
        TRADES_DENIED.labels(profile=event.profile_name, reason=code).inc()
        logger.warning(
            f"risk_guard_denied_{code.lower()}",
            extra={
                "symbol": event.symbol,
                "decision_id": event.decision_id,
                "profile": event.profile_name,
            },
        )


async def track_drawdown(event: Event) -> None:
    assert isinstance(event, SafetyStateChanged)
    DRAWDOWN_PCT.set(float(event.daily_drawdown_pct))


def default_handlers() -> HandlerTable:
    table: dict[type[Event], list[Handler]] = {
        TradeOpened: [count_approved, log_event],
        TradeDenied: [count_and_log_denials],
        TradeClosed: [log_event],
        SafetyStateChanged: [track_drawdown, log_event],
        RiskModeChanged: [log_event],
        PolicyChanged: [log_event],
        ModelPromoted: [log_event],
    }
    return table
