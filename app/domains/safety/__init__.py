"""SafetyGovernor: drawdown and losing-streak halts."""
