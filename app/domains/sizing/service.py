"""A position size for a served signal on the live account: the learned multiplier (or half Kelly on the signal's
confidence), clipped by the limit stack RiskGuard checks with, then fitted to the market's amount step and minimums.
"""

import asyncio
import logging
from decimal import Decimal
from pathlib import Path

from app.domains.markets.catalog import MarketCatalog
from app.domains.risk.stack import EffectiveLimits
from app.domains.signals.service import Signal
from app.domains.sizing.policy import (
    SizeDecision,
    SizingConfig,
    SizingInputs,
    SizingPolicy,
    fit_to_market,
    size_position,
)

logger = logging.getLogger(__name__)


class PositionSizer:
    """Sizes signals; holds the trained sizing policy when one was saved (`python -m app train-sizing`)."""

    def __init__(self, markets: MarketCatalog, policy_dir: Path | None = None) -> None:
        self.markets = markets
        self.policy_dir = policy_dir
        self.policy: SizingPolicy | None = None
        self.config = SizingConfig()

    async def load_policy(self) -> SizingPolicy | None:
        """A trained sizing policy if one was saved, else None (Kelly sizes)."""
        directory = self.policy_dir
        if directory is None or not await asyncio.to_thread((directory / "config.json").exists):
            self.policy = None
            return None
        self.policy = await asyncio.to_thread(SizingPolicy.load, directory)
        logger.info("sizing_policy_loaded", extra={"directory": str(directory)})
        return self.policy

    def size(
        self,
        signal: Signal,
        *,
        equity: Decimal,
        used_margin: Decimal,
        open_notional: Decimal,
        pnl_trend: float,
        limits: EffectiveLimits,
        leverage: Decimal | None,
        stop_distance_pct: Decimal | None,
        assumed_stop_pct: Decimal,
    ) -> SizeDecision:
        """A position size for `signal` on the live account: at most the largest notional the limit stack
        allows (the same function RiskGuard checks with), then fitted to the market's amount step and
        minimums, so POST /trades at the signal's price takes it."""
        if signal.side == "HOLD":
            return SizeDecision(None, None, None, "none", "HOLD: no position to size")
        inputs = SizingInputs(
            confidence=signal.confidence,
            volatility=signal.volatility if signal.volatility is not None else float("nan"),
            pnl_trend=pnl_trend,
            margin_use=float(used_margin / equity) if equity > 0 else 0.0,
        )
        price = Decimal(repr(signal.price))
        clipped = size_position(
            equity,
            price,
            inputs,
            limits,
            self.policy,
            self.config,
            leverage,
            stop_distance_pct,
            open_notional=open_notional,
            used_margin=used_margin,
            assumed_stop_pct=assumed_stop_pct,
        )
        return fit_to_market(clipped, self.markets.resolve(signal.symbol), price)
