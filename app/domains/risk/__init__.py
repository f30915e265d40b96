"""RiskGuard: the pre-trade gate every order passes."""
