"""Facts of the trading domain, published after commit."""

from dataclasses import dataclass
from decimal import Decimal

from app.core.bus import Event


@dataclass(frozen=True, kw_only=True)
class TradeOpened(Event):
    trade_id: str
    symbol: str
    side: str
    notional: Decimal
    leverage: Decimal
    profile_name: str


@dataclass(frozen=True, kw_only=True)
class TradeDenied(Event):
    decision_id: str
    symbol: str
    side: str
    reason_codes: tuple[str, ...]
    profile_name: str


@dataclass(frozen=True, kw_only=True)
class TradeClosed(Event):
    trade_id: str
    symbol: str
    realized_pnl: Decimal
    equity_after: Decimal
