"""Position size: a fraction of live equity times a multiplier in [0.25, 1.5], clipped by the risk limits.

The multiplier comes from a small learned policy (`SizingPolicy`, a torch MLP over confidence, volatility,
recent pnl trend and margin use) when one is trained, else from half Kelly on the signal's confidence.
Whatever the source, the notional is then clipped by the same limits RiskGuard enforces (profile cap, risk
per trade at the stop, the hard 50 % of equity per position, the hard free-margin floor), so a sized trade is
never denied for its size. There is no dollar base size and no default leverage: a signal that does not
carry a usable leverage, or whose size comes out as nothing, is skipped with a reason and a `sizing_skipped`
log line.
Last, `fit_to_market` rounds the size as the exchange fills it (amount step, minimum amount and notional),
so a proposal sent to POST /trades at the same price is never refused for its size.

The policy is trained on episodes replayed from real candles (`replay_episodes`) by direct utility
maximisation, see `SizingPolicy.train_on_episodes`.
"""

import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from app.core.clock import HOUR_MS
from app.domains.markets.candles import TIMEFRAME_MS, Candles, FloatArray, IntArray
from app.domains.markets.catalog import BelowExchangeMinimum, Market, OutOfRange
from app.domains.markets.marketdata import MarketData
from app.domains.risk.guard import RiskGuardConfig
from app.domains.risk.stack import EffectiveLimits, max_notional
from app.domains.signals.fallback import momentum_series
from app.domains.signals.features import compute_features
from app.domains.signals.models.tensors import load_state_dict, save_state_dict, seeded_torch

logger = logging.getLogger(__name__)

INPUTS = ("confidence", "volatility", "pnl_trend", "margin_use")
MULTIPLIER_RANGE = (0.25, 1.5)
WEIGHTS_FILE = "policy.pt"
CONFIG_FILE = "config.json"
FORMAT = "sizing-policy/1"
HIDDEN = 16
CENT = Decimal("0.01")
USDT_STEP = Decimal("1e-8")  # USDT is counted to 8 decimals: the finest notional POST /trades takes
HUNDRED = Decimal(100)
# RiskGuard's assumption when an intent has no stop: sizing must assume the same or its sizes get denied.
ASSUMED_STOP_DISTANCE_PCT = RiskGuardConfig().assumed_stop_distance_pct


@dataclass(frozen=True)
class SizingInputs:
    """What the policy sees about a signal and the account.

    `volatility` is the 24 h realized volatility of 1 h log returns (the `rvol_24` feature), `pnl_trend` the
    realized pnl of the recent trades (e.g. the last 20) as a fraction of equity, `margin_use` used margin
    over equity.
    """

    confidence: float
    volatility: float
    pnl_trend: float
    margin_use: float

    def as_array(self) -> FloatArray:
        return np.array([self.confidence, self.volatility, self.pnl_trend, self.margin_use], dtype=np.float64)

    def problem(self) -> str | None:
        """Why these inputs cannot be sized, or None when they can."""
        values = self.as_array()
        if not np.isfinite(values).all():
            return f"non-finite input {dict(zip(INPUTS, values.tolist(), strict=True))}"
        if not 0.0 <= self.confidence <= 1.0:
            return f"confidence={self.confidence} outside [0, 1]"
        if self.volatility < 0 or self.margin_use < 0:
            return f"volatility={self.volatility} and margin_use={self.margin_use} must be >= 0"
        return None


@dataclass(frozen=True)
class SizingConfig:
    """How big a trade is before the risk limits; every size is a fraction of equity, never dollars.

    `kelly_full_scale` is the scaled Kelly fraction at which the Kelly fallback reaches `max_multiplier`
    (see `kelly_multiplier`); `payoff_ratio` is the win/loss ratio the fallback assumes (1.0: take profit
    as far as the stop). `risk_aversion` is λ of the training utility g - λ/2 g² on the stake's return g.
    """

    base_fraction: float = 0.02
    min_multiplier: float = MULTIPLIER_RANGE[0]
    max_multiplier: float = MULTIPLIER_RANGE[1]
    kelly_fraction: float = 0.5
    kelly_full_scale: float = 0.2
    payoff_ratio: float = 1.0
    risk_aversion: float = 2.0
    learning_rate: float = 0.01
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        values = dataclasses.asdict(self)
        if not all(math.isfinite(v) for v in values.values()):
            raise ValueError(f"sizing config values must be finite: {values}")
        if not 0.0 < self.base_fraction <= 1.0:
            raise ValueError(f"base_fraction is a fraction of equity in (0, 1], got {self.base_fraction}")
        low, high = MULTIPLIER_RANGE
        if not low <= self.min_multiplier <= self.max_multiplier <= high:
            raise ValueError(
                f"need {low} <= min_multiplier <= max_multiplier <= {high}, "
                f"got {self.min_multiplier}, {self.max_multiplier}"
            )
        if not 0.0 < self.kelly_fraction <= 1.0:
            raise ValueError(f"kelly_fraction must be in (0, 1], got {self.kelly_fraction}")
        if min(self.kelly_full_scale, self.payoff_ratio, self.learning_rate) <= 0:
            raise ValueError("kelly_full_scale, payoff_ratio and learning_rate must be positive")
        if self.risk_aversion < 0 or self.weight_decay < 0:
            raise ValueError("risk_aversion and weight_decay must be >= 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SizingConfig":
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown sizing config fields: {sorted(unknown)}")
        return cls(**{k: float(v) for k, v in data.items()})


# --- Kelly fallback --------------------------------------------------------------------------------


def kelly_fraction(win_probability: float, payoff_ratio: float) -> float:
    """Kelly's optimal fraction p - (1 - p) / b, clipped at 0: with no edge the bet is nothing, never short."""
    if not (math.isfinite(win_probability) and 0.0 <= win_probability <= 1.0):
        raise ValueError(f"win_probability must be in [0, 1], got {win_probability}")
    if not (math.isfinite(payoff_ratio) and payoff_ratio > 0):
        raise ValueError(f"payoff_ratio must be positive, got {payoff_ratio}")
    return max(0.0, win_probability - (1.0 - win_probability) / payoff_ratio)


def kelly_multiplier(confidence: float, payoff_ratio: float, config: SizingConfig) -> float:
    """The multiplier half Kelly asks for; 0.0 means no edge, i.e. no trade.

    Mapping: f = config.kelly_fraction × kelly_fraction(confidence, payoff_ratio). f = 0 gives 0.0 (skip);
    otherwise the multiplier rises linearly from `min_multiplier` (an edge just above zero) to
    `max_multiplier` at f = `kelly_full_scale` and stays there above it:
    min + (max - min) × min(1, f / kelly_full_scale). With the defaults, p = 0.6 and b = 1 (full Kelly 0.2,
    half 0.1) give 0.875; p >= 0.7 at b = 1 gives 1.5.
    """
    scaled = config.kelly_fraction * kelly_fraction(confidence, payoff_ratio)
    if scaled <= 0.0:
        return 0.0
    span = config.max_multiplier - config.min_multiplier
    return config.min_multiplier + span * min(1.0, scaled / config.kelly_full_scale)


# --- the learned policy ----------------------------------------------------------------------------


class SizingPolicyNet(nn.Module):
    """4 standardised inputs → 16 → 16 → 1, squashed into [low, high] by low + (high - low)·sigmoid.

    The input standardisation is kept as buffers, so the state_dict alone reproduces the multipliers.
    """

    input_mean: torch.Tensor
    input_scale: torch.Tensor

    def __init__(self, low: float = MULTIPLIER_RANGE[0], high: float = MULTIPLIER_RANGE[1]) -> None:
        super().__init__()
        self.low, self.high = low, high
        self.body = nn.Sequential(
            nn.Linear(len(INPUTS), HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1)
        )
        self.register_buffer("input_mean", torch.zeros(len(INPUTS), dtype=torch.float64))
        self.register_buffer("input_scale", torch.ones(len(INPUTS), dtype=torch.float64))
        self.double()

    def start_at(self, multiplier: float) -> None:
        """Make the net output `multiplier` everywhere, so training starts from a constant sizing rule."""
        share = (multiplier - self.low) / (self.high - self.low) if self.high > self.low else 0.5
        share = min(max(share, 1e-3), 1.0 - 1e-3)
        last = self.body[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(math.log(share / (1.0 - share)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Multipliers `(B,)` for raw `(B, 4)` inputs in the order of `INPUTS`."""
        z: torch.Tensor = self.body((x - self.input_mean) / self.input_scale).squeeze(-1)
        return self.low + (self.high - self.low) * torch.sigmoid(z)


@dataclass(frozen=True)
class Episode:
    """One symbol replayed: per decision step the policy's inputs and what a unit stake then earned.

    `stake_return` is the return of the base stake (equity × base_fraction) over the holding period, in the
    signal's direction and net of fees; a multiplier m earns m × stake_return on it.
    """

    symbol: str
    timestamp: IntArray
    inputs: FloatArray  # (n, len(INPUTS))
    stake_return: FloatArray  # (n,)

    def __len__(self) -> int:
        return int(self.timestamp.shape[0])


def mean_utility(stake_return: FloatArray, multiplier: FloatArray | float, risk_aversion: float) -> float:
    """Mean of g - λ/2 g² with g = multiplier × stake_return: return with a penalty on its spread."""
    g = np.asarray(multiplier, dtype=np.float64) * stake_return
    return float(np.mean(g - 0.5 * risk_aversion * g * g))


def _stack(episodes: Sequence[Episode]) -> tuple[FloatArray, FloatArray]:
    if not episodes or sum(len(e) for e in episodes) == 0:
        raise ValueError("no episode steps to train on")
    x = np.concatenate([e.inputs for e in episodes]).astype(np.float64)
    g = np.concatenate([e.stake_return for e in episodes]).astype(np.float64)
    if x.ndim != 2 or x.shape[1] != len(INPUTS) or x.shape[0] != g.shape[0]:
        raise ValueError(f"episode inputs must be (n, {len(INPUTS)}) beside (n,) stake returns")
    if not (np.isfinite(x).all() and np.isfinite(g).all()):
        raise ValueError("episode inputs and stake returns must be finite")
    return x, g


class SizingPolicy:
    """The learned multiplier: trains, predicts, saves (state_dict + JSON) and loads (tensors only)."""

    def __init__(self, config: SizingConfig | None = None) -> None:
        self.config = config or SizingConfig()
        self.net = SizingPolicyNet(self.config.min_multiplier, self.config.max_multiplier)
        self.net.eval()
        self.trained = False
        self.training_report: dict[str, float] = {}

    def multipliers(self, inputs: FloatArray) -> FloatArray:
        """Multipliers `(n,)` for raw `(n, 4)` inputs."""
        if not self.trained:
            raise RuntimeError("train or load the sizing policy first (size_position falls back to Kelly without one)")
        x = np.asarray(inputs, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(INPUTS) or not np.isfinite(x).all():
            raise ValueError(f"inputs must be finite with shape (n, {len(INPUTS)}), got {x.shape}")
        with torch.inference_mode():
            out: torch.Tensor = self.net(torch.from_numpy(x))
        return out.numpy().astype(np.float64)

    def multiplier(self, inputs: SizingInputs) -> float:
        """The multiplier for one signal, in [min_multiplier, max_multiplier]."""
        problem = inputs.problem()
        if problem is not None:
            raise ValueError(f"cannot size: {problem}")
        return float(self.multipliers(inputs.as_array()[None, :])[0])

    def train_on_episodes(self, episodes: Sequence[Episode], epochs: int = 300, seed: int = 0) -> dict[str, float]:
        """Fit the net by direct utility maximisation: gradient ascent on the mean utility of the sized stakes.

        No policy gradient: the multiplier is a differentiable function of the inputs and the utility
        mean(g - λ/2 g²), g = multiplier × stake_return, is differentiable in it, so full-batch Adam climbs
        the utility itself. Training starts from the constant multiplier 1.0 (the unit rule it is compared
        with) and from a fresh seeded network, in one thread, so a seed gives the same policy every run.
        """
        if epochs < 1:
            raise ValueError("epochs must be at least 1")
        cfg = self.config
        x, g = _stack(episodes)
        started = time.perf_counter()
        mean, std = x.mean(axis=0), x.std(axis=0)
        with seeded_torch(seed):
            net = SizingPolicyNet(cfg.min_multiplier, cfg.max_multiplier)
            net.input_mean.copy_(torch.from_numpy(mean))
            net.input_scale.copy_(torch.from_numpy(np.where(std > 1e-12, std, 1.0)))
            net.start_at(min(max(1.0, cfg.min_multiplier), cfg.max_multiplier))
            optimizer = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
            xt, gt = torch.from_numpy(x), torch.from_numpy(g)
            net.train()
            for _ in range(epochs):
                sized = net(xt) * gt
                loss = -(sized - 0.5 * cfg.risk_aversion * sized * sized).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            net.eval()
        self.net, self.trained = net, True
        report = {
            "utility": mean_utility(g, self.multipliers(x), cfg.risk_aversion),
            "unit_utility": mean_utility(g, 1.0, cfg.risk_aversion),
            "steps": float(x.shape[0]),
            "epochs": float(epochs),
            "seconds": time.perf_counter() - started,
        }
        self.training_report = report
        return report

    def utility(self, episodes: Sequence[Episode]) -> float:
        """Mean utility of this policy's multipliers on `episodes` (e.g. held-out ones)."""
        x, g = _stack(episodes)
        return mean_utility(g, self.multipliers(x), self.config.risk_aversion)

    def save(self, directory: Path) -> dict[str, str]:
        """Write `policy.pt` (the state_dict only) and `config.json`; returns their paths and policy.pt's SHA-256."""
        if not self.trained:
            raise RuntimeError("train the sizing policy before saving it")
        directory.mkdir(parents=True, exist_ok=True)
        weights, config = directory / WEIGHTS_FILE, directory / CONFIG_FILE
        digest = save_state_dict(self.net, weights)
        meta = {
            "format": FORMAT,
            "inputs": list(INPUTS),
            "hidden": HIDDEN,
            "config": dataclasses.asdict(self.config),
            "training": self.training_report,
        }
        config.write_text(json.dumps(meta, indent=2, sort_keys=True, allow_nan=False))
        return {"weights": str(weights), "config": str(config), "sha256": digest}

    @classmethod
    def load(cls, directory: Path, *, expected_sha256: str | None = None) -> "SizingPolicy":
        """A saved policy; tensors only (`weights_only=True` refuses pickled objects), optionally hash-checked."""
        state = load_state_dict(directory / WEIGHTS_FILE, expected_sha256)
        meta = json.loads((directory / CONFIG_FILE).read_text())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{directory / CONFIG_FILE} is not a {FORMAT} config")
        if meta.get("inputs") != list(INPUTS) or meta.get("hidden") != HIDDEN:
            raise ValueError(f"{directory} was saved for inputs {meta.get('inputs')}, hidden {meta.get('hidden')}")
        policy = cls(SizingConfig.from_dict(meta["config"]))
        policy.net.load_state_dict(state, strict=True)
        policy.net.eval()
        policy.trained = True
        policy.training_report = {k: float(v) for k, v in meta.get("training", {}).items()}
        return policy


# --- replayed training episodes --------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeConfig:
    """How episodes are replayed from candles.

    The proxy signal is the momentum fallback rule (`fallback.momentum_signal`) at every closed candle:
    a 24 h change beyond ±1 % is a trade in its direction with confidence min(0.95, 0.5 + 0.02 × |change %|).
    Each trade is held `hold_hours` and pays `fee_rate` of its notional (round trip). The pnl trend and
    margin use the policy sees are those of the same trades at the unit multiplier, so the inputs do not
    depend on the policy being trained and the objective stays a plain differentiable function of it.
    """

    hold_hours: int = 24
    fee_rate: float = 0.0008
    pnl_window_trades: int = 20
    base_fraction: float = SizingConfig.base_fraction
    leverage: float = 3.0

    def __post_init__(self) -> None:
        if self.hold_hours < 1 or self.pnl_window_trades < 1:
            raise ValueError("hold_hours and pnl_window_trades must be at least 1")
        if not (self.fee_rate >= 0 and 0 < self.base_fraction <= 1 and self.leverage > 0):
            raise ValueError("fee_rate must be >= 0, base_fraction in (0, 1] and leverage positive")


def build_episode(candles: Candles, config: EpisodeConfig, start_ms: int | None = None) -> Episode:
    """Decision steps at every closed candle from `start_ms` on where the proxy trades and the exit is known.

    A trade entered at candle t's close exits at candle t + hold's close; its pnl counts in the trend only
    from then on (no look-ahead), and it uses margin while it is open.
    """
    step_ms = TIMEFRAME_MS[candles.timeframe]
    hold = max(1, config.hold_hours * HOUR_MS // step_ms)
    ts, close = candles.timestamp, candles.close
    n = len(candles)
    features = compute_features(candles)
    volatility = features.column("rvol_24")
    direction, confidence = momentum_series(candles)
    exit_index = np.arange(n) + hold
    known_exit = exit_index < n
    realized = np.full(n, np.nan)
    realized[known_exit] = close[exit_index[known_exit]] / close[known_exit] - 1.0
    # The exit must be `hold` candles later in time too: across a gap the trade would be held longer.
    on_time = np.zeros(n, dtype=bool)
    on_time[known_exit] = ts[exit_index[known_exit]] - ts[known_exit] == hold * step_ms
    trades = (direction != 0) & features.valid & on_time & np.isfinite(volatility) & np.isfinite(confidence)
    stake_return = direction * realized - config.fee_rate

    rows: list[int] = []
    pnl_trend: list[float] = []
    margin_use: list[float] = []
    entered: list[int] = []  # every trade so far; all are held equally long, so they close in this order
    closed = 0  # entered[:closed] have exited
    margin_per_trade = config.base_fraction / config.leverage
    for t in np.flatnonzero(trades):
        i = int(t)
        while closed < len(entered) and entered[closed] + hold <= i:
            closed += 1
        if start_ms is None or ts[i] >= start_ms:
            recent = entered[max(0, closed - config.pnl_window_trades) : closed]
            rows.append(i)
            pnl_trend.append(config.base_fraction * float(stake_return[recent].sum()))
            margin_use.append((len(entered) - closed) * margin_per_trade)
        entered.append(i)
    index = np.array(rows, dtype=np.int64)
    columns = [confidence[index], volatility[index], np.array(pnl_trend), np.array(margin_use)]
    inputs = np.column_stack(columns).astype(np.float64).reshape(-1, len(INPUTS))
    return Episode(candles.symbol, ts[index], inputs, stake_return[index])


DEFAULT_EPISODE_SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT")


async def replay_episodes(
    market: MarketData,
    start_ms: int,
    end_ms: int,
    symbols: Sequence[str] = DEFAULT_EPISODE_SYMBOLS,
    config: EpisodeConfig | None = None,
    timeframe: str = "1h",
) -> list[Episode]:
    """Episodes of real candles: decisions in [start_ms, end_ms), every exit before end_ms.

    Candles from a warm-up period before `start_ms` feed the indicators and the pnl trend only, and none at or
    after `end_ms` is read, so episodes of adjacent windows never share a price.
    """
    cfg = config or EpisodeConfig()
    warmup_ms = (200 + 24 * cfg.pnl_window_trades) * TIMEFRAME_MS[timeframe]
    episodes = []
    for symbol in symbols:
        candles = await market.candles(symbol, timeframe, start_ms - warmup_ms, end_ms)
        episodes.append(build_episode(candles, cfg, start_ms))
    return episodes


# --- sizing one signal -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeDecision:
    """A notional and leverage to trade, or why not (`skipped_reason`, then notional and leverage are None).

    `limited_by` names the limit that clipped the notional, if any; `quantity` is set once `fit_to_market`
    has rounded the size to the market's amount step.
    """

    notional: Decimal | None
    leverage: Decimal | None
    multiplier: float | None
    source: str
    skipped_reason: str | None
    limited_by: str | None = None
    quantity: Decimal | None = None

    @property
    def skipped(self) -> bool:
        return self.skipped_reason is not None


def _finite_positive(value: Decimal | None) -> bool:
    return value is not None and value.is_finite() and value > 0


def _skip(source: str, reason: str, multiplier: float | None = None, *, invalid: bool = True) -> SizeDecision:
    log = logger.warning if invalid else logger.info
    log("sizing_skipped", extra={"reason": reason, "source": source, "multiplier": multiplier})
    return SizeDecision(None, None, multiplier, source, reason)


def _invalid_request(
    equity: Decimal,
    price: Decimal,
    inputs: SizingInputs,
    limits: EffectiveLimits,
    leverage: Decimal | None,
    stop_distance_pct: Decimal | None,
) -> str | None:
    """The first reason the request cannot be sized at all, or None."""
    if not _finite_positive(equity):
        return f"NO_EQUITY: equity={equity}"
    if not _finite_positive(price):
        return f"PRICE_INVALID: price={price}"
    problem = inputs.problem()
    if problem is not None:
        return f"INPUTS_INVALID: {problem}"
    if leverage is None:
        return "LEVERAGE_MISSING: the signal carries no leverage (there is no default)"
    if not _finite_positive(leverage):
        return f"LEVERAGE_INVALID: leverage={leverage} must be a finite number > 0"
    if leverage > limits.leverage_cap:
        return f"LEVERAGE_ABOVE_MAX: leverage={leverage} max={limits.leverage_cap} {limits.max_leverage.by}" + (
            f" × multiplier {limits.leverage_multiplier.value} {limits.leverage_multiplier.by}"
            if limits.leverage_multiplier.value != 1
            else ""
        )
    if stop_distance_pct is not None and not (stop_distance_pct.is_finite() and 0 < stop_distance_pct <= HUNDRED):
        return f"STOP_INVALID: stop_distance_pct={stop_distance_pct} must be in (0, 100]"
    return None


def size_position(
    equity: Decimal,
    price: Decimal,
    inputs: SizingInputs,
    limits: EffectiveLimits,
    policy: SizingPolicy | None,
    config: SizingConfig,
    leverage: Decimal | None,
    stop_distance_pct: Decimal | None,
    *,
    open_notional: Decimal = Decimal(0),
    used_margin: Decimal | None = None,
    assumed_stop_pct: Decimal = ASSUMED_STOP_DISTANCE_PCT,
) -> SizeDecision:
    """Notional = equity × base_fraction × multiplier, clipped to `max_notional`: the largest size every
    RiskGuard size check allows for this account, leverage and stop (one function for both, so a proposal
    is never denied for its size). The stop is the given distance, else RiskGuard's assumed one
    (`assumed_stop_pct`, its configuration). Used margin defaults to margin_use × equity. The result is
    rounded down to 0.01 USDT. The leverage is the caller's and must be within the stack's leverage cap
    (the multiplier included): it is never defaulted.
    """
    source = "policy" if policy is not None and policy.trained else "kelly"
    invalid = _invalid_request(equity, price, inputs, limits, leverage, stop_distance_pct)
    if invalid is not None or leverage is None:
        return _skip(source, invalid or "LEVERAGE_MISSING")

    if policy is not None and policy.trained:
        multiplier = min(max(policy.multiplier(inputs), config.min_multiplier), config.max_multiplier)
    else:
        multiplier = kelly_multiplier(inputs.confidence, config.payoff_ratio, config)
        if multiplier <= 0.0:
            return _skip(
                source,
                f"NO_EDGE: half Kelly is 0 at confidence={inputs.confidence} payoff_ratio={config.payoff_ratio}",
                multiplier,
                invalid=False,
            )

    # Six decimals are far below any limit's granularity and keep float noise (0.8749999…) out of the money.
    multiplier = round(multiplier, 6)
    largest = max_notional(
        limits,
        equity=equity,
        used_margin=used_margin if used_margin is not None else Decimal(repr(inputs.margin_use)) * equity,
        open_notional=open_notional,
        leverage=leverage,
        stop_distance_pct=stop_distance_pct if stop_distance_pct is not None else assumed_stop_pct,
    )
    notional = equity * Decimal(repr(config.base_fraction)) * Decimal(repr(multiplier))
    limited_by = None
    if notional > largest.value:
        notional, limited_by = largest.value, f"{largest.code} {largest.by}"
    notional = notional.quantize(CENT, rounding=ROUND_DOWN)
    if notional <= 0:
        return _skip(
            source,
            f"NO_SIZE: notional={notional} after {limited_by or 'rounding'} (multiplier={multiplier:.4f})",
            multiplier,
            invalid=False,
        )
    return SizeDecision(notional, leverage, multiplier, source, None, limited_by)


def fit_to_market(decision: SizeDecision, market: Market, price: Decimal) -> SizeDecision:
    """The clipped size as the exchange fills it, or no trade when that is below the market's minimums.

    The quantity is `Market.quantity_for` (amount step truncation, minimum amount and notional: the paper
    fill's own rule), the notional that quantity × price rounded up to USDT's 8 decimals. That stays within
    the clipped notional (a whole cent, so no limit is crossed) and truncates back to the same quantity, so
    POST /trades at the same price fills exactly this size.
    """
    if decision.notional is None:
        return decision
    try:
        quantity = market.quantity_for(decision.notional, price)
    except BelowExchangeMinimum as exc:
        return _skip(decision.source, f"BELOW_EXCHANGE_MINIMUM: {exc}", decision.multiplier, invalid=False)
    except OutOfRange as exc:  # the trades path refuses it too (422): say so rather than fail
        return _skip(decision.source, f"OUT_OF_RANGE: {exc}", decision.multiplier)
    notional = (quantity * price).quantize(USDT_STEP, rounding=ROUND_CEILING)
    return dataclasses.replace(decision, notional=notional, quantity=quantity)
