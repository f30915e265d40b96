"""Training time of every model and the ensemble: 2 symbols x 2 years of 1 h candles (BTC and ETH USDT perpetuals
from the bundled data), the default `TrainingConfig`, one `fit_models` call, timed per model and in total.

- Per model: `TrainedModels.fit_seconds` (fitting on the fit slice with early stopping on the next one; the
  boosted trees' refit on both).
- Ensemble: the members' predictions on the weights and calibration slices, the weights, the temperature and its
  held-out folds (`fit_seconds["ensemble"]`). The total is the whole `fit_models` call.
- Rows: building the model inputs (features, labels, windows) of both symbols, timed apart.
- Not in the figures: a fresh process's first fit also pays torch's lazy imports and first JIT trace (a few
  seconds, once per process); a warm-up fit on 2 months runs first and its time is in the details.
Also recorded (details, not timed): the slices, the weights each member earns, the temperature and its evidence,
and every member's, the ensemble's and the prior's log loss on the weights slice (held out from fitting and
early stopping) and on the 3 months after the training window (never seen). A --quick run trains on 3 months
with one torch epoch (checks the harness only). `python -m bench.signals_training [--quick]` runs it alone.
"""

import argparse
import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from app.domains.learning.dataset import SymbolRows, split_by_time, symbol_rows
from app.domains.learning.training import fit_models, predictions
from app.domains.markets.marketdata import ReplayMarketData
from app.domains.signals.ensemble import log_loss
from app.domains.signals.models import MODEL_KINDS
from app.domains.signals.modelset import TrainingConfig
from bench.harness import Figure

NAME = "signals_training"
SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT")
DAY_MS = 86_400_000
WARMUP_DAYS = 10  # candles before the window only warm the indicators up
TRAIN = ("2022-11-01", "2024-11-01")  # two years
HELD_OUT_UNTIL = "2025-02-01"  # the 3 months after: scored, never trained on
QUICK_TRAIN = ("2024-08-01", "2024-11-01")


def _ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


async def _parts(start_ms: int, end_ms: int, config: TrainingConfig) -> list[SymbolRows]:
    market = ReplayMarketData()
    first = start_ms - WARMUP_DAYS * DAY_MS
    parts = []
    for symbol in SYMBOLS:
        candles = await market.candles(symbol, "1h", first, end_ms)
        funding = await market.funding(symbol, first, end_ms)
        parts.append(symbol_rows(candles, funding, config))
    return parts


def measure(quick: bool) -> dict[str, Any]:
    config = TrainingConfig(torch_epochs=1) if quick else TrainingConfig()
    train_from, train_until = (_ms(d) for d in (QUICK_TRAIN if quick else TRAIN))
    held_until = _ms(HELD_OUT_UNTIL)
    began = time.perf_counter()
    parts = asyncio.run(_parts(train_from, held_until, config))
    rows_seconds = time.perf_counter() - began
    train, held_out = split_by_time(parts, train_until, config.embargo_hours, held_until, train_from)
    # a fresh process's first fit also pays torch's lazy imports (seconds): done once here, untimed in `seconds`
    began = time.perf_counter()
    warm, _ = split_by_time(parts, train_from + 60 * DAY_MS, 0, None, train_from)
    fit_models(warm, TrainingConfig(torch_epochs=1))
    warm_up_seconds = time.perf_counter() - began
    began = time.perf_counter()
    trained = fit_models(train, config)
    total = time.perf_counter() - began
    seconds = {**trained.fit_seconds, "total": total}
    predicted = predictions(trained, held_out)
    held_out_loss = {name: log_loss(p, held_out.y) for name, p in predicted.items()}
    return {
        "config": {"torch_epochs": config.torch_epochs, "window": config.window, "horizon": config.horizon},
        "symbols": list(SYMBOLS),
        "train_window": [train_from, train_until],
        "train_rows": len(train.y),
        "held_out_rows": len(held_out.y),
        "rows_seconds": rows_seconds,
        "warm_up_seconds": warm_up_seconds,
        "seconds": seconds,
        "weights": trained.ensemble.weights,
        "temperature": trained.ensemble.temperature,
        "temperature_evidence": trained.ensemble.evidence,
        "slices": trained.fit_info["slices"],
        "stopping": trained.fit_info["stopping"],
        "weights_slice_log_loss": trained.fit_info["weights_slice_log_loss"],
        "held_out_log_loss": held_out_loss,
        "held_out_class_shares": np.bincount(held_out.y, minlength=3).astype(float).tolist(),
    }


def run(quick: bool) -> tuple[list[Figure], dict[str, Any]]:
    details = measure(quick)
    seconds = details["seconds"]
    span = "3 months (quick)" if quick else "2 years"
    weights = ", ".join(f"{k} {v:.2f}" for k, v in details["weights"].items())
    figures = [
        Figure(
            f"training, all models + ensemble, 2 symbols x {span} 1 h",
            "s",
            seconds["total"],
            "one run",
            1,
            "run",
            note=f"{details['train_rows']} rows, {details['config']['torch_epochs']} torch epochs max; "
            f"weights {weights}; T {details['temperature']:.2f}",
        )
    ]
    for name in (*MODEL_KINDS, "ensemble"):
        what = {
            "ensemble": "members' predictions on the weights and calibration slices, weights, temperature",
            "xgboost": "fit + early stopping, refit on fit + early-stopping rows",
            "lightgbm": "fit + early stopping, refit on fit + early-stopping rows",
        }.get(name, "fit + early stopping (at most the configured epochs)")
        figures.append(Figure(f"training: {name}", "s", seconds[name], "one run", 1, "run", note=what))
    figures.append(
        Figure(
            "model inputs of 2 symbols (features, labels, windows)", "s", details["rows_seconds"], "one run", 1, "run"
        )
    )
    return figures, details


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.signals_training", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    figures, details = run(parser.parse_args().quick)
    for f in figures:
        print(f"{f.name}: {f.value:.2f} {f.unit}  {f.note}")
    print("weights:", details["weights"], "temperature:", round(details["temperature"], 3))
    print("weights-slice log loss:", {k: round(v, 4) for k, v in details["weights_slice_log_loss"].items()})
    print("held-out log loss:", {k: round(v, 4) for k, v in details["held_out_log_loss"].items()})


if __name__ == "__main__":
    main()
