"""The out-of-sample report on the bundled data: `python -m app.domains.learning.report`.

Fixed walk-forward experiment, nothing tuned on the test window: the test year
2024-11-01 .. 2025-10-31 is cut into four quarterly folds; before each fold all four models
and the ensemble are retrained on the two years ending 24 h (the embargo) before it, and
predict only that fold. The folds' predictions are scored together, with the served rule
(`backtest`): the served decision and the active profile's minimum confidence, entry at the next
candle's open, TP1 / SL / maximum holding time, taker fees, slippage and funding; beside it the
classification metrics, and directional skill apart from volatility skill. BTC and ETH USDT
perpetuals, 1 h candles, default TrainingConfig and TradeRule. The minimum confidence is also shown
at the three risk profiles' values and at none (a sensitivity table: nothing is chosen from it).

The meta layer, as the pipeline trains it (`pipeline.train_meta_layer`): before each fold, beside the ensemble,
a meta model learns P(TP1 before the stop within the max hold) from cross-fitted (out-of-sample) ensemble
probabilities on that fold's training window, labels purged before the fold; it then predicts the fold. Shown:
the reliability table of the folds' predictions pooled (predicted against observed TP-before-stop frequency per
bin), Brier and log loss against the base rate each fold's meta model was trained with (and against the per-side
base rate, and the direction probability read as that probability), and the served rule with the minimum
confidence applied to the meta probability, at the breakeven probability of the rule's typical trade and at the
profiles' values (on the same scale). Writes docs/signals-oos-report.md and .json.
"""

import asyncio
import itertools
import json
import platform
import sys
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

from app.core.clock import DAY_MS, HOUR_MS
from app.domains.learning.backtest import (
    BASELINES,
    Metrics,
    TradeRule,
    describe_rule,
    rule_breakeven,
    score_probabilities,
    served_barriers,
    served_report,
    symbol_market,
)
from app.domains.learning.dataset import SymbolRows, join_rows, split_by_time, symbol_rows
from app.domains.learning.evaluation import reliability_table
from app.domains.learning.pipeline import META_FOLDS, MarketSeries, rows_for_meta, train_meta_layer
from app.domains.learning.training import fit_models, predictions
from app.domains.markets.candles import FloatArray
from app.domains.markets.marketdata import ReplayMarketData
from app.domains.policy.profiles import DEFAULT_PROFILES
from app.domains.signals.barriers import TIMEOUT, BarrierConfig, exit_plan_labels
from app.domains.signals.labels import LONG, SHORT
from app.domains.signals.meta import MetaRows, binary_log_loss, brier_score, concat_rows, sides_from_probabilities
from app.domains.signals.models import MODEL_KINDS
from app.domains.signals.modelset import TrainingConfig

SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT")
FOLDS = ("2024-11-01", "2025-02-01", "2025-05-01", "2025-08-01")
TEST_UNTIL = "2025-11-01"
TRAIN_DAYS = 730
TEST_FROM = FOLDS[0]
DOCS = Path(__file__).resolve().parents[3] / "docs"
NAMES = (*MODEL_KINDS, "ensemble")


def _ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


async def run(config: TrainingConfig, rule: TradeRule) -> dict[str, Any]:
    market = ReplayMarketData()
    parts, markets, series = [], [], []
    barriers = served_barriers(rule)
    first = _ms(FOLDS[0]) - TRAIN_DAYS * DAY_MS - 10 * DAY_MS  # 10 days only warm indicators up
    for symbol in SYMBOLS:
        candles = await market.candles(symbol, "1h", first, _ms(TEST_UNTIL))
        funding = await market.funding(symbol, first, _ms(TEST_UNTIL))
        parts.append(symbol_rows(candles, funding, config))
        series.append(MarketSeries(candles, funding))
        markets.append(symbol_market(candles, funding, _ms(TEST_FROM), _ms(TEST_UNTIL)))
    began = time.perf_counter()
    tests: list[SymbolRows] = []
    predicted: list[dict[str, FloatArray]] = []
    folds: list[dict[str, Any]] = []
    meta_confidence: list[FloatArray] = []  # per test row: the fold's meta P(TP1 first) for the argmax side
    meta_rows: list[MetaRows] = []  # test rows with a side and a known outcome
    meta_predicted: list[FloatArray] = []
    meta_base: list[FloatArray] = []
    meta_side_base: list[FloatArray] = []
    meta_outcomes: list[npt.NDArray[np.int8]] = []
    meta_folds: list[dict[str, Any]] = []
    for start, stop in itertools.pairwise([*(_ms(d) for d in FOLDS), _ms(TEST_UNTIL)]):
        train, test = split_by_time(parts, start, config.embargo_hours, stop, start - TRAIN_DAYS * 24 * HOUR_MS)
        trained = fit_models(train, config)
        tests.append(test)
        predicted.append(predictions(trained, test))
        layer = train_meta_layer(series, train, config, barriers, start, META_FOLDS)
        ensemble = predicted[-1].get("ensemble")
        confidence = np.full(len(test.y), np.nan)
        meta_fold: dict[str, Any] = {"test": [_day(start), _day(stop)], "absent": layer.absent, **layer.seconds}
        if layer.model is not None and ensemble is not None:
            confidence = layer.model.predict_proba(test.x, ensemble, sides_from_probabilities(ensemble))
            labelled = rows_for_meta(series, test.timestamp, test.group, ensemble, barriers)
            meta_rows.append(labelled)
            meta_predicted.append(layer.model.predict_proba(labelled.features, labelled.primary_probs, labelled.sides))
            meta_base.append(np.full(len(labelled), layer.model.base_rate))
            meta_outcomes.append(barrier_outcomes(series, labelled, barriers))
            trained_on = layer.rows
            assert trained_on is not None
            by_side = {side: float(trained_on.label[trained_on.sides == side].mean()) for side in (-1, 1)}
            meta_side_base.append(np.array([by_side[int(side)] for side in labelled.sides]))
            fit = layer.model.report
            meta_fold.update(
                train_rows=fit["rows"],
                base_rate=layer.model.base_rate,
                trees=fit["best_iteration"],
                temperature=layer.model.calibration.temperature,
                calibration=fit["calibration_choice"],
                test_rows=len(labelled),
                cross_fit=[
                    {k: v for k, v in f.items() if k in ("fit_rows", "predicted_rows", "skipped", "fit_seconds")}
                    for f in layer.evidence["cross_fit"]
                ],
            )
        meta_confidence.append(confidence)
        meta_folds.append(meta_fold)
        folds.append(
            {
                "test": [_day(start), _day(stop)],
                "train_rows": len(train.y),
                "test_rows": len(test.y),
                "weights": trained.ensemble.weights,
                "temperature": trained.ensemble.temperature,
                "fit_seconds": {**trained.fit_seconds, **layer.seconds},
            }
        )
    fit_seconds = time.perf_counter() - began
    rows = join_rows(tests)
    probabilities: dict[str, FloatArray | None] = {
        name: np.concatenate([p[name] for p in predicted]) if all(name in p for p in predicted) else None
        for name in NAMES
    }
    prior = np.concatenate([p["prior"] for p in predicted])
    began = time.perf_counter()
    report = served_report(probabilities, markets, rows, prior, rule)
    sensitivity: dict[str, dict[str, Metrics]] = {}
    for label, value in _min_confidences():
        other = replace(rule, min_confidence=value)
        sensitivity[label] = {
            name: score_probabilities(p, markets, rows, other) for name, p in probabilities.items() if p is not None
        }
    meta = meta_section(
        probabilities.get("ensemble"),
        np.concatenate(meta_confidence),
        meta_rows,
        meta_predicted,
        meta_base,
        meta_side_base,
        meta_outcomes,
        markets,
        rows,
        rule,
    )
    meta["folds"] = meta_folds
    score_seconds = time.perf_counter() - began
    return {
        "meta": meta,
        "symbols": list(SYMBOLS),
        "folds": folds,
        "train_days": TRAIN_DAYS,
        "test": [TEST_FROM, TEST_UNTIL],
        "test_rows": len(rows.y),
        "config": asdict(config),
        "rule": asdict(rule),
        "rule_text": describe_rule(rule),
        "report": report,
        "min_confidence_sensitivity": sensitivity,
        "seconds_fit": fit_seconds,
        "seconds_score": score_seconds,
        "machine": f"{platform.machine()} {platform.processor() or ''} python {sys.version.split()[0]}".strip(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def meta_section(
    ensemble: FloatArray | None,
    confidence: FloatArray,
    rows_per_fold: list[MetaRows],
    predicted_per_fold: list[FloatArray],
    base_per_fold: list[FloatArray],
    side_base_per_fold: list[FloatArray],
    outcomes_per_fold: list[npt.NDArray[np.int8]],
    markets: list[Any],
    rows: SymbolRows,
    rule: TradeRule,
) -> dict[str, Any]:
    """The meta layer's out-of-sample calibration and the served rule with the minimum applied to it."""
    breakeven, median_tp, median_sl = rule_breakeven(rule, markets)
    barriers = served_barriers(rule)
    out: dict[str, Any] = {
        "breakeven_probability": breakeven,
        "barriers": {
            "volatility_scaled": barriers.volatility_scaled,
            "median_tp1": median_tp,
            "median_sl": median_sl,
            "atr_tp1_multiple": barriers.exit.atr_tp_multiples[0],
            "atr_sl_multiple": barriers.exit.atr_sl_multiple,
            "max_hold_bars": barriers.max_hold_bars,
        },
    }
    if ensemble is None or not rows_per_fold:
        out["absent"] = "no fold had an ensemble with weights and a meta model"
        return out
    meta_rows = concat_rows(rows_per_fold)  # folds are consecutive: concat_rows keeps them in time order
    order = np.argsort(np.concatenate([r.timestamp for r in rows_per_fold]), kind="stable")
    predicted = np.concatenate(predicted_per_fold)[order]
    base = np.concatenate(base_per_fold)[order]
    label = meta_rows.label
    table = reliability_table(predicted, label)
    table = replace(
        table,
        base_rate=float(base.mean()),
        base_brier=brier_score(base, label),
        base_log_loss=binary_log_loss(base, label),
    )
    # a stronger baseline: the training frequency of the row's side; and what `confidence` meant before the meta
    # layer: the direction layer's probability of the side, read as P(TP1 first)
    side_base = np.concatenate(side_base_per_fold)[order]
    direction = np.where(meta_rows.sides > 0, meta_rows.primary_probs[:, LONG], meta_rows.primary_probs[:, SHORT])
    # what the skill is made of: whether a barrier is hit at all in the holding time (volatility), and which
    # one given that one is (direction)
    outcome = np.concatenate(outcomes_per_fold)[order]
    hit = outcome != TIMEOUT
    out["skill_parts"] = {
        "timeout_share": float((~hit).mean()),
        "auc_tp_first": _auc(predicted, label == 1.0),
        "auc_a_barrier_is_hit": _auc(predicted, hit),
        "auc_tp_before_sl_given_a_barrier_is_hit": _auc(predicted[hit], label[hit] == 1.0),
        "tp_share_given_a_barrier_is_hit": float(label[hit].mean()),
    }
    out.update(
        rows=len(meta_rows),
        long_share=float((meta_rows.sides > 0).mean()),
        reliability=table.as_dict(),
        reliability_text=table.format(),
        deciles_text=reliability_table(predicted, label, quantile=True).format(),
        side_base_rate={"brier": brier_score(side_base, label), "log_loss": binary_log_loss(side_base, label)},
        direction_probability_as_p={
            "brier": brier_score(direction, label),
            "log_loss": binary_log_loss(direction, label),
        },
    )
    served: dict[str, Metrics] = {}
    levels = [("none", 0.0)]
    if breakeven is not None:
        levels.append((f"{breakeven:.4f} (breakeven)", breakeven))
    for label_text, value in [*levels, *_min_confidences()[1:]]:
        other = replace(rule, min_confidence=value)
        served[label_text] = score_probabilities(ensemble, markets, rows, other, confidence)
    out["served_rule"] = served
    out["as_served"] = score_probabilities(ensemble, markets, rows, rule, confidence)  # the rule's own minimum
    return out


def barrier_outcomes(series: list[MarketSeries], rows: MetaRows, barriers: BarrierConfig) -> npt.NDArray[np.int8]:
    """TP, SL or TIMEOUT of each meta row (`barriers.exit_plan_labels`, as its label)."""
    out = np.empty(len(rows), dtype=np.int8)
    for g, s in enumerate(series):
        mine = rows.group == g
        at = np.searchsorted(s.candles.timestamp, rows.timestamp[mine])
        sides = np.zeros(len(s.candles), dtype=np.int64)
        sides[at] = rows.sides[mine]
        out[mine] = exit_plan_labels(s.candles, sides, barriers).outcome[at]
    return out


def _auc(score: FloatArray, positive: npt.NDArray[np.bool_]) -> float | None:
    """P(a positive row scores above a negative one), ties half: 0.5 = no ranking skill."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = np.asarray(rankdata(score), dtype=np.float64)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _min_confidences() -> list[tuple[str, float]]:
    """No minimum, and each risk profile's `global_min_confidence` (not tuned: the profiles' own values)."""
    by_value: dict[float, list[str]] = {}
    for mode, profile in DEFAULT_PROFILES.items():
        by_value.setdefault(float(profile.global_min_confidence), []).append(mode.value)
    return [("none", 0.0), *((f"{v:.2f} ({', '.join(names)})", v) for v, names in sorted(by_value.items()))]


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def _cell(value: float | None, kind: str = "f") -> str:
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{value * 100:+.1f} %"
    if kind == "share":
        return f"{value * 100:.1f} %"
    if kind == "int":
        return f"{value:.0f}"
    if kind == "t":
        return f"{value:+.2f}"
    return f"{value:.4f}"


def _trading_row(name: str, m: Metrics) -> str:
    exits = "/".join(_cell(m.get(f"exits_{r}"), "int") for r in ("take_profit", "stop_loss", "max_hold", "window_end"))
    return (
        f"| {name} | {_cell(m.get('trades'), 'int')} | {_cell(m.get('turnover'), 'int')} | "
        f"{_cell(m.get('win_rate'), 'share')} | {_cell(m.get('avg_trade_return'), 'pct')} | "
        f"{_cell(m.get('trade_t_stat'), 't')} | "
        f"{_cell(m.get('net_return'), 'pct')} | {_cell(m.get('sharpe'))} | {_cell(m.get('max_drawdown'), 'share')} | "
        f"{_cell(m.get('exposure'), 'share')} | {exits} |"
    )


TRADING_HEADER = [
    "| model | trades | turnover (x capital) | win rate | mean trade | t of mean trade | net return "
    "| Sharpe (daily, 365) | max drawdown | time in market | exits TP/SL/time/end |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]


def markdown(result: dict[str, Any]) -> str:
    cfg, rule, report = result["config"], result["rule"], result["report"]
    prior = report["prior"]
    lines = [
        "# Out-of-sample report (bundled data, walk-forward, the served rule)",
        "",
        f"Symbols {', '.join(result['symbols'])}, 1 h candles. Test {result['test'][0]} .. {result['test'][1]} "
        f"({result['test_rows']} labelled rows) in {len(result['folds'])} folds; before each fold every model is "
        f"retrained on the {result['train_days']} days ending {cfg['embargo_hours']} h before it (embargo) and "
        f"predicts only that fold. Labels: direction of the {cfg['horizon']} h forward return with a "
        f"±{cfg['band'] * 100:.2f} % no-trade band. Nothing was tuned on the test window.",
        "",
        "## Economic value: the served rule",
        "",
        f"Rule ({'`app.domains.learning.backtest`'}): {result['rule_text']}. One position per symbol at a time; "
        "capital split equally between the symbols, each compounding its own trades at 1x; equity marked at "
        "every close (drawdown), Sharpe from daily returns. The prior always calls the training set's majority "
        "direction (no confidence filter: its probability would never pass one); the fallback momentum rule's "
        "own confidence meets the same minimum, as served; buy-and-hold is long from the first possible entry "
        "to the end, with fees, slippage and funding and no TP/SL. The t of the mean trade is its mean over "
        "its standard error: with a few dozen trades, |t| below about 2 cannot tell the rule from noise.",
        "",
        *TRADING_HEADER,
    ]
    for name in (*NAMES, *BASELINES):
        lines.append(_trading_row(name, report[name]))
    as_served = result.get("meta", {}).get("as_served")
    if as_served is not None:
        lines.append(_trading_row("**ensemble + meta layer (as served)**", as_served))
    lines += [
        "",
        "The members' and the ensemble's rows compare the minimum with the direction probability (what a champion "
        "without a meta layer serves); **as served** a champion with a meta layer compares it with its P(TP1 before "
        "the stop), the last row, which the promotion gate scores for the ensemble (`pipeline.served_metrics`).",
        "",
        "## Classification, and directional skill apart from volatility skill",
        "",
        "Direction: on the candles that moved (label LONG or SHORT), P(LONG) / (P(LONG) + P(SHORT)) as the "
        f"call; {_cell(prior.get('moved_share'), 'share')} of the rows moved, "
        f"{_cell(prior.get('up_share'), 'share')} of those up. A coin has direction log loss ln 2 = 0.6931; "
        "the prior's row is the majority-side baseline. Volatility: P(moved) = 1 - P(HOLD) against "
        "whether the candle moved (binary log loss, and AUC: 0.5 = no skill; the prior's AUC differs from "
        "0.5 only because each fold has its own prior).",
        "",
        "| model | accuracy | log loss | Brier | direction accuracy | direction log loss | move log loss | move AUC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in (*NAMES, "prior"):
        m = report[name]
        lines.append(
            f"| {name} | {_cell(m.get('accuracy'))} | {_cell(m.get('log_loss'))} | {_cell(m.get('brier'))} | "
            f"{_cell(m.get('direction_accuracy'))} | {_cell(m.get('direction_log_loss'))} | "
            f"{_cell(m.get('move_log_loss'))} | {_cell(m.get('move_auc'))} |"
        )
    lines += [
        "",
        "## Sensitivity to the minimum confidence (the profiles' own values; nothing is chosen from this)",
        "",
    ]
    for label, table in result["min_confidence_sensitivity"].items():
        lines += [f"Minimum confidence {label}:", "", *TRADING_HEADER]
        lines += [_trading_row(name, m) for name, m in table.items()]
        lines.append("")
    lines += meta_markdown(result["meta"])
    lines += [
        "## Folds",
        "",
        "| fold (test) | training rows | test rows | ensemble weights | temperature | training time |",
        "|---|---|---|---|---|---|",
    ]
    for fold in result["folds"]:
        weights = ", ".join(f"{k} {v:.2f}" for k, v in fold["weights"].items())
        fit = sum(fold["fit_seconds"].values())
        span = f"{fold['test'][0]} .. {fold['test'][1]}"
        lines.append(
            f"| {span} | {fold['train_rows']} | {fold['test_rows']} | {weights} | "
            f"{fold['temperature']:.3f} | {fit:.1f} s |"
        )
    lines += [
        "",
        f"Machine: {result['machine']}; training {result['seconds_fit']:.0f} s, scoring "
        f"{result['seconds_score']:.0f} s. Rule parameters: {json.dumps(rule, sort_keys=True)}.",
        f"Generated {result['date']} by `python -m app.domains.learning.report`.",
        "",
    ]
    return "\n".join(lines)


def meta_markdown(meta: dict[str, Any]) -> list[str]:
    """The meta layer's section of the report."""
    b = meta["barriers"]
    breakeven = meta["breakeven_probability"]
    lines = [
        "## The meta layer: P(TP1 before the stop), what the served confidence means",
        "",
        f"Before each fold, beside the ensemble, a meta model (`meta.fit_meta`: LightGBM on the features, the "
        f"ensemble's probabilities and the proposed side, Platt-calibrated on its own newest slice) learns whether "
        f"the trade of the ensemble's argmax side reaches TP1 ({b['atr_tp1_multiple']} x ATR x the regime's scale; "
        f"median +{(b['median_tp1'] or 0) * 100:.2f} %) before the stop ({b['atr_sl_multiple']} x ATR; median "
        f"-{(b['median_sl'] or 0) * 100:.2f} %), as the live exit plan sets them, within {b['max_hold_bars']} "
        "candles from the next open (a timeout is a miss), "
        "from the ensemble's OUT-OF-SAMPLE probabilities on the fold's training window (cross-fitted: "
        "`pipeline.cross_fitted_primary`), labels purged before the fold. It then predicts the fold. Below, the "
        "folds' predictions pooled, on every test row with a side and a known outcome.",
        "",
    ]
    if "absent" in meta:
        return [*lines, f"No meta layer: {meta['absent']}.", ""]
    rel = meta["reliability"]
    side, direction = meta["side_base_rate"], meta["direction_probability_as_p"]
    lines += [
        f"{meta['rows']} rows ({meta['long_share'] * 100:.1f} % long); observed TP1-first frequency "
        f"{rel['observed_frequency']:.4f}, mean prediction {rel['predicted_mean']:.4f}.",
        "",
        "| predictor of TP1 before the stop | Brier | log loss |",
        "|---|---|---|",
        f"| meta model (calibrated) | {rel['brier']:.5f} | {rel['log_loss']:.5f} |",
        f"| base rate of each fold's meta training rows (mean {rel['base_rate']:.4f}) | {rel['base_brier']:.5f} | "
        f"{rel['base_log_loss']:.5f} |",
        f"| base rate of the proposed side in those rows | {side['brier']:.5f} | {side['log_loss']:.5f} |",
        f"| the direction probability of the side, read as P(TP1 first) | {direction['brier']:.5f} | "
        f"{direction['log_loss']:.5f} |",
        "",
        f"Brier skill against the base rate: {1 - rel['brier'] / rel['base_brier']:+.4f} (> 0 beats it).",
        "",
        *_skill_parts(meta["skill_parts"]),
        "Reliability (equal-width bins; predicted mean against the observed frequency of TP1 first):",
        "",
        "| bin | rows | predicted | observed |",
        "|---|---|---|---|",
    ]
    for row in rel["bins"]:
        if row["count"]:
            lines.append(
                f"| [{row['lower']:.1f}, {row['upper']:.1f}) | {row['count']} | {row['predicted_mean']:.4f} | "
                f"{row['observed_frequency']:.4f} |"
            )
    lines += [
        "",
        "The same by deciles of the prediction (equal-count bins: is there any resolution?):",
        "",
        "```",
        *meta["deciles_text"].splitlines()[2:],
        "```",
        "",
        "### The served rule with the minimum confidence applied to the meta probability",
        "",
        f"The same rule and simulation as above (`backtest.score_probabilities` with the meta probability as the "
        f"confidence the minimum compares with). The breakeven P(TP1 before the stop) of the rule's trade, every "
        f"miss counted as a full stop, with fees and slippage on both fills: "
        f"{'n/a' if breakeven is None else f'{breakeven:.4f}'} at the median distances of the test windows' "
        f"decisions (`backtest.rule_breakeven`; computed from the rule and the ATR, not chosen on data; a narrower "
        f"trade's is higher). The profiles' `global_min_confidence` are on this scale: "
        f"{', '.join(label for label, _ in _min_confidences()[1:])}.",
        "",
        *TRADING_HEADER,
    ]
    for label, m in meta["served_rule"].items():
        lines.append(_trading_row(f"ensemble, meta ≥ {label}", m))
    lines += [
        "",
        "Per fold (the meta model trained before it; cross-fit: rows each fold's primary was fitted on / predicted):",
        "",
        "| fold (test) | meta training rows (fit/stop/calibrate) | base rate | trees | temperature | test rows | "
        "cross-fit | time (cross-fit + meta) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in meta["folds"]:
        span = f"{f['test'][0]} .. {f['test'][1]}"
        if f.get("absent"):
            lines.append(f"| {span} | absent: {f['absent']} | | | | | | |")
            continue
        r = f["train_rows"]
        cross = ", ".join(f"{c['fit_rows']}/{c.get('predicted_rows', c.get('skipped', 0))}" for c in f["cross_fit"])
        temperature = "flat (inf)" if f["temperature"] >= 999 else f"{f['temperature']:.3f}"
        seconds = f.get("meta_primary_cross_fit", 0.0) + f.get("meta", 0.0)
        lines.append(
            f"| {span} | {r['fit']}/{r['early_stop']}/{r['calibration']} | {f['base_rate']:.4f} | {f['trees']} | "
            f"{temperature} | {f['test_rows']} | {cross} | {seconds:.0f} s |"
        )
    lines.append("")
    return lines


def _skill_parts(parts: dict[str, Any]) -> list[str]:
    def auc(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    return [
        "What the skill is made of (AUC of the meta probability; 0.5 = no ranking skill): a miss is a stop OR a "
        f"timeout ({parts['timeout_share'] * 100:.1f} % of the rows time out), so ranking whether a barrier is "
        "hit at all within the holding time (volatility) already ranks TP1-first; the direction part is which "
        "barrier comes first among the rows where one is hit "
        f"(TP1 first in {parts['tp_share_given_a_barrier_is_hit'] * 100:.1f} % of them).",
        "",
        "| AUC of the meta probability for | AUC |",
        "|---|---|",
        f"| TP1 first (the label) | {auc(parts['auc_tp_first'])} |",
        f"| a barrier is hit within the holding time (volatility) | {auc(parts['auc_a_barrier_is_hit'])} |",
        f"| TP1 before the stop, given a barrier is hit (direction) | "
        f"{auc(parts['auc_tp_before_sl_given_a_barrier_is_hit'])} |",
        "",
    ]


def main() -> int:
    config = TrainingConfig()
    result = asyncio.run(run(config, TradeRule(fee_rate=config.fee_rate)))
    DOCS.mkdir(exist_ok=True)
    (DOCS / "signals-oos-report.json").write_text(json.dumps(result, indent=1, sort_keys=True))
    (DOCS / "signals-oos-report.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
