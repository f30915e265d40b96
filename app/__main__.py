"""Command line: `python -m app train ...` and `python -m app evaluate ...`.

train    trains the four models and the ensemble on the bundled (or MARKET_DATA_DIR) data,
         writes artifacts under MODEL_DIR, records versions in the database and runs the
         promotion gate.
evaluate scores a registered ensemble (the champion or a version id) on any candle file,
         including files it has never seen, next to the baselines, with the served rule
         (`app.domains.learning.backtest`: the served decision and the active profile's minimum
         confidence, next-open entry, TP1/SL/max hold, taker fees, slippage, funding).
"""

import argparse
import asyncio
import json
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic.config import Config

from alembic import command
from app.core.bus import EventBus
from app.core.db import create_engine, create_sessionmaker
from app.core.settings import Settings
from app.domains.learning.backtest import BASELINES, TradeRule, default_min_confidence, describe_rule, symbol_market
from app.domains.learning.dataset import split_by_time, symbol_rows
from app.domains.learning.pipeline import TrainPlan, default_rule, score_trained, train_and_promote
from app.domains.markets.marketdata import ReplayMarketData
from app.domains.signals.artifacts import load_ensemble, load_meta
from app.domains.signals.models import MODEL_KINDS
from app.domains.signals.modelset import TrainingConfig
from app.domains.signals.registry.gate import PromotionMargins
from app.domains.signals.registry.service import ModelRegistry, label_reach
from app.domains.sizing.policy import SizingPolicy, replay_episodes
from app.handlers import default_handlers

ROOT = Path(__file__).resolve().parents[1]
REPORT_KEYS = (*MODEL_KINDS, "ensemble", *BASELINES)
METRICS = (
    "accuracy",
    "log_loss",
    "direction_accuracy",
    "move_auc",
    "trades",
    "win_rate",
    "net_return",
    "sharpe",
    "max_drawdown",
)


def _migrate(url: str) -> None:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.attributes.update(url=url, configure_logger=False)
    command.upgrade(cfg, "head")


def _day_ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


def _table(report: dict[str, dict[str, float | None]]) -> str:
    rows = [f"{'':18s}" + "".join(f"{m[:11]:>12s}" for m in METRICS)]
    for name in REPORT_KEYS:
        cells = (f"{v:12.4f}" if v is not None else f"{'n/a':>12s}" for v in (report[name].get(m) for m in METRICS))
        rows.append(f"{name:18s}" + "".join(cells))
    return "\n".join(rows)


async def _registry(settings: Settings, model_dir: Path) -> tuple[ModelRegistry, Any]:
    await asyncio.to_thread(_migrate, settings.database_url)
    engine = create_engine(settings.database_url, **settings.db_engine_options())
    registry = ModelRegistry(
        create_sessionmaker(engine),
        EventBus(default_handlers()),
        model_dir,
        keep_candidates=settings.model_keep_candidates,
    )
    return registry, engine


async def train(args: argparse.Namespace, settings: Settings) -> int:
    registry, engine = await _registry(settings, args.model_dir)
    market = ReplayMarketData(Path(settings.market_data_dir) if settings.market_data_dir else None)
    until = _day_ms(args.until) if args.until else None
    if until is None:
        last = await market.candles(args.symbols[0], args.timeframe)
        until = int(last.timestamp[-1]) + 1
    plan = TrainPlan(tuple(args.symbols), until, args.timeframe, args.train_days, args.test_days)
    margins = PromotionMargins(settings.promotion_margin_log_loss, settings.promotion_margin_net_return)
    try:
        config = TrainingConfig()
        rule = default_rule(config, default_min_confidence(settings.quantum_risk_mode))
        outcome = await train_and_promote(market, registry, args.model_dir, plan, config, margins, rule)
    finally:
        await engine.dispose()
    if args.json:
        print(
            json.dumps(
                {
                    "report": outcome.report,
                    "versions": {k: str(v.id) for k, v in outcome.versions.items()},
                    "decisions": {
                        k: {"promoted": d.promoted, "reason": d.reason} for k, d in outcome.decisions.items()
                    },
                    "refits": {
                        k: {"id": str(d.candidate_id), "refit_of": str(d.previous_champion_id), "reason": d.reason}
                        for k, d in outcome.refit_decisions.items()
                    },
                    "refit_skipped": outcome.refit_skipped,
                    "fit_seconds": outcome.fit_seconds,
                },
                indent=1,
            )
        )
        return 0
    print(f"trained on {outcome.train_rows} rows, tested on {outcome.test_rows} (out of sample)")
    print(_table(outcome.report))
    for kind, decision in outcome.decisions.items():
        verdict = "PROMOTED" if decision.promoted else "kept as candidate"
        print(f"{kind:10s} {outcome.versions[kind].id}  {verdict}: {decision.reason}")
    for kind, refit in outcome.refit_decisions.items():
        print(f"{kind:10s} {refit.candidate_id}  CHAMPION: {refit.reason}")
    for kind, why in outcome.refit_skipped.items():
        print(f"{kind:10s} not refitted: {why}")
    return 0


async def evaluate_cmd(args: argparse.Namespace, settings: Settings) -> int:
    registry, engine = await _registry(settings, args.model_dir)
    try:
        if args.model == "champion":
            version = await registry.champion("ensemble")
            if version is None:
                print("no champion ensemble: run `python -m app train` first", file=sys.stderr)
                return 2
        else:
            version = await registry.get(uuid.UUID(args.model))
    finally:
        await engine.dispose()
    if version.kind != "ensemble":
        print(f"version {version.id} is a {version.kind}; evaluate takes an ensemble version", file=sys.stderr)
        return 2
    trained, _ = load_ensemble(Path(version.artifact_path))
    data = Path(args.data)
    symbol = args.symbol or data.name.split("-")[0].replace("_USDT_USDT", "/USDT:USDT").replace("_USDT", "/USDT")
    candles = ReplayMarketData.load_candles_file(data, symbol, args.timeframe)
    funding = ReplayMarketData.load_funding_file(Path(args.funding), symbol) if args.funding else None
    if len(candles) == 0:
        print(f"{data}: no candles", file=sys.stderr)
        return 2
    start_ms = _day_ms(args.start) if args.start else int(candles.timestamp[0])
    end_ms = _day_ms(args.end) if args.end else int(candles.timestamp[-1]) + 1
    _, rows = split_by_time([symbol_rows(candles, funding, trained.config)], start_ms, 0, end_ms)
    if len(rows.y) == 0:
        print(f"{data}: not enough candles for features and labels", file=sys.stderr)
        return 2
    min_confidence = args.min_confidence
    if min_confidence is None:
        min_confidence = default_min_confidence(settings.quantum_risk_mode)
    base = default_rule(trained.config, min_confidence)
    rule = TradeRule(
        min_confidence=base.min_confidence,
        max_hold_bars=args.max_hold,
        fee_rate=args.fee if args.fee is not None else base.fee_rate,
        slippage=args.slippage if args.slippage is not None else float(settings.paper_slippage_pct) / 100,
    )
    seen_until = (version.train_end + label_reach(version)).timestamp() * 1000
    seen_from = version.train_start.timestamp() * 1000
    overlap = int(((rows.timestamp >= seen_from) & (rows.timestamp < seen_until)).sum())
    if overlap:
        print(
            f"warning: {overlap} of {len(rows.y)} rows are inside the period the model was trained on "
            f"({', '.join(version.symbols)}, {version.train_start:%Y-%m-%d} .. {version.train_end:%Y-%m-%d}); "
            "use --start to score only later candles",
            file=sys.stderr,
        )
    meta = load_meta(Path(version.artifact_path))
    market_window = [symbol_market(candles, funding, start_ms, end_ms)]
    report = score_trained(trained, rows, market_window, rule, meta.model)  # the ensemble as served
    if args.json:
        print(json.dumps({name: report[name] for name in REPORT_KEYS}))
    else:
        confidence = (
            "its meta layer's P(TP1 before the stop)" if meta.model is not None else "its direction probability"
        )
        print(f"ensemble {version.id} on {data.name}: {len(rows.y)} rows; {describe_rule(rule)}")
        print(f"the ensemble's minimum confidence is compared with {confidence}, as served")
        print(_table(report))
    return 0


async def train_sizing(args: argparse.Namespace, settings: Settings) -> int:
    """Train the position-sizing policy on replayed episodes and save it under MODEL_DIR/sizing."""
    market = ReplayMarketData(Path(settings.market_data_dir) if settings.market_data_dir else None)
    episodes = await replay_episodes(market, _day_ms(args.start), _day_ms(args.until), tuple(args.symbols))
    policy = SizingPolicy()
    metrics = policy.train_on_episodes(episodes, epochs=args.epochs, seed=0)
    saved = policy.save(args.model_dir / "sizing")
    print(json.dumps({"episodes": len(episodes), **metrics, **saved}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train, register and run the promotion gate")
    t.add_argument("--symbols", type=lambda s: [x.strip() for x in s.split(",") if x.strip()], required=True)
    t.add_argument("--timeframe", default="1h")
    t.add_argument("--until", help="last day of data used (exclusive), YYYY-MM-DD; default: all data")
    t.add_argument("--train-days", type=int, default=730)
    t.add_argument("--test-days", type=int, default=180)
    t.add_argument("--json", action="store_true")
    e = sub.add_parser("evaluate", help="score a registered ensemble on a candle file")
    e.add_argument("--model", default="champion", help="'champion' or a version id")
    e.add_argument("--data", required=True, help="candle file: gzip or plain CSV timestamp,open,high,low,close,volume")
    e.add_argument("--funding", help="funding file: timestamp,funding_rate")
    e.add_argument("--symbol", help="ccxt symbol (default: from the file name)")
    e.add_argument("--timeframe", default="1h")
    e.add_argument("--start", help="first day scored, YYYY-MM-DD (default: the file's first candle)")
    e.add_argument("--end", help="day the scoring ends (exclusive), YYYY-MM-DD (default: the file's end)")
    e.add_argument(
        "--min-confidence",
        type=float,
        help="minimum confidence of a served call (default: global_min_confidence of QUANTUM_RISK_MODE's profile)",
    )
    e.add_argument("--max-hold", type=int, default=TradeRule.max_hold_bars, help="maximum holding time, candles")
    e.add_argument(
        "--slippage", type=float, help="per fill, a fraction of the price (default: PAPER_SLIPPAGE_PCT / 100)"
    )
    e.add_argument("--fee", type=float, help="taker fee per fill (default: the model's training config)")
    e.add_argument("--json", action="store_true")
    z = sub.add_parser("train-sizing", help="train the position-sizing policy on replayed episodes")
    z.add_argument(
        "--symbols",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=["BTC/USDT:USDT", "ETH/USDT:USDT"],
    )
    z.add_argument("--start", default="2023-01-01")
    z.add_argument("--until", default="2024-01-01")
    z.add_argument("--epochs", type=int, default=300)
    args = parser.parse_args(argv)
    settings = Settings()
    args.model_dir = Path(settings.model_dir).resolve()
    args.model_dir.mkdir(parents=True, exist_ok=True)
    handler = {"train": train, "evaluate": evaluate_cmd, "train-sizing": train_sizing}[args.command]
    return asyncio.run(handler(args, settings))


if __name__ == "__main__":
    sys.exit(main())
