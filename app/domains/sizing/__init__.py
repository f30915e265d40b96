"""Position sizing: a learned multiplier (or half Kelly) on live equity, clipped by RiskGuard's own limits."""
