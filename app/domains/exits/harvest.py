"""Harvest and heat gate: profit-taking and kill proposals for an open position, pure and I/O-free.

Nothing here closes anything. `propose` turns a position, its mark price and what already fired
into *proposals*; the exit arbiter decides and executes. Every proposal fires at most once per
position: the `HarvestState` that goes in says what already fired, the one that comes out adds
what fired now.

R multiple
    R = profit / initial risk, with initial risk = |entry − initial stop| × amount and
    profit = s·(mark − entry)·amount, s = +1 LONG, −1 SHORT. The amount cancels, so
    R = s·(mark − entry) / |entry − initial stop|. Gross of fees and funding.

Theta (`HarvestTheta`; the issue's names → the fields)
    T1_R → t1_r = 2.0, T2_R → t2_r = 4.0, T3_R → t3_r = 6.0, lock_R → lock_r = 1.5,
    kill_threshold → kill_threshold = 0.6. A threshold is reached when R ≥ it (with a
    1e-9 tolerance so a mark exactly on a target in decimal is not missed by binary rounding).

Partials are cumulative targets of the ORIGINAL position, as a trader reads "25/50/75":
    PARTIAL_25 at T1 reduces the position to 75 % of the original amount remaining,
    PARTIAL_50 at T2 to 50 %, PARTIAL_75 at T3 to 25 %. Each step therefore closes 25 % of
    the original amount (`fraction`); `remaining_fraction` is the target the arbiter should
    reduce to, so a position already reduced by another source (e.g. the TP ladder) is not
    reduced twice: close max(0, current − remaining_fraction × original). A mark that jumps
    straight past T3 fires all three steps at once, in order.

UPDATE_SL (at lock_R) moves the stop to break-even plus fees: the price at which closing the
    whole position nets zero after the taker fee f paid on the open and on the close:
        LONG:  (P − E)·a − f·E·a − f·P·a = 0  →  P = E·(1 + f)/(1 − f)
        SHORT: (E − P)·a − f·E·a − f·P·a = 0  →  P = E·(1 − f)/(1 + f)
    Positive for 0 ≤ f < 1. It is proposed only while it sits on the protective side of the mark
    (below it for a long, above it for a short); otherwise it waits, unfired, for a later mark.
    No tick rounding here: the arbiter rounds with ccxt and must round towards the position
    (down for a long stop, up for a short stop) to stay on the right side.

Kill score (each component in [0, 1]; weights sum to 1; defaults 0.4 / 0.3 / 0.3):
    regime_flip   = clamp(s·(bias_at_entry − bias_now) / 2, 0, 1), with BULLISH = +1,
                    NEUTRAL = 0, BEARISH = −1: a long entered bullish that is now bearish scores 1,
                    bullish → neutral or neutral → bearish scores 0.5, a favourable move scores 0.
    trend_drop    = clamp((trend_at_entry − trend_now) / trend_at_entry, 0, 1) when
                    trend_at_entry > 0, else 0 (no trend at entry, none to lose). Trend strength is
                    a non-negative measure such as ADX or |t-statistic|.
    pnl_giveback  = clamp((peak_R − R) / max(peak_R, 1), 0, 1): the share of the best R given
                    back, measured against at least 1 R so noise around entry does not count as
                    a full giveback; a position that never rose scores its loss in R.
    score = 0.4·regime_flip + 0.3·trend_drop + 0.3·pnl_giveback.
    FULL_CLOSE_PROPOSED fires when score ≥ theta.kill_threshold (needs a `MarketView`); once
    proposed, the position is being closed and `propose` proposes nothing further for it.

Heat gate: `heat_gate(score, k_close)` proposes closing when score ≥ K_CLOSE (default 0.65).

Policy: a `HarvestPolicy` gives theta and K_CLOSE for a `HarvestContext`; `resolve_settings`
    is how callers ask any policy and bounds the result: theta's R values within [0.5, 10] and
    kept ordered t1 ≤ t2 ≤ t3, kill_threshold and K_CLOSE within [0.3, 0.9]; each clamp is logged
    as a warning with the original and the clamped value. `propose` and `heat_gate` apply the same
    bounds to whatever they are given, so no unbounded value is ever acted on.
    `AdaptiveHarvestPolicy` (the default) rule:
        target scale = regime scale × volatility scale, applied to t1, t2, t3 (lock_r unchanged):
            regime scale: TRENDING 1.25 (let winners run), RANGING 0.8 (take profit sooner),
            VOLATILE or unknown 1.0;
            volatility scale = 1 + 0.5·clamp(volatility_ratio − 1, 0, 1), where volatility_ratio is
            current realized volatility over its normal level (1 = normal): up to 1.5× at 2× normal.
        threshold cut = 0.2·clamp((exposure − 0.5) / 0.5, 0, 1) + (0.05 if VOLATILE else 0), where
            exposure is the share of the exposure limit in use: subtracted from both K_CLOSE and
            kill_threshold, so a loaded book closes on weaker kill evidence.
"""

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from app.domains.risk.guard import Side
from app.domains.signals.regime import Regime

logger = logging.getLogger(__name__)

K_CLOSE = 0.65
R_BOUNDS = (0.5, 10.0)
SCORE_BOUNDS = (0.3, 0.9)  # K_CLOSE and kill_threshold
MAX_FEE_RATE = 0.05
_EPS = 1e-9


class HarvestAction(StrEnum):
    """Closed set of what harvest can propose."""

    PARTIAL_25 = "PARTIAL_25"
    PARTIAL_50 = "PARTIAL_50"
    PARTIAL_75 = "PARTIAL_75"
    UPDATE_SL = "UPDATE_SL"
    FULL_CLOSE_PROPOSED = "FULL_CLOSE_PROPOSED"


class Bias(StrEnum):
    """Directional market regime used by the regime-flip component of the kill score."""

    BULLISH = "BULLISH"
    NEUTRAL = "NEUTRAL"
    BEARISH = "BEARISH"


_BIAS_VALUE = {Bias.BULLISH: 1, Bias.NEUTRAL: 0, Bias.BEARISH: -1}


def _sign(side: Side) -> int:
    return 1 if side is Side.LONG else -1


def _clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


def _require_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


@dataclass(frozen=True, slots=True)
class HarvestTheta:
    """Harvest thresholds. R values may be any non-NaN number here; they are bounded when used."""

    t1_r: float = 2.0
    t2_r: float = 4.0
    t3_r: float = 6.0
    lock_r: float = 1.5
    kill_threshold: float = 0.6

    def __post_init__(self) -> None:
        for name in ("t1_r", "t2_r", "t3_r", "lock_r", "kill_threshold"):
            if math.isnan(getattr(self, name)):
                raise ValueError(f"HarvestTheta.{name} is NaN")


@dataclass(frozen=True, slots=True)
class HarvestPosition:
    """What harvest needs to know about an open position. `amount` is the ORIGINAL amount."""

    side: Side
    entry_price: float
    initial_stop: float
    amount: float
    taker_fee_rate: float = 0.0004
    bias_at_entry: Bias = Bias.NEUTRAL
    trend_at_entry: float = 0.0

    def __post_init__(self) -> None:
        for name in ("entry_price", "initial_stop", "amount", "taker_fee_rate", "trend_at_entry"):
            _require_finite(name, getattr(self, name))
        if self.entry_price <= 0 or self.initial_stop <= 0 or self.amount <= 0:
            raise ValueError("entry_price, initial_stop and amount must be > 0")
        if not 0 <= self.taker_fee_rate < MAX_FEE_RATE:
            raise ValueError(f"taker_fee_rate must be in [0, {MAX_FEE_RATE}), got {self.taker_fee_rate}")
        if self.trend_at_entry < 0:
            raise ValueError("trend_at_entry is a strength, must be >= 0")
        s = _sign(self.side)
        if s * (self.entry_price - self.initial_stop) <= 0:
            raise ValueError(f"initial stop {self.initial_stop} is on the wrong side of entry {self.entry_price}")


@dataclass(frozen=True, slots=True)
class MarketView:
    """The market now, for the kill score."""

    bias: Bias
    trend_strength: float

    def __post_init__(self) -> None:
        _require_finite("trend_strength", self.trend_strength)
        if self.trend_strength < 0:
            raise ValueError("trend_strength must be >= 0")


@dataclass(frozen=True, slots=True)
class HarvestState:
    """What already fired for one position, and the best R seen (for the giveback)."""

    fired: frozenset[HarvestAction] = frozenset()
    peak_r: float = 0.0


@dataclass(frozen=True, slots=True)
class KillWeights:
    regime_flip: float = 0.4
    trend_drop: float = 0.3
    pnl_giveback: float = 0.3

    def __post_init__(self) -> None:
        parts = (self.regime_flip, self.trend_drop, self.pnl_giveback)
        if any(not math.isfinite(w) or w < 0 for w in parts):
            raise ValueError("kill weights must be finite and >= 0")
        if not math.isclose(sum(parts), 1.0, abs_tol=1e-9):
            raise ValueError(f"kill weights must sum to 1, got {sum(parts)}")


_DEFAULT_WEIGHTS = KillWeights()


@dataclass(frozen=True, slots=True)
class KillScore:
    regime_flip: float
    trend_drop: float
    pnl_giveback: float
    score: float


@dataclass(frozen=True, slots=True)
class Proposal:
    """One harvest proposal. Partials carry `fraction` (of the original amount, to close now) and
    `remaining_fraction` (of the original amount, to remain after); UPDATE_SL carries `new_stop`;
    FULL_CLOSE_PROPOSED carries fraction 1.0 (all that remains) and the kill score."""

    action: HarvestAction
    reason: str
    r_multiple: float
    fraction: float | None = None
    remaining_fraction: float | None = None
    new_stop: float | None = None
    kill: KillScore | None = None


@dataclass(frozen=True, slots=True)
class HeatDecision:
    close: bool
    kill_score: float
    k_close: float
    reason: str


@dataclass(frozen=True, slots=True)
class HarvestContext:
    """What a policy adapts to. volatility_ratio: current realized volatility / its normal level
    (1 = normal); exposure: share of the exposure limit in use (0 = flat, 1 = at the limit)."""

    regime: Regime | None = None
    volatility_ratio: float | None = None
    exposure: float = 0.0


@dataclass(frozen=True, slots=True)
class HarvestSettings:
    theta: HarvestTheta = field(default_factory=HarvestTheta)
    k_close: float = K_CLOSE


class HarvestPolicy(Protocol):
    """Gives theta and K_CLOSE for a context. Ask it through `resolve_settings`, which bounds the answer."""

    def settings(self, context: HarvestContext) -> HarvestSettings: ...


def r_multiple(position: HarvestPosition, mark: float) -> float:
    """Profit at `mark` in multiples of the initial risk (gross of fees)."""
    _require_finite("mark", mark)
    if mark <= 0:
        raise ValueError(f"mark must be > 0, got {mark}")
    risk = abs(position.entry_price - position.initial_stop)
    return _sign(position.side) * (mark - position.entry_price) / risk + 0.0  # + 0.0: no "-0.00" in reasons


def break_even_stop(*, side: Side, entry_price: float, taker_fee_rate: float) -> float:
    """Stop price at which closing nets zero after the taker fee on the open and the close."""
    _require_finite("entry_price", entry_price)
    _require_finite("taker_fee_rate", taker_fee_rate)
    if entry_price <= 0:
        raise ValueError("entry_price must be > 0")
    if not 0 <= taker_fee_rate < MAX_FEE_RATE:
        raise ValueError(f"taker_fee_rate must be in [0, {MAX_FEE_RATE})")
    if side is Side.LONG:
        return entry_price * (1 + taker_fee_rate) / (1 - taker_fee_rate)
    return entry_price * (1 - taker_fee_rate) / (1 + taker_fee_rate)


def kill_score(
    *,
    side: Side,
    bias_at_entry: Bias,
    bias_now: Bias,
    trend_at_entry: float,
    trend_now: float,
    peak_r: float,
    r_now: float,
    weights: KillWeights | None = None,
) -> KillScore:
    """The kill score and its components (formulas in the module docstring). Runs for every open position
    on every bar: written with inline clamps."""
    if not (math.isfinite(trend_at_entry) and math.isfinite(trend_now) and math.isfinite(peak_r)):
        for name, value in (("trend_at_entry", trend_at_entry), ("trend_now", trend_now), ("peak_r", peak_r)):
            _require_finite(name, value)
    _require_finite("r_now", r_now)
    w = weights or _DEFAULT_WEIGHTS
    flip = (_BIAS_VALUE[bias_at_entry] - _BIAS_VALUE[bias_now]) / 2
    flip = flip if side is Side.LONG else -flip
    regime_flip = 0.0 if flip <= 0.0 else (1.0 if flip >= 1.0 else flip)
    drop = (trend_at_entry - trend_now) / trend_at_entry if trend_at_entry > 0 else 0.0
    trend_drop = 0.0 if drop <= 0.0 else (1.0 if drop >= 1.0 else drop)
    given = (peak_r - r_now) / (peak_r if peak_r > 1.0 else 1.0)
    pnl_giveback = 0.0 if given <= 0.0 else (1.0 if given >= 1.0 else given)
    score = w.regime_flip * regime_flip + w.trend_drop * trend_drop + w.pnl_giveback * pnl_giveback
    return KillScore(regime_flip, trend_drop, pnl_giveback, 0.0 if score <= 0.0 else (1.0 if score >= 1.0 else score))


def _bounded(name: str, value: float, low: float, high: float) -> float:
    if math.isnan(value):
        raise ValueError(f"{name} is NaN")
    clamped = _clamp(value, low, high)
    if clamped != value:
        logger.warning("harvest %s %r out of [%s, %s], clamped to %r", name, value, low, high, clamped)
    return clamped


@functools.lru_cache(maxsize=1024)
def bound_theta(theta: HarvestTheta) -> HarvestTheta:
    """Theta with R values in [0.5, 10], t1 ≤ t2 ≤ t3, kill_threshold in [0.3, 0.9]; each clamp logged
    (once per distinct theta: a pure function, memoized, since the monitor bounds the same theta for every
    position of a bar)."""
    low, high = R_BOUNDS
    t1 = _bounded("t1_r", theta.t1_r, low, high)
    t2 = _bounded("t2_r", theta.t2_r, low, high)
    t3 = _bounded("t3_r", theta.t3_r, low, high)
    if t2 < t1:
        logger.warning("harvest t2_r %r below t1_r %r, raised to %r", t2, t1, t1)
        t2 = t1
    if t3 < t2:
        logger.warning("harvest t3_r %r below t2_r %r, raised to %r", t3, t2, t2)
        t3 = t2
    return HarvestTheta(
        t1_r=t1,
        t2_r=t2,
        t3_r=t3,
        lock_r=_bounded("lock_r", theta.lock_r, low, high),
        kill_threshold=_bounded("kill_threshold", theta.kill_threshold, *SCORE_BOUNDS),
    )


def bound_k_close(k_close: float) -> float:
    """K_CLOSE within [0.3, 0.9]; a clamp is logged."""
    return _bounded("k_close", k_close, *SCORE_BOUNDS)


def resolve_settings(policy: HarvestPolicy, context: HarvestContext) -> HarvestSettings:
    """Ask `policy` for its settings and bound them. The only way callers should get settings."""
    raw = policy.settings(context)
    return HarvestSettings(theta=bound_theta(raw.theta), k_close=bound_k_close(raw.k_close))


@dataclass(frozen=True, slots=True)
class AdaptiveHarvestPolicy:
    """The default policy: the rule in the module docstring, around `base`."""

    base: HarvestSettings = field(default_factory=HarvestSettings)
    trending_scale: float = 1.25
    ranging_scale: float = 0.8
    max_volatility_widening: float = 0.5
    exposure_knee: float = 0.5
    max_exposure_cut: float = 0.2
    volatile_cut: float = 0.05

    def __post_init__(self) -> None:
        if not 0 <= self.exposure_knee < 1:
            raise ValueError("exposure_knee must be in [0, 1)")

    def settings(self, context: HarvestContext) -> HarvestSettings:
        regime_scale = 1.0
        if context.regime is Regime.TRENDING:
            regime_scale = self.trending_scale
        elif context.regime is Regime.RANGING:
            regime_scale = self.ranging_scale
        ratio = context.volatility_ratio
        vol_scale = 1.0
        if ratio is not None and math.isfinite(ratio):
            vol_scale = 1.0 + self.max_volatility_widening * _clamp(ratio - 1.0, 0.0, 1.0)
        scale = regime_scale * vol_scale
        exposure = context.exposure if math.isfinite(context.exposure) else 1.0
        cut = self.max_exposure_cut * _clamp((exposure - self.exposure_knee) / (1 - self.exposure_knee), 0.0, 1.0)
        if context.regime is Regime.VOLATILE:
            cut += self.volatile_cut
        theta = self.base.theta
        return HarvestSettings(
            theta=replace(
                theta,
                t1_r=theta.t1_r * scale,
                t2_r=theta.t2_r * scale,
                t3_r=theta.t3_r * scale,
                kill_threshold=theta.kill_threshold - cut,
            ),
            k_close=self.base.k_close - cut,
        )


def heat_gate(kill_score: float, k_close: float = K_CLOSE) -> HeatDecision:
    """Propose closing when the kill score reaches K_CLOSE (bounded to [0.3, 0.9])."""
    if not math.isfinite(kill_score) or not 0 <= kill_score <= 1:
        raise ValueError(f"kill_score must be in [0, 1], got {kill_score!r}")
    k = bound_k_close(k_close)
    if kill_score >= k - _EPS:
        return HeatDecision(True, kill_score, k, f"kill score {kill_score:.3f} ≥ K_CLOSE {k:.3f}: close proposed")
    return HeatDecision(False, kill_score, k, f"kill score {kill_score:.3f} < K_CLOSE {k:.3f}: hold")


_PARTIALS: Sequence[tuple[HarvestAction, str, float]] = (
    (HarvestAction.PARTIAL_25, "T1", 0.75),
    (HarvestAction.PARTIAL_50, "T2", 0.50),
    (HarvestAction.PARTIAL_75, "T3", 0.25),
)


def propose(
    position: HarvestPosition,
    mark: float,
    theta: HarvestTheta,
    state: HarvestState,
    *,
    market: MarketView | None = None,
    weights: KillWeights | None = None,
    kill: KillScore | None = None,
) -> tuple[list[Proposal], HarvestState]:
    """Proposals for `position` at `mark`, and the new state. Without `market` there is no kill score;
    `kill`, when the caller already computed it for this mark and market (the heat gate), is used as is."""
    r = r_multiple(position, mark)
    th = bound_theta(theta)
    peak = max(state.peak_r, r)
    fired = set(state.fired)
    if HarvestAction.FULL_CLOSE_PROPOSED in fired:
        return [], HarvestState(frozenset(fired), peak)

    if market is not None:
        kill = kill or kill_score(
            side=position.side,
            bias_at_entry=position.bias_at_entry,
            bias_now=market.bias,
            trend_at_entry=position.trend_at_entry,
            trend_now=market.trend_strength,
            peak_r=peak,
            r_now=r,
            weights=weights,
        )
        if kill.score >= th.kill_threshold - _EPS:
            fired.add(HarvestAction.FULL_CLOSE_PROPOSED)
            reason = (
                f"kill score {kill.score:.3f} ≥ kill_threshold {th.kill_threshold:.3f} at R={r:.2f} "
                f"(regime_flip {kill.regime_flip:.2f}, trend_drop {kill.trend_drop:.2f}, "
                f"pnl_giveback {kill.pnl_giveback:.2f})"
            )
            full = Proposal(
                HarvestAction.FULL_CLOSE_PROPOSED, reason, r, fraction=1.0, remaining_fraction=0.0, kill=kill
            )
            return [full], HarvestState(frozenset(fired), peak)

    proposals: list[Proposal] = []
    if HarvestAction.UPDATE_SL not in fired and r >= th.lock_r - _EPS:
        stop = break_even_stop(
            side=position.side, entry_price=position.entry_price, taker_fee_rate=position.taker_fee_rate
        )
        if stop > 0 and _sign(position.side) * (mark - stop) > 0:
            fired.add(HarvestAction.UPDATE_SL)
            reason = f"R={r:.2f} ≥ lock_R={th.lock_r:.2f}: stop to break-even plus fees {stop:.8g}"
            proposals.append(Proposal(HarvestAction.UPDATE_SL, reason, r, new_stop=stop))

    targets = (th.t1_r, th.t2_r, th.t3_r)
    for (action, label, remaining), target in zip(_PARTIALS, targets, strict=True):
        if action in fired or r < target - _EPS:
            continue
        fired.add(action)
        reason = f"R={r:.2f} ≥ {label}={target:.2f}: reduce to {remaining:.0%} of the original position"
        proposals.append(Proposal(action, reason, r, fraction=0.25, remaining_fraction=remaining))
    return proposals, HarvestState(frozenset(fired), peak)
