"""Portfolio governance: exposure memory of closed trades and the portfolio policy derived from it."""
