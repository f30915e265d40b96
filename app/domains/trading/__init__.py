"""Trades on the paper account: open through RiskGuard, close with realized PnL."""
