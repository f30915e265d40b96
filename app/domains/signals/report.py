"""The out-of-sample report on the bundled data: `python -m app.domains.signals.report`.

Fixed walk-forward experiment, nothing tuned on the test window: the test year
2024-11-01 .. 2025-10-31 is cut into four quarterly folds; before each fold all four models
and the ensemble are retrained on the two years ending 24 h (the embargo) before it, and
predict only that fold. The folds' predictions are scored together, with the served rule
(`backtest`): the served decision and the active profile's minimum confidence, entry at the next
candle's open, TP1 / SL / maximum holding time, taker fees, slippage and funding; beside it the
classification metrics, and directional skill apart from volatility skill. BTC and ETH USDT
perpetuals, 1 h candles, default TrainingConfig and TradeRule. The minimum confidence is also shown
at the three risk profiles' values and at none (a sensitivity table: nothing is chosen from it).
Writes docs/signals-oos-report.md and .json.
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

from app.domains.policy.profiles import DEFAULT_PROFILES
from app.domains.signals.backtest import (
    BASELINES,
    Metrics,
    TradeRule,
    describe_rule,
    score_probabilities,
    served_report,
    symbol_market,
)
from app.domains.signals.candles import FloatArray
from app.domains.signals.evaluation import Dataset
from app.domains.signals.marketdata import ReplayMarketData
from app.domains.signals.training import (
    HOUR_MS,
    MODEL_KINDS,
    SymbolRows,
    TrainingConfig,
    fit_models,
    predictions,
    split_by_time,
    symbol_rows,
)

SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT")
FOLDS = ("2024-11-01", "2025-02-01", "2025-05-01", "2025-08-01")
TEST_UNTIL = "2025-11-01"
TRAIN_DAYS = 730
TEST_FROM = FOLDS[0]
DOCS = Path(__file__).resolve().parents[3] / "docs"
NAMES = (*MODEL_KINDS, "ensemble")


def _ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


def _joined(tests: list[SymbolRows]) -> Dataset:
    """The folds' test rows in one set; folds are consecutive, so the order stays by time."""
    return Dataset(
        ",".join(SYMBOLS),
        np.concatenate([t.timestamp for t in tests]),
        np.concatenate([t.x for t in tests]),
        np.concatenate([t.y for t in tests]),
        np.concatenate([t.next_return for t in tests]),
        np.concatenate([t.group for t in tests]),
    )


async def run(config: TrainingConfig, rule: TradeRule) -> dict[str, Any]:
    market = ReplayMarketData()
    parts, markets = [], []
    first = _ms(FOLDS[0]) - TRAIN_DAYS * 86_400_000 - 10 * 86_400_000  # 10 days only warm indicators up
    for symbol in SYMBOLS:
        candles = await market.candles(symbol, "1h", first, _ms(TEST_UNTIL))
        funding = await market.funding(symbol, first, _ms(TEST_UNTIL))
        parts.append(symbol_rows(candles, funding, config))
        markets.append(symbol_market(candles, funding, _ms(TEST_FROM), _ms(TEST_UNTIL)))
    began = time.perf_counter()
    tests: list[SymbolRows] = []
    predicted: list[dict[str, FloatArray]] = []
    folds: list[dict[str, Any]] = []
    for start, stop in itertools.pairwise([*(_ms(d) for d in FOLDS), _ms(TEST_UNTIL)]):
        train, test = split_by_time(parts, start, config.embargo_hours, stop, start - TRAIN_DAYS * 24 * HOUR_MS)
        trained = fit_models(train, config)
        tests.append(test)
        predicted.append(predictions(trained, test))
        folds.append(
            {
                "test": [_day(start), _day(stop)],
                "train_rows": len(train.y),
                "test_rows": len(test.y),
                "weights": trained.ensemble.weights,
                "temperature": trained.ensemble.temperature,
                "fit_seconds": trained.fit_seconds,
            }
        )
    fit_seconds = time.perf_counter() - began
    rows = _joined(tests)
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
    score_seconds = time.perf_counter() - began
    return {
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
        f"Rule ({'`app.domains.signals.backtest`'}): {result['rule_text']}. One position per symbol at a time; "
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
    lines += [
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
        f"Generated {result['date']} by `python -m app.domains.signals.report`.",
        "",
    ]
    return "\n".join(lines)


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
