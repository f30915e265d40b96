"""ExposureMemory: a rolling window of closed-trade events with running sums.

Every summary is kept as sums updated by the recorded and the evicted event (O(1) per event, no
rescan), so the policy can be re-evaluated as often as wanted at no cost.
"""

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SIDES = frozenset({"LONG", "SHORT"})


class MalformedEntry(ValueError):
    """A stream entry that is not a valid closed-trade event (the message names the field)."""


@dataclass(frozen=True, slots=True)
class MemoryEvent:
    timestamp: datetime
    symbol: str
    side: str
    leverage: float
    pnl: float  # return of the trade in percent: 0.32 = +0.32 %
    confidence: float | None
    volatility: float | None
    position_size: float | None
    exit_reason: str


@dataclass(frozen=True, slots=True)
class SymbolStats:
    count: int
    avg_pnl: float
    win_rate: float


@dataclass(frozen=True, slots=True)
class MemorySummary:
    count: int
    avg_pnl: float | None
    avg_confidence: float | None
    avg_volatility: float | None
    avg_leverage: float | None
    win_rate: float | None
    confidence_samples: int  # events with a known confidence (the others are left out of its average)
    volatility_samples: int  # events with a known volatility (likewise)


@dataclass(frozen=True, slots=True)
class MemoryHealth:
    samples: int
    window: int
    oldest: datetime | None
    newest: datetime | None
    rejected: int
    recorded_total: int


def compact_symbol(symbol: str) -> str:
    """One name per market for per-symbol statistics: the trades table's `BTC/USDT:USDT` and the
    stream's `BTCUSDT` are both `BTCUSDT`."""
    return symbol.strip().upper().split(":", 1)[0].replace("/", "")


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="strict") if isinstance(value, bytes) else value


def _number(fields: dict[str, str], name: str, *, required: bool, positive: bool = False) -> float | None:
    raw = fields.get(name)
    if raw is None or raw.strip() == "":
        if required:
            raise MalformedEntry(f"{name}: missing")
        return None
    try:
        value = float(raw)
    except ValueError:
        raise MalformedEntry(f"{name}: not a number: {raw[:40]!r}") from None
    if not math.isfinite(value):
        raise MalformedEntry(f"{name}: not finite: {raw[:40]!r}")
    if positive and value <= 0:
        raise MalformedEntry(f"{name}: must be > 0, got {raw[:40]!r}")
    return value


def parse_stream_entry(fields: dict[bytes, bytes] | dict[str, str] | dict[Any, Any]) -> MemoryEvent:
    """A closed-trade event from an all-strings Redis stream entry; raises MalformedEntry naming why.

    Required: timestamp (ISO 8601; naive means UTC), symbol, side (LONG/SHORT, also BUY/SELL), leverage
    (> 0), pnl (percent). Optional: confidence (0..1), volatility (>= 0), position_size (> 0), exit_reason.
    """
    try:
        text = {_text(k): _text(v) for k, v in fields.items()}
    except (UnicodeDecodeError, AttributeError, TypeError) as exc:
        raise MalformedEntry(f"fields are not text: {exc}") from None
    raw_ts = text.get("timestamp")
    if not raw_ts:
        raise MalformedEntry("timestamp: missing")
    try:
        ts = datetime.fromisoformat(raw_ts)
    except ValueError:
        raise MalformedEntry(f"timestamp: not ISO 8601: {raw_ts[:40]!r}") from None
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    symbol = compact_symbol(text.get("symbol", ""))
    if not symbol or len(symbol) > 32 or not symbol.isprintable():
        raise MalformedEntry("symbol: missing or invalid")
    side = text.get("side", "").strip().upper()
    side = {"BUY": "LONG", "SELL": "SHORT"}.get(side, side)
    if side not in SIDES:
        raise MalformedEntry(f"side: unknown {text.get('side', '')[:16]!r}")
    leverage = _number(text, "leverage", required=True, positive=True)
    pnl = _number(text, "pnl", required=True)
    confidence = _number(text, "confidence", required=False)
    if confidence is not None and not 0 <= confidence <= 1:
        raise MalformedEntry(f"confidence: outside [0, 1]: {confidence}")
    volatility = _number(text, "volatility", required=False)
    if volatility is not None and volatility < 0:
        raise MalformedEntry(f"volatility: negative: {volatility}")
    size = _number(text, "position_size", required=False, positive=True)
    exit_reason = text.get("exit_reason", "").strip()[:64] or "unknown"
    assert leverage is not None and pnl is not None
    return MemoryEvent(ts, symbol, side, leverage, pnl, confidence, volatility, size, exit_reason)


@dataclass
class _Sums:
    count: int = 0
    pnl: float = 0.0
    wins: int = 0

    def add(self, event: MemoryEvent, sign: int) -> None:
        self.count += sign
        self.pnl += sign * event.pnl
        self.wins += sign * (event.pnl > 0)


@dataclass
class ExposureMemory:
    """The newest `window` events in record order; the oldest is evicted when a new one arrives."""

    window: int = 500
    _events: deque[tuple[str, MemoryEvent]] = field(default_factory=deque)
    _keys: set[str] = field(default_factory=set)
    _all: _Sums = field(default_factory=_Sums)
    _conf_sum: float = 0.0
    _conf_n: int = 0
    _vol_sum: float = 0.0
    _vol_n: int = 0
    _lev_sum: float = 0.0
    _symbols: dict[str, _Sums] = field(default_factory=dict)
    rejected: int = 0
    recorded_total: int = 0

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError("window must be >= 1")

    def __len__(self) -> int:
        return len(self._events)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def events(self) -> list[MemoryEvent]:
        return [event for _, event in self._events]

    def record(self, key: str, event: MemoryEvent) -> bool:
        """Add `event` under `key` (a trade id or stream id); False if that key is already in the window."""
        if key in self._keys:
            return False
        self._events.append((key, event))
        self._keys.add(key)
        self._apply(event, 1)
        self.recorded_total += 1
        if len(self._events) > self.window:
            old_key, old = self._events.popleft()
            self._keys.discard(old_key)
            self._apply(old, -1)
        return True

    def reject(self) -> None:
        self.rejected += 1

    def _apply(self, event: MemoryEvent, sign: int) -> None:
        self._all.add(event, sign)
        self._lev_sum += sign * event.leverage
        if event.confidence is not None:
            self._conf_sum += sign * event.confidence
            self._conf_n += sign
        if event.volatility is not None:
            self._vol_sum += sign * event.volatility
            self._vol_n += sign
        stats = self._symbols.get(event.symbol)
        if stats is None:
            stats = self._symbols[event.symbol] = _Sums()
        stats.add(event, sign)
        if stats.count == 0:
            del self._symbols[event.symbol]

    def summary(self) -> MemorySummary:
        n = self._all.count
        return MemorySummary(
            count=n,
            avg_pnl=self._all.pnl / n if n else None,
            avg_confidence=self._conf_sum / self._conf_n if self._conf_n else None,
            avg_volatility=self._vol_sum / self._vol_n if self._vol_n else None,
            avg_leverage=self._lev_sum / n if n else None,
            win_rate=self._all.wins / n if n else None,
            confidence_samples=self._conf_n,
            volatility_samples=self._vol_n,
        )

    def per_symbol(self) -> dict[str, SymbolStats]:
        return {
            symbol: SymbolStats(s.count, s.pnl / s.count, s.wins / s.count)
            for symbol, s in sorted(self._symbols.items())
        }

    def health(self) -> MemoryHealth:
        return MemoryHealth(
            samples=len(self._events),
            window=self.window,
            oldest=self._events[0][1].timestamp if self._events else None,
            newest=self._events[-1][1].timestamp if self._events else None,
            rejected=self.rejected,
            recorded_total=self.recorded_total,
        )
