"""Exit Brain: a position's exit plan (take-profits, stop-loss, trailing), validated before any order exists.

Pure and I/O-free apart from reading the bundled market metadata once. `build_plan(ctx, config)` returns an
`ExitPlan` or a `PlanRefused` whose reason the caller shows; a refused plan means the trade is not opened.

How a plan is made (long; a short mirrors every price around the entry):
- Distances from the entry, as fractions of the entry price. Without volatility data: the default ladder
  TP1 +1.95 % (30 %), TP2 +3.25 % (30 %), TP3 +5.20 % (40 %), SL -2 % (100 %). With an ATR (price units, turned
  into a fraction of the entry) or a volatility (fraction of the price): TP_i = `atr_tp_multiples[i]` x vol and
  SL = `atr_sl_multiple` x vol (the defaults give the static ladder at vol = 1 %). When both are given the ATR
  wins. A regime scales the take-profit distances (trending 1.25x, ranging 0.8x, volatile 1x; an unknown regime is
  noted and ignored); a governance policy scales the stop distance (CONSERVATIVE 1.5x, BALANCED 1x, AGGRESSIVE 0.8x; an
  unknown policy refuses the plan). Every distance is at least `min_distance` (0.2 %, above the round-trip fees).
- The PARTIAL_TRAILING style: one take-profit of `partial_fraction` (50 %) at +3 % (or `atr_partial_tp_multiple`
  x vol) and a TRAILING leg for the rest; its trigger price is where the trailing stop arms (+1 %), after which it
  trails `trail_distance` behind the best price (`TrailingStop`). The SL leg protects the whole position in both
  styles.
- Liquidation: from `margin.liquidation_price` with the Binance leverage tier for the position's notional and
  the wallet balance (isolated: the given isolated margin, else the initial margin entry x amount / leverage;
  cross: the given wallet balance, else that same initial margin, the conservative choice). The stop must lie
  strictly inside the bound liquidation + `liquidation_buffer` x entry (minus, for a short). A stop that lies at
  or beyond the bound is TIGHTENED to the first tick strictly inside it, and the plan's notes say so, provided
  the bound is more than `min_distance` from the entry. Otherwise (liquidation + buffer within `min_distance` of
  the entry or beyond it, as at 100x-125x on BTC) the plan is refused. Without a liquidation to bound it, a stop
  or a target that would be at or below zero (a huge percentage or volatility) is refused, never clamped: no
  price ever goes out at <= 0 (a long's stop below zero WITH a liquidation price is tightened like any other).
- Rounding: prices to the market tick with ccxt (`precision.price_to_precision`, round half to nearest; a stop
  that rounding pushed onto or beyond the bound is moved one tick towards the entry). Quantities with ccxt's
  `amount_to_precision` (truncation); the last profit leg takes the remainder so the legs add up to the position.
- Merging: profit legs whose rounded prices coincide merge; a profit leg whose quantity is below the market's
  minimum amount merges into the next leg (its price kept), the last one into the previous leg. Each merge is
  noted. A position below the market minimum is refused.
- Fractions: the profit legs (TP and TRAILING) add up to exactly 1; the SL leg's fraction is 1 (all that remains).
- Finally `validate_plan`'s checks run on the finished plan (all but the precision round-trip: the prices and
  quantities have just come from ccxt); any problem refuses it. Callers may run `validate_plan` on any plan.
Not checked here: the leverage against the tier's maximum and the minimum notional (RiskGuard's checks).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from functools import cache
from typing import Literal

from app.domains.execution.margin import DEFAULT_LIQUIDATION_BUFFER_PCT, leverage_tier, liquidation_price
from app.domains.execution.precision import amount_to_precision, price_to_precision
from app.domains.markets.catalog import Market, MarketCatalog, UnknownSymbol

Number = Decimal | float | int
Side = Literal["LONG", "SHORT"]
ONE = Decimal(1)


class LegKind(StrEnum):
    TP = "TP"
    SL = "SL"
    TRAILING = "TRAILING"


class ExitStyle(StrEnum):
    LADDER = "LADDER"  # TP1/TP2/TP3 + SL
    PARTIAL_TRAILING = "PARTIAL_TRAILING"  # one partial TP, the rest trails, + SL


@dataclass(frozen=True, slots=True)
class ExitConfig:
    """Every number of the Exit Brain. Distances and buffers are fractions of the entry price."""

    style: ExitStyle = ExitStyle.LADDER
    # The static ladder (no volatility data).
    tp_distances: tuple[float, ...] = (0.0195, 0.0325, 0.0520)
    tp_fractions: tuple[float, ...] = (0.30, 0.30, 0.40)
    sl_distance: float = 0.02
    # Volatility-scaled distances: multiples of the volatility (ATR / entry).
    atr_tp_multiples: tuple[float, ...] = (1.95, 3.25, 5.20)
    atr_sl_multiple: float = 2.0
    min_distance: float = 0.002  # floor for every TP/SL distance, and the closest a tightened stop may be
    # Governance policy: the stop distance is multiplied by these.
    conservative_stop_scale: float = 1.5
    balanced_stop_scale: float = 1.0
    aggressive_stop_scale: float = 0.8
    # Regime: the take-profit distances are multiplied by these.
    trending_tp_scale: float = 1.25
    ranging_tp_scale: float = 0.8
    volatile_tp_scale: float = 1.0
    # Trailing stop: armed once the profit exceeds `trail_activation`, then `trail_distance` behind the best price.
    trail_activation: float = 0.01
    trail_distance: float = 0.005
    # The PARTIAL_TRAILING style.
    partial_tp_distance: float = 0.03
    atr_partial_tp_multiple: float = 3.0
    partial_fraction: float = 0.5
    # The stop must trigger strictly before liquidation +/- this buffer.
    # the same buffer as RiskGuard's STOP_BEYOND_LIQUIDATION (one setting), as a fraction of the entry
    liquidation_buffer: float = float(DEFAULT_LIQUIDATION_BUFFER_PCT) / 100

    def regime_tp_scale(self, regime: str) -> float | None:
        """The take-profit scale of `regime` ("trending" / "ranging" / "volatile", any case); None if unknown."""
        scales = {
            "trending": self.trending_tp_scale,
            "ranging": self.ranging_tp_scale,
            "volatile": self.volatile_tp_scale,
        }
        return scales.get(str(regime).strip().lower())

    def __post_init__(self) -> None:
        positive = {
            "sl_distance": self.sl_distance,
            "atr_sl_multiple": self.atr_sl_multiple,
            "min_distance": self.min_distance,
            "conservative_stop_scale": self.conservative_stop_scale,
            "balanced_stop_scale": self.balanced_stop_scale,
            "aggressive_stop_scale": self.aggressive_stop_scale,
            "trending_tp_scale": self.trending_tp_scale,
            "ranging_tp_scale": self.ranging_tp_scale,
            "volatile_tp_scale": self.volatile_tp_scale,
            "trail_activation": self.trail_activation,
            "trail_distance": self.trail_distance,
            "partial_tp_distance": self.partial_tp_distance,
            "atr_partial_tp_multiple": self.atr_partial_tp_multiple,
            "liquidation_buffer": self.liquidation_buffer,
        }
        for name, value in [*positive.items(), *(("tp_distances", d) for d in self.tp_distances)]:
            if not _dec(value).is_finite() or value <= 0:
                raise ValueError(f"ExitConfig.{name} must be finite and > 0, got {value}")
        for value in self.atr_tp_multiples:
            if not _dec(value).is_finite() or value <= 0:
                raise ValueError(f"ExitConfig.atr_tp_multiples must be finite and > 0, got {value}")
        if not self.tp_distances or len(self.tp_distances) != len(self.tp_fractions):
            raise ValueError("ExitConfig.tp_distances and tp_fractions must be non-empty and of the same length")
        if len(self.atr_tp_multiples) != len(self.tp_distances):
            raise ValueError("ExitConfig.atr_tp_multiples must have one multiple per take-profit")
        for seq, name in ((self.tp_distances, "tp_distances"), (self.atr_tp_multiples, "atr_tp_multiples")):
            if list(seq) != sorted(set(seq)):
                raise ValueError(f"ExitConfig.{name} must be strictly increasing")
        fractions = [_dec(f) for f in self.tp_fractions]
        if any(f <= 0 for f in fractions) or sum(fractions) != ONE:
            raise ValueError(f"ExitConfig.tp_fractions must be > 0 and sum to exactly 1, got {self.tp_fractions}")
        if not 0 < self.partial_fraction < 1:
            raise ValueError(f"ExitConfig.partial_fraction must be in (0, 1), got {self.partial_fraction}")
        if self.trail_distance >= 1:
            raise ValueError(f"ExitConfig.trail_distance must be < 1, got {self.trail_distance}")


@dataclass(frozen=True, slots=True)
class ExitContext:
    """The position an exit plan is for. Prices in the quote currency (USDT); `amount` in contracts."""

    side: str  # "LONG" / "SHORT"
    entry_price: Number
    amount: Number  # contracts, at the market's amount precision
    leverage: Number
    symbol: str  # ccxt unified (BTC/USDT:USDT) or Binance id (BTCUSDT)
    atr: Number | None = None  # in price units
    volatility: Number | None = None  # a fraction of the price (0.01 = 1 %)
    regime: str | None = None  # "trending" / "ranging" / "volatile" (signals.regime.Regime)
    policy: str | None = None  # "CONSERVATIVE" / "BALANCED" / "AGGRESSIVE" (governance PortfolioPolicy)
    wallet_balance: Number | None = None  # isolated margin (isolated) or wallet balance (cross)
    margin_mode: Literal["isolated", "cross"] = "isolated"
    other_positions: Sequence[Mapping[str, object]] = ()  # cross mode: the account's other positions


@dataclass(frozen=True, slots=True)
class ExitLeg:
    kind: LegKind
    trigger_price: Decimal  # at the market tick; for TRAILING, the price at which the trailing stop arms
    fraction: Decimal  # of the position
    quantity: Decimal  # contracts at the market's amount precision
    reason: str


@dataclass(frozen=True, slots=True)
class PlanRefused:
    reason: str


@dataclass(frozen=True, slots=True)
class TrailingStop:
    """A trailing stop's state. Arms once the best price's profit exceeds `activation`; then the stop sits
    `distance` behind the best price and only ever moves in the position's favour. `update` returns a new state."""

    side: Side
    entry_price: Decimal
    activation: Decimal = Decimal("0.01")
    distance: Decimal = Decimal("0.005")
    best_price: Decimal | None = None
    stop_price: Decimal | None = None  # None until armed

    def __post_init__(self) -> None:
        if self.side not in ("LONG", "SHORT"):
            raise ValueError(f"side must be LONG or SHORT, got {self.side!r}")
        if not (self.entry_price.is_finite() and self.entry_price > 0):
            raise ValueError(f"entry price must be finite and > 0, got {self.entry_price}")
        if not (self.activation.is_finite() and self.activation >= 0):
            raise ValueError(f"activation must be finite and >= 0, got {self.activation}")
        if not (self.distance.is_finite() and 0 < self.distance < 1):
            raise ValueError(f"distance must be in (0, 1), got {self.distance}")

    @property
    def armed(self) -> bool:
        return self.stop_price is not None

    def update(self, mark: Number) -> "TrailingStop":
        price = _dec(mark)
        if not (price.is_finite() and price > 0):
            raise ValueError(f"mark price must be finite and > 0, got {mark}")
        s = _sign(self.side)
        best = price
        if self.best_price is not None and s * (self.best_price - price) > 0:
            best = self.best_price
        stop = self.stop_price
        if s * (best - self.entry_price) / self.entry_price > self.activation:
            candidate = best * (ONE - s * self.distance)
            if stop is None or s * (candidate - stop) > 0:
                stop = candidate
        if best == self.best_price and stop == self.stop_price:
            return self  # nothing moved (the common case): no new state
        return self._moved(best, stop)

    def _moved(self, best: Decimal, stop: Decimal | None) -> "TrailingStop":
        """A copy with a new best price and stop, without re-validating what did not change (hot path)."""
        new = object.__new__(TrailingStop)
        for name in ("side", "entry_price", "activation", "distance"):
            object.__setattr__(new, name, getattr(self, name))
        object.__setattr__(new, "best_price", best)
        object.__setattr__(new, "stop_price", stop)
        return new

    def triggered(self, mark: Number) -> bool:
        """Whether `mark` has reached the armed stop (a long's mark at or below it, a short's at or above)."""
        if self.stop_price is None:
            return False
        return _sign(self.side) * (_dec(mark) - self.stop_price) <= 0


@dataclass(frozen=True, slots=True)
class ExitPlan:
    symbol: str  # ccxt unified
    side: Side
    entry_price: Decimal
    amount: Decimal
    leverage: Decimal
    legs: tuple[ExitLeg, ...]
    notes: tuple[str, ...] = field(default=())
    liquidation_price: Decimal | None = None
    stop_bound: Decimal | None = None  # liquidation +/- buffer: the stop lies strictly inside it
    min_amount: Decimal = Decimal(0)
    price_tick: Decimal = Decimal(0)
    trail_activation: Decimal | None = None  # fraction; with a TRAILING leg
    trail_distance: Decimal | None = None

    @property
    def stop_loss(self) -> ExitLeg:
        return next(leg for leg in self.legs if leg.kind is LegKind.SL)

    @property
    def profit_legs(self) -> tuple[ExitLeg, ...]:
        return tuple(leg for leg in self.legs if leg.kind is not LegKind.SL)

    @property
    def take_profits(self) -> tuple[ExitLeg, ...]:
        return tuple(leg for leg in self.legs if leg.kind is LegKind.TP)

    def trailing_stop(self) -> TrailingStop | None:
        """The initial (unarmed) trailing-stop state of the TRAILING leg, if the plan has one."""
        if self.trail_activation is None or self.trail_distance is None:
            return None
        if not any(leg.kind is LegKind.TRAILING for leg in self.legs):
            return None
        return TrailingStop(
            side=self.side, entry_price=self.entry_price, activation=self.trail_activation, distance=self.trail_distance
        )


# --- building -----------------------------------------------------------------------------------------------


@cache
def _default_config() -> ExitConfig:
    return ExitConfig()


@cache
def _bundled_catalog() -> MarketCatalog:
    return MarketCatalog.load()


def build_plan(
    ctx: ExitContext, config: ExitConfig | None = None, *, catalog: MarketCatalog | None = None
) -> ExitPlan | PlanRefused:
    """The exit plan for `ctx`, validated, or the reason there is none (then the trade must not be opened)."""
    cfg = config or _default_config()
    try:
        return _build(ctx, cfg, catalog or _bundled_catalog())
    except _Refusal as refusal:
        return PlanRefused(str(refusal))


class _Refusal(Exception):
    pass


@dataclass(slots=True)
class _Leg:
    kind: LegKind
    price: Decimal
    fraction: Decimal
    reason: str


def _build(ctx: ExitContext, cfg: ExitConfig, catalog: MarketCatalog) -> ExitPlan:
    side = _side(ctx.side)
    s = _sign(side)
    entry = _positive("entry price", ctx.entry_price)
    amount = _positive("amount", ctx.amount)
    leverage = _positive("leverage", ctx.leverage)
    if leverage < 1:
        raise _Refusal(f"leverage must be >= 1, got {leverage}")
    try:
        market = catalog.resolve(ctx.symbol)
    except UnknownSymbol as exc:
        raise _Refusal(str(exc)) from exc
    symbol = market.symbol
    if amount < market.min_amount:
        raise _Refusal(f"position amount {amount} is below the minimum amount {market.min_amount} of {symbol}")
    if amount_to_precision(symbol, amount) != amount:
        raise _Refusal(f"position amount {amount} is not at the amount precision ({market.amount_step}) of {symbol}")
    notes: list[str] = []

    # Distances.
    min_d = _dec(cfg.min_distance)
    vol = _volatility(ctx, entry, notes)
    tp_scale = _regime_scale(ctx.regime, cfg, notes)
    stop_scale = _policy_scale(ctx.policy, cfg)
    if vol is None:
        sl_d = _dec(cfg.sl_distance)
        tp_ds = [_dec(d) for d in cfg.tp_distances]
        partial_d = _dec(cfg.partial_tp_distance)
    else:
        sl_d = _dec(cfg.atr_sl_multiple) * vol
        tp_ds = [_dec(m) * vol for m in cfg.atr_tp_multiples]
        partial_d = _dec(cfg.atr_partial_tp_multiple) * vol
    sl_d = max(sl_d * stop_scale, min_d)
    tp_ds = [max(d * tp_scale, min_d) for d in tp_ds]
    partial_d = max(partial_d * tp_scale, min_d)

    # Raw prices.
    if cfg.style is ExitStyle.LADDER:
        fractions = [_dec(f) for f in cfg.tp_fractions]
        profit = [
            _Leg(LegKind.TP, entry * (ONE + s * d), f, f"TP{i} {_pct(s * d)} for {_pct(f, signed=False)}")
            for i, (d, f) in enumerate(zip(tp_ds, fractions, strict=True), start=1)
        ]
        trail_activation = trail_distance = None
    else:
        part = _dec(cfg.partial_fraction)
        trail_activation, trail_distance = _dec(cfg.trail_activation), _dec(cfg.trail_distance)
        profit = [
            _Leg(LegKind.TP, entry * (ONE + s * partial_d), part, f"partial TP {_pct(s * partial_d)}"),
            _Leg(
                LegKind.TRAILING,
                entry * (ONE + s * trail_activation),
                ONE - part,
                f"the rest trails {_pct(trail_distance, signed=False)} behind the best price once "
                f"{_pct(s * trail_activation)} is exceeded",
            ),
        ]
        profit.sort(key=lambda leg: s * leg.price)
    for leg in profit:
        if leg.price <= 0:
            raise _Refusal(f"{leg.reason} would put the price at {leg.price} (<= 0)")
    sl_raw = entry * (ONE - s * sl_d)
    sl_reason = f"stop {_pct(-s * sl_d)}"

    # Liquidation and the stop.
    liq, bound = _liquidation(ctx, cfg, side, entry, amount, leverage, symbol)
    if bound is not None:
        closest = entry * (ONE - s * min_d)  # the closest a stop may sit to the entry
        if s * (bound - closest) >= 0:
            raise _Refusal(
                f"no valid stop: liquidation at {liq:.8g} plus the {_pct(_dec(cfg.liquidation_buffer), signed=False)} "
                f"buffer ({bound:.8g}) leaves no stop at least {_pct(min_d, signed=False)} from the entry {entry} "
                f"at {leverage}x; the trade must not be opened"
            )
        if s * (sl_raw - bound) <= 0:
            notes.append(
                f"stop tightened from {sl_raw:.8g} ({_pct(-s * sl_d)}) to inside liquidation {liq:.8g} "
                f"+ buffer ({bound:.8g})"
            )
            sl_reason = f"stop tightened inside liquidation {liq:.8g} + buffer (was {_pct(-s * sl_d)})"
            sl_raw = bound
    if sl_raw < market.price_tick:
        raise _Refusal(f"{sl_reason} would put the stop at {sl_raw:.8g} (below the price tick {market.price_tick})")
    sl = price_to_precision(symbol, sl_raw)
    if bound is not None:
        while s * (sl - bound) <= 0:
            sl += s * market.price_tick
    if s * (entry - sl) <= 0:
        raise _Refusal(f"no valid stop: rounded to the tick the stop {sl} is not on the loss side of entry {entry}")

    # Profit legs: round, check the side, merge equal prices.
    for leg in profit:
        if leg.price < market.price_tick:
            raise _Refusal(f"{leg.reason} would put the price at {leg.price:.8g} (below the tick {market.price_tick})")
        leg.price = price_to_precision(symbol, leg.price)
        if s * (leg.price - entry) <= 0:
            raise _Refusal(f"{leg.reason}: rounded to the tick, {leg.price} is not on the profit side of {entry}")
    profit = _merge_equal_prices(profit, notes)
    legs = _merge_below_minimum(profit, amount, market, notes)

    plan = ExitPlan(
        symbol=symbol,
        side=side,
        entry_price=entry,
        amount=amount,
        leverage=leverage,
        legs=(*legs, ExitLeg(LegKind.SL, sl, ONE, amount, sl_reason)),
        notes=tuple(notes),
        liquidation_price=liq,
        stop_bound=bound,
        min_amount=market.min_amount,
        price_tick=market.price_tick,
        trail_activation=trail_activation,
        trail_distance=trail_distance,
    )
    problems = _problems(plan, recheck_precision=False)  # prices and quantities came from ccxt just above
    if problems:
        raise _Refusal("; ".join(problems))
    return plan


def _liquidation(
    ctx: ExitContext, cfg: ExitConfig, side: Side, entry: Decimal, amount: Decimal, leverage: Decimal, symbol: str
) -> tuple[Decimal | None, Decimal | None]:
    """The liquidation price and the stop's bound (liquidation moved towards the entry by the buffer)."""
    if ctx.margin_mode not in ("isolated", "cross"):
        raise _Refusal(f"margin mode must be isolated or cross, got {ctx.margin_mode!r}")
    notional = entry * amount
    wallet = notional / leverage if ctx.wallet_balance is None else _positive("wallet balance", ctx.wallet_balance)
    try:
        tier = leverage_tier(symbol=symbol, notional=notional)
    except (LookupError, ValueError) as exc:
        raise _Refusal(f"no leverage tier for {symbol} at notional {notional}: {exc}") from exc
    try:
        liq = liquidation_price(
            side=side,
            open_price=entry,
            amount=amount,
            wallet_balance=wallet,
            mm_ratio=_dec(tier.mm_ratio),
            maintenance_amount=_dec(tier.maintenance_amount),
            margin_mode=ctx.margin_mode,
            other_positions=tuple(ctx.other_positions),
        )
    except (TypeError, ValueError) as exc:  # e.g. a malformed other position in cross mode
        raise _Refusal(f"no liquidation price: {exc}") from exc
    if liq is None:
        return None, None
    liq = _dec(liq)
    return liq, liq + _sign(side) * _dec(cfg.liquidation_buffer) * entry


def _merge_equal_prices(profit: list[_Leg], notes: list[str]) -> list[_Leg]:
    merged: list[_Leg] = []
    for leg in profit:
        if merged and merged[-1].price == leg.price:
            prev = merged[-1]
            notes.append(f"{prev.reason} and {leg.reason} round to the same price {leg.price}: merged")
            prev.kind, prev.reason = leg.kind, f"{prev.reason} + {leg.reason}"
            prev.fraction += leg.fraction
        else:
            merged.append(leg)
    return merged


def _quantities(legs: list[_Leg], amount: Decimal, market: Market) -> list[Decimal]:
    """Each leg's share truncated to the amount precision; the last leg takes the remainder."""
    quantities: list[Decimal] = []
    for leg in legs[:-1]:
        raw = amount * leg.fraction
        quantities.append(amount_to_precision(market.symbol, raw) if raw >= market.min_amount else Decimal(0))
    quantities.append(amount - sum(quantities, Decimal(0)))
    return quantities


def _merge_below_minimum(profit: list[_Leg], amount: Decimal, market: Market, notes: list[str]) -> list[ExitLeg]:
    legs = list(profit)
    while True:
        quantities = _quantities(legs, amount, market)
        small = next((i for i, q in enumerate(quantities) if q < market.min_amount), None)
        if small is None or len(legs) == 1:
            break
        into = small + 1 if small + 1 < len(legs) else small - 1
        gone, kept = legs[small], legs[into]
        notes.append(
            f"{gone.reason} would be {amount * gone.fraction:.8g} contracts, below the minimum amount "
            f"{market.min_amount}: merged into {kept.reason}"
        )
        kept.fraction += gone.fraction
        del legs[small]
    return [ExitLeg(leg.kind, leg.price, leg.fraction, q, leg.reason) for leg, q in zip(legs, quantities, strict=True)]


# --- validation ---------------------------------------------------------------------------------------------


def validate_plan(plan: ExitPlan) -> list[str]:
    """Every problem with `plan` (empty when it may be sent): finite positive prices at the tick on the right
    side of the entry, fractions adding up to 1, quantities at precision and >= the minimum adding up to the
    position, and the stop strictly inside liquidation + buffer."""
    return _problems(plan, recheck_precision=True)


def _problems(plan: ExitPlan, *, recheck_precision: bool) -> list[str]:
    problems: list[str] = []
    s = _sign(plan.side)
    entry = plan.entry_price
    stops = [leg for leg in plan.legs if leg.kind is LegKind.SL]
    profit = plan.profit_legs
    if len(stops) != 1:
        problems.append(f"a plan needs exactly one stop-loss leg, found {len(stops)}")
    if not profit:
        problems.append("a plan needs at least one take-profit or trailing leg")
    for leg in plan.legs:
        price, qty = leg.trigger_price, leg.quantity
        if not (price.is_finite() and price > 0 and price >= plan.price_tick):
            problems.append(f"{leg.kind} price {price} is not finite and at least one tick (> 0)")
            continue
        if recheck_precision and price_to_precision(plan.symbol, price) != price:
            problems.append(f"{leg.kind} price {price} is not at the price tick")
        wanted = -s if leg.kind is LegKind.SL else s
        if wanted * (price - entry) <= 0:
            problems.append(f"{leg.kind} price {price} is on the wrong side of entry {entry} for a {plan.side}")
        if not (qty.is_finite() and qty > 0 and qty >= plan.min_amount):
            problems.append(f"{leg.kind} quantity {qty} is below the minimum amount {plan.min_amount}")
        elif recheck_precision and amount_to_precision(plan.symbol, qty) != qty:
            problems.append(f"{leg.kind} quantity {qty} is not at the amount precision")
        if not (leg.fraction.is_finite() and 0 < leg.fraction <= 1):
            problems.append(f"{leg.kind} fraction {leg.fraction} is not in (0, 1]")
    if profit and sum((leg.fraction for leg in profit), Decimal(0)) != ONE:
        problems.append("the take-profit fractions do not add up to 1")
    if profit and sum((leg.quantity for leg in profit), Decimal(0)) != plan.amount:
        problems.append("the take-profit quantities do not add up to the position")
    for stop in stops:
        if stop.fraction != ONE or stop.quantity != plan.amount:
            problems.append("the stop-loss must cover the whole position")
        price = stop.trigger_price
        if plan.stop_bound is not None and price.is_finite() and s * (price - plan.stop_bound) <= 0:
            problems.append(
                f"the stop {price} is at or beyond liquidation {plan.liquidation_price} + buffer ({plan.stop_bound})"
            )
    return problems


# --- helpers ------------------------------------------------------------------------------------------------


def _dec(value: Number) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise TypeError("a bool is not a number here")
    if isinstance(value, int):
        return Decimal(value)
    return Decimal(repr(float(value)))


def _sign(side: Side) -> int:
    return 1 if side == "LONG" else -1


def _side(value: str) -> Side:
    side = str(value).strip().upper()
    if side == "LONG":
        return "LONG"
    if side == "SHORT":
        return "SHORT"
    raise _Refusal(f"side must be LONG or SHORT, got {value!r}")


def _positive(name: str, value: Number) -> Decimal:
    try:
        number = _dec(value)
    except (TypeError, ValueError) as exc:
        raise _Refusal(f"{name} is not a number: {value!r}") from exc
    if not number.is_finite() or number <= 0:
        raise _Refusal(f"{name} must be finite and > 0, got {value}")
    return number


def _volatility(ctx: ExitContext, entry: Decimal, notes: list[str]) -> Decimal | None:
    if ctx.atr is not None:
        if ctx.volatility is not None:
            notes.append("both ATR and volatility given: the ATR is used")
        return _positive("ATR", ctx.atr) / entry
    if ctx.volatility is not None:
        return _positive("volatility", ctx.volatility)
    return None


def _regime_scale(regime: str | None, cfg: ExitConfig, notes: list[str]) -> Decimal:
    if regime is None:
        return ONE
    scale = cfg.regime_tp_scale(regime)
    if scale is None:
        notes.append(f"unknown regime {regime!r}: take-profit distances not scaled")
        return ONE
    return _dec(scale)


def _policy_scale(policy: str | None, cfg: ExitConfig) -> Decimal:
    if policy is None:
        return ONE
    scales = {
        "CONSERVATIVE": cfg.conservative_stop_scale,
        "BALANCED": cfg.balanced_stop_scale,
        "AGGRESSIVE": cfg.aggressive_stop_scale,
    }
    key = str(policy).strip().upper()
    if key not in scales:
        raise _Refusal(f"unknown governance policy {policy!r} (CONSERVATIVE, BALANCED or AGGRESSIVE)")
    return _dec(scales[key])


def _pct(fraction: Decimal, *, signed: bool = True) -> str:
    value = float(fraction * 100)
    return f"{value:+.4g}%" if signed else f"{value:.4g}%"
