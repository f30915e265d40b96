"""The meta model on real candles: how often TP1 comes before the stop, and whether the meta model knows when.

`python -m app.domains.learning.meta_report [--symbols BTC/USDT:USDT ETH/USDT:USDT] [--years 2] [--static]`

- Data: the bundled Binance USDT-M 1h candles and funding (`marketdata.default_data_root()`), ending at the last
  candle. The newest `--years` hold the meta rows; the year before them trains the primary.
- Primary: a LightGBM direction classifier (`models.gbm`, the training defaults' horizon and band) fitted on the
  primary year only (early stopping on its newest 20 %, an embargo between), so its probabilities on the meta rows
  are out of sample. Its argmax proposes the side (HOLD proposes none). `--primary momentum` uses the 24 h momentum
  rule instead (its probabilities are the rule's one-hot class).
- Labels: `barriers.exit_plan_labels` with the exit plan's TP1 / stop (volatility-scaled as the live plan, or the
  static ladder with `--static`) and `--max-hold` bars.
- Meta model: `meta.walk_forward_meta`, refitted before each of 4 folds covering the newest half of the meta
  rows, each on the purged, embargoed rows before it. Every figure printed is out of sample; the base rate of
  each fold is its training rows' frequency (also per side, a stronger baseline).
"""

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from app.core.clock import HOUR_MS
from app.domains.learning.backtest import momentum_side
from app.domains.learning.training import walk_forward_meta
from app.domains.markets.candles import Candles, FloatArray, Funding
from app.domains.markets.marketdata import ReplayMarketData, default_data_root, symbol_file_stem
from app.domains.signals.barriers import SL, TIMEOUT, TP, BarrierConfig, exit_plan_labels
from app.domains.signals.features import compute_features
from app.domains.signals.labels import CLASSES, HOLD, LONG, SHORT, UNKNOWN, direction_labels
from app.domains.signals.meta import MetaConfig, MetaRows, binary_log_loss, brier_score, concat_rows, meta_rows
from app.domains.signals.models.gbm import GbmClassifier, GbmConfig
from app.domains.signals.modelset import TrainingConfig

YEAR_MS = 365 * 24 * HOUR_MS
WARMUP_BARS = 300  # candles before the primary year, so every indicator is defined at its start


@dataclass(frozen=True)
class SymbolData:
    candles: Candles
    funding: Funding


def load(symbol: str, from_ms: int) -> SymbolData:
    root = default_data_root()
    stem = symbol_file_stem(symbol)
    candles = ReplayMarketData.load_candles_file(root / f"{stem}-1h-futures.csv.gz", symbol, "1h")
    funding = ReplayMarketData.load_funding_file(root / f"{stem}-8h-funding_rate.csv.gz", symbol)
    first = max(0, int(np.searchsorted(candles.timestamp, from_ms)) - WARMUP_BARS)
    return SymbolData(candles.slice(first, len(candles)), funding)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def primary_probabilities(
    data: list[SymbolData], train_from: int, train_until: int, kind: str, config: TrainingConfig
) -> list[FloatArray]:
    """Class probabilities per candle (NaN where features are not valid), from a primary fitted on
    [train_from, train_until) only."""
    features = [compute_features(d.candles, d.funding) for d in data]
    if kind == "momentum":
        out = []
        for d, f in zip(data, features, strict=True):
            side_at = momentum_side(d.candles, 0.0)  # the fallback rule as the backtest plays it, every side kept
            classes = [CLASSES.index(side_at(t)) if f.valid[t] else HOLD for t in range(len(d.candles))]
            probs = np.eye(len(CLASSES))[classes]
            probs[~f.valid] = np.nan
            out.append(probs)
        return out
    val_from = train_until - int((train_until - train_from) * config.validation_fraction)
    embargo = config.embargo_hours * HOUR_MS
    xs, ys, vx, vy = [], [], [], []
    for d, f in zip(data, features, strict=True):
        y = direction_labels(d.candles.close, config.horizon, config.band)
        ts = d.candles.timestamp
        ok = f.valid & (y != UNKNOWN)
        end = ts + config.horizon * HOUR_MS  # the label's window: nothing may reach the next part
        fit = ok & (ts >= train_from) & (end < val_from - embargo)
        val = ok & (ts >= val_from) & (end < train_until)
        xs.append(f.values[fit])
        ys.append(y[fit])
        vx.append(f.values[val])
        vy.append(y[val])
    model = GbmClassifier(GbmConfig(kind="lightgbm", seed=config.seed))
    model.fit(np.concatenate(xs), np.concatenate(ys), np.concatenate(vx), np.concatenate(vy))
    out = []
    for f in features:
        probs = model.predict_proba(f.values)
        probs[~f.valid] = np.nan
        out.append(probs)
    return out


def sides_of(probs: FloatArray) -> np.ndarray:
    side = np.zeros(len(probs), dtype=np.int64)
    finite = np.isfinite(probs).all(axis=1)
    best = np.where(finite, np.nan_to_num(probs).argmax(axis=1), HOLD)
    side[finite & (best == LONG)] = 1
    side[finite & (best == SHORT)] = -1
    return side


def run(
    symbols: list[str],
    years: float = 2.0,
    barriers: BarrierConfig | None = None,
    primary: str = "lightgbm",
    n_folds: int = 4,
    test_fraction: float = 0.5,
    config: MetaConfig | None = None,
) -> dict[str, Any]:
    barrier_cfg = barriers or BarrierConfig()
    meta_cfg = config or MetaConfig()
    training = TrainingConfig()
    probe = [load(s, 0) for s in symbols]
    end_ms = min(int(d.candles.timestamp[-1]) for d in probe)
    meta_from = end_ms - int(years * YEAR_MS)
    primary_from = meta_from - YEAR_MS
    data = [load(s, primary_from) for s in symbols]
    probs = primary_probabilities(data, primary_from, meta_from - meta_cfg.embargo_ms, primary, training)
    parts: list[MetaRows] = []
    outcomes: dict[str, dict[str, float]] = {}
    for g, (d, p) in enumerate(zip(data, probs, strict=True)):
        inside = d.candles.timestamp >= meta_from
        side = np.where(inside, sides_of(p), 0)
        labels = exit_plan_labels(d.candles, side, barrier_cfg)
        known = labels.known
        outcomes[d.candles.symbol] = {
            "rows_with_side": int(known.sum()),
            "long_share": float((side[known] > 0).mean()),
            "tp_first": float((labels.outcome[known] == TP).mean()),
            "sl_first": float((labels.outcome[known] == SL).mean()),
            "timeout": float((labels.outcome[known] == TIMEOUT).mean()),
            "median_tp_pct": float(np.nanmedian(labels.tp_pct[known])),
            "median_sl_pct": float(np.nanmedian(labels.sl_pct[known])),
            "mean_exit_return": float(np.nanmean(labels.exit_return[known])),
        }
        parts.append(meta_rows(d.candles, compute_features(d.candles, d.funding), p, side, barrier_cfg, group=g))
    rows = concat_rows(parts)
    result = walk_forward_meta(rows, n_folds, test_fraction, meta_cfg, barrier_cfg)
    table = result.reliability()
    # a stronger baseline: the training base rate of the proposed side
    side_base = np.empty(len(result.index))
    offset = 0
    for fold in result.folds:
        test = result.index[offset : offset + fold["test_rows"]]
        train = rows.timestamp < fold["test_from_ms"]
        for s in (-1, 1):
            seen = train & (rows.sides == s) & (rows.end_ms < fold["test_from_ms"])
            side_base[offset : offset + fold["test_rows"]][rows.sides[test] == s] = rows.label[seen].mean()
        offset += fold["test_rows"]
    primary_side_p = np.where(
        rows.sides[result.index] > 0, rows.primary_probs[result.index, LONG], rows.primary_probs[result.index, SHORT]
    )
    return {
        "symbols": symbols,
        "primary": primary,
        "meta_rows_from": _iso(meta_from),
        "until": _iso(end_ms),
        "primary_trained": f"{_iso(primary_from)} .. {_iso(meta_from - meta_cfg.embargo_ms)}",
        "barriers": {
            "max_hold_bars": barrier_cfg.max_hold_bars,
            "volatility_scaled": barrier_cfg.volatility_scaled,
            "tp1": barrier_cfg.exit.atr_tp_multiples[0]
            if barrier_cfg.volatility_scaled
            else barrier_cfg.exit.tp_distances[0],
            "sl": barrier_cfg.exit.atr_sl_multiple if barrier_cfg.volatility_scaled else barrier_cfg.exit.sl_distance,
        },
        "outcomes": outcomes,
        "meta_rows": len(rows),
        "base_rate_all_rows": float(rows.label.mean()),
        "out_of_sample": table.as_dict(),
        "reliability": table.format(),
        "reliability_deciles": result.reliability(quantile=True).format(),  # equal-count bins: any resolution?
        "side_base_rate": {
            "brier": brier_score(side_base, result.label),
            "log_loss": binary_log_loss(side_base, result.label),
        },
        "primary_side_probability": {  # the primary's P(side) read as P(TP1 first): what confidence means today
            "brier": brier_score(primary_side_p, result.label),
            "log_loss": binary_log_loss(primary_side_p, result.label),
        },
        "folds": [
            {
                k: f[k]
                for k in (
                    "train_rows",
                    "test_rows",
                    "best_iteration",
                    "base_rate",
                    "temperature",
                    "calibration_choice",
                )
            }
            | {
                "test_from": _iso(f["test_from_ms"]),
                "test_until": _iso(f["test_until_ms"]),
                "brier": f["test"]["brier"],
                "base_brier": f["test"]["base_brier"],
                "log_loss": f["test"]["log_loss"],
                "base_log_loss": f["test"]["base_log_loss"],
            }
            for f in result.folds
        ],
    }


def _temperature(value: float) -> str:
    return "inf (flat: the base rate of the calibration slice)" if value >= 999 else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--symbols", nargs="+", default=["BTC/USDT:USDT", "ETH/USDT:USDT"])
    parser.add_argument("--years", type=float, default=2.0)
    parser.add_argument("--max-hold", type=int, default=BarrierConfig().max_hold_bars)
    parser.add_argument("--static", action="store_true", help="the static ladder instead of ATR-scaled barriers")
    parser.add_argument("--primary", choices=("lightgbm", "momentum"), default="lightgbm")
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    args = parser.parse_args(argv)
    barriers = BarrierConfig(max_hold_bars=args.max_hold, volatility_scaled=not args.static)
    out = run(args.symbols, args.years, barriers, args.primary)
    if args.json:
        print(json.dumps(out, indent=1, default=float))
        return 0
    print(f"{', '.join(out['symbols'])}: meta rows {out['meta_rows_from']} .. {out['until']}, primary {out['primary']}")
    print(f"primary trained {out['primary_trained']}; barriers {out['barriers']}")
    for symbol, o in out["outcomes"].items():
        print(
            f"  {symbol}: {o['rows_with_side']} rows with a side ({o['long_share']:.1%} long); TP1 first "
            f"{o['tp_first']:.1%}, stop first {o['sl_first']:.1%}, timeout {o['timeout']:.1%}; median TP1 "
            f"{o['median_tp_pct']:.2%} / stop {o['median_sl_pct']:.2%}; mean gross exit return "
            f"{o['mean_exit_return']:+.3%}"
        )
    print(f"base rate P(TP1 before stop), all meta rows: {out['base_rate_all_rows']:.4f}")
    print("out of sample (walk-forward, refitted per fold):")
    print(out["reliability"])
    print("the same by deciles of the prediction:")
    print("\n".join(out["reliability_deciles"].splitlines()[2:]))
    side = out["side_base_rate"]
    prim = out["primary_side_probability"]
    print(f"per-side base rate: Brier {side['brier']:.5f}, log loss {side['log_loss']:.5f}")
    if out["primary"] != "momentum":  # a rule's one-hot class is no probability
        print(f"primary P(side) read as the probability: Brier {prim['brier']:.5f}, log loss {prim['log_loss']:.5f}")
    for f in out["folds"]:
        print(
            f"  fold {f['test_from']} .. {f['test_until']}: train {f['train_rows']}, test {f['test_rows']}, "
            f"trees {f['best_iteration']}, T {_temperature(f['temperature'])} ({f['calibration_choice']}); Brier "
            f"{f['brier']:.5f} vs base {f['base_brier']:.5f}, log loss {f['log_loss']:.5f} vs {f['base_log_loss']:.5f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
