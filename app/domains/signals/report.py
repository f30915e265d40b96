"""The out-of-sample report on the bundled data: `python -m app.domains.signals.report`.

Fixed experiment, nothing tuned on the test window: train on 2022-11-01 .. 2024-10-31,
test on 2024-11-01 .. 2025-10-31 (24 h embargo), BTC and ETH USDT perpetuals, 1 h candles,
default TrainingConfig. Writes docs/signals-oos-report.md and .json.
"""

import asyncio
import json
import platform
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.domains.signals.marketdata import ReplayMarketData
from app.domains.signals.training import (
    BASELINES,
    MODEL_KINDS,
    TrainingConfig,
    evaluate,
    fit_models,
    split_by_time,
    symbol_rows,
)

SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT")
TRAIN_FROM, TEST_FROM, TEST_UNTIL = "2022-11-01", "2024-11-01", "2025-11-01"
DOCS = Path(__file__).resolve().parents[3] / "docs"


def _ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


async def run(config: TrainingConfig) -> dict[str, Any]:
    market = ReplayMarketData()
    parts = []
    for symbol in SYMBOLS:
        # history before TRAIN_FROM only warms the indicators up; no row before it is trained on
        candles = await market.candles(symbol, "1h", _ms(TRAIN_FROM) - 10 * 86_400_000, _ms(TEST_UNTIL))
        funding = await market.funding(symbol, _ms(TRAIN_FROM) - 10 * 86_400_000, _ms(TEST_UNTIL))
        parts.append(symbol_rows(candles, funding, config))
    train, test = split_by_time(parts, _ms(TEST_FROM), config.embargo_hours, _ms(TEST_UNTIL), _ms(TRAIN_FROM))
    began = time.perf_counter()
    trained = fit_models(train, config)
    seconds = time.perf_counter() - began
    return {
        "symbols": list(SYMBOLS),
        "train": [TRAIN_FROM, TEST_FROM],
        "test": [TEST_FROM, TEST_UNTIL],
        "train_rows": len(train.y),
        "test_rows": len(test.y),
        "config": asdict(config),
        "ensemble_weights": trained.ensemble.weights,
        "ensemble_temperature": trained.ensemble.temperature,
        "fit_seconds": {**trained.fit_seconds, "total": seconds},
        "report": evaluate(trained, test),
        "machine": f"{platform.machine()} {platform.processor() or ''} python {sys.version.split()[0]}".strip(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _cell(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value * 100:+.1f} %" if pct else f"{value:.4f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Out-of-sample report (bundled data)",
        "",
        f"Symbols {', '.join(result['symbols'])}, 1 h candles. Train {result['train'][0]} .. {result['train'][1]} "
        f"({result['train_rows']} rows), test {result['test'][0]} .. {result['test'][1]} ({result['test_rows']} rows), "
        f"{result['config']['embargo_hours']} h embargo; labels: direction of the {result['config']['horizon']} h "
        f"forward return with a ±{result['config']['band'] * 100:.2f} % no-trade band. "
        "Rule: +1 LONG / -1 SHORT / 0 HOLD, "
        f"re-decided every hour, taker fee {result['config']['fee_rate'] * 100:.2f} % per change of position, capital "
        "split equally between the symbols. Nothing was tuned on the test window.",
        "",
        "| model | accuracy | log loss | Brier | net return | Sharpe (annualized) |",
        "|---|---|---|---|---|---|",
    ]
    for name in (*MODEL_KINDS, "ensemble", *BASELINES):
        m = result["report"][name]
        lines.append(
            f"| {name} | {_cell(m['accuracy'])} | {_cell(m['log_loss'])} | {_cell(m['brier'])} | "
            f"{_cell(m['net_return'], pct=True)} | {_cell(m['sharpe'])} |"
        )
    weights = ", ".join(f"{k} {v:.2f}" for k, v in result["ensemble_weights"].items())
    fit = ", ".join(f"{k} {v:.1f} s" for k, v in result["fit_seconds"].items())
    lines += [
        "",
        f"Ensemble weights (validation log-loss gain over the prior): {weights}; "
        f"temperature {result['ensemble_temperature']:.3f}.",
        f"Training time on this machine ({result['machine']}): {fit}.",
        f"Generated {result['date']} by `python -m app.domains.signals.report`.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    result = asyncio.run(run(TrainingConfig()))
    DOCS.mkdir(exist_ok=True)
    (DOCS / "signals-oos-report.json").write_text(json.dumps(result, indent=1, sort_keys=True))
    (DOCS / "signals-oos-report.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
