"""The out-of-sample report on the bundled data: `python -m app.domains.signals.report`.

Fixed walk-forward experiment, nothing tuned on the test window: the test year
2024-11-01 .. 2025-10-31 is cut into four quarterly folds; before each fold all four models
and the ensemble are retrained on the two years ending 24 h (the embargo) before it, and
score only that fold. The report scores the folds' predictions together. BTC and ETH USDT
perpetuals, 1 h candles, default TrainingConfig. Writes docs/signals-oos-report.md and .json.
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
from app.domains.signals.training import BASELINES, MODEL_KINDS, TrainingConfig, symbol_rows, walk_forward

SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT")
FOLDS = ("2024-11-01", "2025-02-01", "2025-05-01", "2025-08-01")
TEST_UNTIL = "2025-11-01"
TRAIN_DAYS = 730
TEST_FROM = FOLDS[0]
DOCS = Path(__file__).resolve().parents[3] / "docs"


def _ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


async def run(config: TrainingConfig) -> dict[str, Any]:
    market = ReplayMarketData()
    parts = []
    first = _ms(FOLDS[0]) - TRAIN_DAYS * 86_400_000 - 10 * 86_400_000  # 10 days only warm indicators up
    for symbol in SYMBOLS:
        candles = await market.candles(symbol, "1h", first, _ms(TEST_UNTIL))
        funding = await market.funding(symbol, first, _ms(TEST_UNTIL))
        parts.append(symbol_rows(candles, funding, config))
    began = time.perf_counter()
    result = walk_forward(parts, [_ms(d) for d in FOLDS], _ms(TEST_UNTIL), TRAIN_DAYS, config)
    seconds = time.perf_counter() - began
    return {
        "symbols": list(SYMBOLS),
        "folds": [{**f, "test": [_day(f["test_start_ms"]), _day(f["test_end_ms"])]} for f in result.folds],
        "train_days": TRAIN_DAYS,
        "test": [TEST_FROM, TEST_UNTIL],
        "test_rows": result.test_rows,
        "config": asdict(config),
        "seconds_total": seconds,
        "report": result.report,
        "machine": f"{platform.machine()} {platform.processor() or ''} python {sys.version.split()[0]}".strip(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def _cell(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value * 100:+.1f} %" if pct else f"{value:.4f}"


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        "# Out-of-sample report (bundled data, walk-forward)",
        "",
        f"Symbols {', '.join(result['symbols'])}, 1 h candles. Test {result['test'][0]} .. {result['test'][1]} "
        f"({result['test_rows']} rows) in {len(result['folds'])} folds; before each fold every model is retrained "
        f"on the {result['train_days']} days ending {cfg['embargo_hours']} h before it (embargo) and scores only "
        f"that fold. Labels: direction of the {cfg['horizon']} h forward return with a ±{cfg['band'] * 100:.2f} % "
        "no-trade band. Rule: +1 LONG / -1 SHORT / 0 HOLD, re-decided every hour, taker fee "
        f"{cfg['fee_rate'] * 100:.2f} % per change of position, capital split equally between the symbols. "
        "Nothing was tuned on the test window.",
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
    lines += [
        "",
        "| fold (test) | training rows | test rows | ensemble weights | training time |",
        "|---|---|---|---|---|",
    ]
    for fold in result["folds"]:
        weights = ", ".join(f"{k} {v:.2f}" for k, v in fold["weights"].items())
        fit = sum(fold["fit_seconds"].values())
        span = f"{fold['test'][0]} .. {fold['test'][1]}"
        lines.append(f"| {span} | {fold['train_rows']} | {fold['test_rows']} | {weights} | {fit:.1f} s |")
    lines += [
        "",
        f"Machine: {result['machine']}; whole run {result['seconds_total']:.0f} s.",
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
