"""Triple-barrier labels: for a proposed side at candle t, is the exit plan's first take-profit hit before its stop?

The question the served confidence answers (López de Prado's triple-barrier method, with the exit plan's barriers):
- Entry at the open of candle t + 1 (a signal as of t is acted on once candle t has closed).
- Upper/lower barrier: TP1 and the stop-loss of the exit plan, as fractions of the entry price. With
  `volatility_scaled` (as the live plan is whenever the feed gives an ATR) they are `ExitConfig.atr_tp_multiples[0]`
  and `ExitConfig.atr_sl_multiple` times ATR / entry, the ATR being the plain mean of the last `atr_bars` true ranges
  of the candles closed by t (what `ExecutionService.atr` hands `build_plan`); each distance is floored at
  `ExitConfig.min_distance`. With `regime_scaled` too (as the live plan: the regime read at the last closed candle
  scales its take-profits), TP1 is multiplied by `ExitConfig.regime_tp_scale` of `regime.detect_regime` at t.
  Without `volatility_scaled` they are `ExitConfig.tp_distances[0]` and `ExitConfig.sl_distance`.
  The numbers are never copied here: they are read from the `ExitConfig` given (its defaults by default).
- Vertical barrier: `max_hold_bars` candles, t + 1 .. t + max_hold_bars (the entry candle counts).
- Label 1.0 when TP1 is reached first; 0.0 when the stop is reached first OR time runs out (the label is the event
  "TP1 before the stop within the holding time", so a timeout is a miss); NaN where no side is proposed, a barrier
  is undefined (ATR warm-up) or the holding window runs past the last candle (unknown, never guessed: labelling rows
  whose barrier happened to be hit early would bias the newest rows towards quick outcomes).
- Inside one candle the path is unknown, so when both barriers lie in its range the stop counts first, as the
  paper exchange fills it. A candle that opens beyond a barrier (a gap) hits it; its range contains the open.

Every label at t depends only on candles t + 1 .. t + max_hold_bars (and, for volatility-scaled barriers, on the
ATR known at t's close). `exit_bar` is the candle where the trade ends: rows whose windows [t, exit_bar] overlap a
test window must be purged from training (`meta.purged_train_mask`).
"""

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from app.domains.exits.plan import ExitConfig
from app.domains.markets.candles import Candles, FloatArray, IntArray
from app.domains.signals.features import FeatureMatrix, compute_features
from app.domains.signals.regime import Regime, detect_regimes

TP, SL, TIMEOUT, UNKNOWN = 1, -1, 0, -2  # outcome codes
NO_EXIT = -1  # exit_bar where the outcome is unknown


@dataclass(frozen=True)
class BarrierConfig:
    """Where the barriers come from. `tp_scale` / `stop_scale` are the plan's regime and policy scales
    (`ExitConfig.trending_tp_scale`, `conservative_stop_scale`, ...): 1.0 = no regime, the BALANCED policy."""

    max_hold_bars: int = 24
    volatility_scaled: bool = True
    regime_scaled: bool = True  # with volatility_scaled: TP1 scaled by the regime at t, as the live plan
    atr_bars: int = 14  # ExecutionConfig.atr_bars: closed bars behind the live plan's ATR
    tp_scale: float = 1.0
    stop_scale: float = 1.0
    exit: ExitConfig = field(default_factory=ExitConfig)

    def __post_init__(self) -> None:
        if self.max_hold_bars < 1:
            raise ValueError(f"max_hold_bars must be >= 1, got {self.max_hold_bars}")
        if self.atr_bars < 1:
            raise ValueError(f"atr_bars must be >= 1, got {self.atr_bars}")
        if not (self.tp_scale > 0 and self.stop_scale > 0):
            raise ValueError("tp_scale and stop_scale must be > 0")


@dataclass(frozen=True)
class BarrierLabels:
    """One entry per candle (row t = a side proposed at t's close)."""

    label: FloatArray  # 1.0 TP1 first, 0.0 stop first or timeout, NaN unknown / no side
    outcome: npt.NDArray[np.int8]  # TP, SL, TIMEOUT or UNKNOWN
    exit_bar: IntArray  # candle index where the trade ends (NO_EXIT where unknown)
    exit_return: FloatArray  # side-signed gross return entry -> exit (stop gaps fill at the open), NaN if unknown
    tp_pct: FloatArray  # the distances used, fractions of the entry
    sl_pct: FloatArray

    @property
    def known(self) -> npt.NDArray[np.bool_]:
        return np.asarray(np.isfinite(self.label))


def mean_true_range(candles: Candles, bars: int) -> FloatArray:
    """Mean of the last `bars` true ranges ending at each candle (NaN until `bars` ranges exist): the ATR the
    execution service gives the exit plan, known when candle t closes."""
    high, low, close = candles.high, candles.low, candles.close
    out = np.full(len(candles), np.nan)
    if len(candles) <= bars:
        return out
    prev = close[:-1]
    tr = np.maximum(high[1:] - low[1:], np.maximum(np.abs(high[1:] - prev), np.abs(low[1:] - prev)))
    csum = np.concatenate([[0.0], np.cumsum(tr)])
    out[bars:] = (csum[bars:] - csum[:-bars]) / bars  # tr[i - 1] is candle i's range
    return out


def regime_tp_scales(features: FeatureMatrix, exit_config: ExitConfig, rows: range | None = None) -> FloatArray:
    """Per row, the plan's take-profit scale for the regime read at that row (`regime.detect_regimes`, from that
    row and earlier ones); NaN outside `rows` (default: every row)."""
    n = len(features.values)
    wanted = rows if rows is not None else range(n)
    out = np.full(n, np.nan)
    scale = {r: exit_config.regime_tp_scale(r.value) for r in Regime}
    out[wanted.start : wanted.stop] = [1.0 if (s := scale[r]) is None else s for r in detect_regimes(features, wanted)]
    return out


def barrier_distances(
    candles: Candles,
    config: BarrierConfig | None = None,
    features: FeatureMatrix | None = None,
    rows: range | None = None,
) -> tuple[FloatArray, FloatArray]:
    """(TP1 distance, stop distance) per row as fractions of the entry (the next candle's open); NaN where
    undefined (the ATR still warming up, or no next candle). `features`: those of `candles` if already computed
    (the regime reads them); `rows`: the only rows wanted when regime-scaled (the others are NaN)."""
    cfg = config or BarrierConfig()
    ex = cfg.exit
    n = len(candles)
    if not cfg.volatility_scaled:
        tp = np.full(n, ex.tp_distances[0] * cfg.tp_scale)
        sl = np.full(n, ex.sl_distance * cfg.stop_scale)
    else:
        entry = np.full(n, np.nan)
        entry[:-1] = candles.open[1:]
        vol = mean_true_range(candles, cfg.atr_bars) / entry
        tp = ex.atr_tp_multiples[0] * vol * cfg.tp_scale
        sl = ex.atr_sl_multiple * vol * cfg.stop_scale
        if cfg.regime_scaled:
            tp = tp * regime_tp_scales(features if features is not None else compute_features(candles), ex, rows)
    with np.errstate(invalid="ignore"):
        tp = np.where(np.isfinite(tp), np.maximum(tp, ex.min_distance), np.nan)
        sl = np.where(np.isfinite(sl), np.maximum(sl, ex.min_distance), np.nan)
    return tp, sl


def triple_barrier_labels(
    candles: Candles,
    sides: npt.ArrayLike,
    *,
    tp_pct: float | FloatArray,
    sl_pct: float | FloatArray,
    max_hold_bars: int,
) -> BarrierLabels:
    """Label every row with a proposed side (+1 long, -1 short, 0 none); entry at the next candle's open.

    `tp_pct` / `sl_pct`: distances from the entry (fractions, > 0), one for all rows or one per row."""
    n = len(candles)
    horizon = int(max_hold_bars)
    if horizon < 1:
        raise ValueError(f"max_hold_bars must be >= 1, got {max_hold_bars}")
    side = np.asarray(sides, dtype=np.int64).reshape(-1)
    if side.shape != (n,):
        raise ValueError(f"sides must have one entry per candle ({n}), got {side.shape}")
    if not np.isin(side, (-1, 0, 1)).all():
        raise ValueError("sides must be -1, 0 or +1")
    tp = np.broadcast_to(np.asarray(tp_pct, dtype=np.float64), (n,))
    sl = np.broadcast_to(np.asarray(sl_pct, dtype=np.float64), (n,))
    with np.errstate(invalid="ignore"):
        if ((tp <= 0) | (sl <= 0)).any():
            raise ValueError("barrier distances must be > 0")

    label = np.full(n, np.nan)
    outcome = np.full(n, UNKNOWN, dtype=np.int8)
    exit_bar = np.full(n, NO_EXIT, dtype=np.int64)
    exit_return = np.full(n, np.nan)
    rows = np.arange(n)
    eligible = (side != 0) & np.isfinite(tp) & np.isfinite(sl) & (rows + horizon <= n - 1)
    idx = np.flatnonzero(eligible)
    if len(idx):
        s = side[idx].astype(np.float64)[:, None]
        entry = candles.open[idx + 1]
        tp_level = s[:, 0] * entry * (1.0 + s[:, 0] * tp[idx])  # sign-flipped so that "reached" is ">="
        sl_level = s[:, 0] * entry * (1.0 - s[:, 0] * sl[idx])  # ... and "reached" is "<=" here
        high_w = sliding_window_view(candles.high, horizon)[idx + 1]  # candles t+1 .. t+horizon
        low_w = sliding_window_view(candles.low, horizon)[idx + 1]
        favourable = np.where(s > 0, high_w, -low_w)
        adverse = np.where(s > 0, low_w, -high_w)
        hit_tp = favourable >= tp_level[:, None]
        hit_sl = adverse <= sl_level[:, None]
        first_tp = np.where(hit_tp.any(axis=1), hit_tp.argmax(axis=1), horizon)
        first_sl = np.where(hit_sl.any(axis=1), hit_sl.argmax(axis=1), horizon)
        won = first_tp < first_sl  # a tie (both in one candle) is the stop's
        lost = ~won & (first_sl < horizon)
        step = np.where(won, first_tp, np.where(lost, first_sl, horizon - 1))
        ends = idx + 1 + step
        side_1d = s[:, 0]
        # a gap through the stop fills at the candle's open, a take-profit at its trigger (as the paper exchange)
        stop_fill = side_1d * np.minimum(sl_level, side_1d * candles.open[ends])
        exit_price = np.where(lost, stop_fill, candles.close[ends])
        ret = np.where(won, tp[idx], side_1d * (exit_price / entry - 1.0))
        label[idx] = won.astype(np.float64)
        outcome[idx] = np.where(won, TP, np.where(lost, SL, TIMEOUT))
        exit_bar[idx] = ends
        exit_return[idx] = ret
    return BarrierLabels(label, outcome, exit_bar, exit_return, np.array(tp, dtype=np.float64), np.array(sl))


def exit_plan_labels(candles: Candles, sides: npt.ArrayLike, config: BarrierConfig | None = None) -> BarrierLabels:
    """`triple_barrier_labels` with the exit plan's TP1 and stop (`barrier_distances`)."""
    cfg = config or BarrierConfig()
    tp, sl = barrier_distances(candles, cfg)
    return triple_barrier_labels(candles, sides, tp_pct=tp, sl_pct=sl, max_hold_bars=cfg.max_hold_bars)
