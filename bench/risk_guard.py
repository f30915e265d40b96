"""RiskGuard.check latency in-process, with the profile already cached and the full limit stack:
hard limits, the NORMAL profile, the portfolio policy (BALANCED, from a GovernanceService) and the
operating mode (OPTIMIZATION), then the SafetyGovernor's multiplier, as `bootstrap` wires them.

The inputs are built the way TradingService._open builds them: the profile comes from a
PolicySnapshot (the cached effective profiles), the safety view from the SafetyGovernor,
kill switch and blocklist from the policy state. Timing is per batch of calls with
perf_counter_ns, because one call (a few µs) is too close to the clock's resolution;
the figure is the median per-call time across batches.
"""

import gc
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from app.domains.governance.service import GovernanceConfig, GovernanceService
from app.domains.modes.rules import OperatingMode, mode_layer
from app.domains.policy.profiles import RiskMode
from app.domains.policy.state import PolicySnapshot, PolicyState
from app.domains.risk.guard import AccountState, DenialCode, RiskDecision, RiskGuard, Side, TradeIntent
from app.domains.safety.governor import SafetyGovernor, SafetyState
from bench.harness import Figure, Target, spread

NAME = "risk_guard"
TARGET_US = 20.0


def _scenario() -> dict[str, Any]:
    now = datetime.now(UTC)
    snapshot = PolicySnapshot.of(PolicyState(mode=RiskMode.NORMAL, version=1))
    equity = Decimal(10000)
    safety = SafetyGovernor().view(SafetyState.initial(equity, now), now)
    account = AccountState(
        equity=equity - Decimal("12.34"),
        open_positions=3,
        open_notional=Decimal(1500),
        used_margin=Decimal(500),
        day_start_equity=equity,
    )
    allowed = TradeIntent(
        symbol="BTC/USDT:USDT",
        side=Side.LONG,
        notional=Decimal(200),
        leverage=Decimal(2),
        price=Decimal("60000.5"),
        price_as_of=now - timedelta(seconds=1),
        confidence=Decimal("0.8"),
        stop_loss=Decimal(59400),
        source="ensemble",
    )
    # Leverage above the profile's max, confidence below its minimum, a 2-minute-old price.
    denied = TradeIntent(
        symbol="BTC/USDT:USDT",
        side=Side.LONG,
        notional=Decimal(200),
        leverage=Decimal(10),
        price=Decimal("60000.5"),
        price_as_of=now - timedelta(seconds=120),
        confidence=Decimal("0.5"),
        stop_loss=Decimal(59400),
        source="ensemble",
    )
    return {
        "now": now,
        "snapshot": snapshot,
        "safety": safety,
        "account": account,
        "intents": {"allowed": allowed, "denied": denied},
    }


def _call(guard: RiskGuard, s: dict[str, Any], intent: TradeIntent) -> RiskDecision:
    snapshot = s["snapshot"]
    return guard.check(
        intent,
        s["account"],
        snapshot.profile,
        s["safety"],
        now=s["now"],
        trace_id="0123456789abcdef0123456789abcdef",
        kill_switch=snapshot.state.kill_switch,
        blocked_symbols=snapshot.state.blocked_symbols,
    )


def _time_batches(guard: RiskGuard, s: dict[str, Any], intent: TradeIntent, batches: int, size: int) -> list[float]:
    """Per-call µs of each batch (the loop's own overhead, ~20 ns, is included)."""
    check = guard.check
    account, safety, now = s["account"], s["safety"], s["now"]
    snapshot = s["snapshot"]
    profile = snapshot.profile
    kill_switch = snapshot.state.kill_switch
    blocked = snapshot.state.blocked_symbols
    trace_id = "0123456789abcdef0123456789abcdef"
    perf = time.perf_counter_ns
    per_call: list[float] = []
    for _ in range(batches):
        calls = range(size)
        t0 = perf()
        for _ in calls:
            check(
                intent,
                account,
                profile,
                safety,
                now=now,
                trace_id=trace_id,
                kill_switch=kill_switch,
                blocked_symbols=blocked,
            )
        per_call.append((perf() - t0) / size / 1000)
    return per_call


def run(quick: bool) -> tuple[list[Figure], dict[str, Any]]:
    batches, size, warmup = (40, 1000, 5) if quick else (300, 1000, 30)
    guard = RiskGuard()
    governance = GovernanceService(None, "bench", GovernanceConfig(), lambda: datetime.now(UTC))  # type: ignore[arg-type]
    guard.add_layer(governance.limit_layer)
    guard.add_layer(lambda: mode_layer(OperatingMode.OPTIMIZATION))
    s = _scenario()
    allowed = _call(guard, s, s["intents"]["allowed"])
    denied = _call(guard, s, s["intents"]["denied"])
    expected = {DenialCode.MAX_LEVERAGE, DenialCode.MIN_CONFIDENCE, DenialCode.STALE_PRICE}
    if not allowed.allowed or allowed.reasons:
        raise AssertionError(f"the 'allowed' intent was denied: {allowed.reasons}")
    if denied.allowed or {r.code for r in denied.reasons} != expected or len(denied.reasons) != 3:
        raise AssertionError(f"the 'denied' intent gave {[r.code for r in denied.reasons]}, expected {expected}")

    figures: list[Figure] = []
    details: dict[str, Any] = {"batches": batches, "calls_per_batch": size, "warmup_batches": warmup}
    for case, intent in s["intents"].items():
        _time_batches(guard, s, intent, warmup, size)
        gc.collect()
        per_call = _time_batches(guard, s, intent, batches, size)
        stats = spread(per_call)
        details[case] = {k: round(v, 3) for k, v in stats.items()}
        reasons = "3 reasons" if case == "denied" else "no reason"
        figures.append(
            Figure(
                name=f"check {case} ({reasons})",
                unit="µs/call",
                value=stats["median"],
                stat="median of batches",
                samples=batches,
                sample_kind=f"batches x {size} calls",
                p50=stats["p50"],
                p90=stats["p90"],
                p99=stats["p99"],
                target=Target("<=", TARGET_US),
            )
        )
    details["denial_codes"] = [r.code.value for r in denied.reasons]
    details["denial_details"] = [r.detail for r in denied.reasons]
    details["layers"] = [
        f"{layer.layer.value}={layer.source}" for layer in guard.limits(s["snapshot"].profile, s["safety"]).layers
    ]
    return figures, details
