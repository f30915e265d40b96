"""The portfolio policy: a score from the exposure memory, mapped to one of three limit sets.

`decide` is pure: the previous policy, the memory's summary and the config in; the decision with its
reason and inputs out. Hysteresis keeps a score hovering at a threshold from flapping the policy.
"""

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from app.domains.governance.memory import MemorySummary

VOLATILITY_FLOOR = 0.01


class PortfolioPolicy(StrEnum):
    CONSERVATIVE = "CONSERVATIVE"
    BALANCED = "BALANCED"
    AGGRESSIVE = "AGGRESSIVE"


@dataclass(frozen=True, slots=True)
class PolicyLimits:
    max_leverage: int
    # The minimum calibrated P(TP1 hit before the stop) of a trade, the scale of the profiles'
    # `global_min_confidence` (app/domains/policy/profiles.py); the default plan breaks even at about 0.53.
    min_confidence: float
    max_positions: int


# min_confidence: margins above the 0.53 breakeven chosen from the economics, not fitted to data; a
# stricter policy is never looser (CONSERVATIVE >= BALANCED >= AGGRESSIVE).
LIMITS: dict[PortfolioPolicy, PolicyLimits] = {
    PortfolioPolicy.CONSERVATIVE: PolicyLimits(max_leverage=10, min_confidence=0.60, max_positions=3),
    PortfolioPolicy.BALANCED: PolicyLimits(max_leverage=20, min_confidence=0.57, max_positions=5),
    PortfolioPolicy.AGGRESSIVE: PolicyLimits(max_leverage=30, min_confidence=0.55, max_positions=7),
}


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    min_samples: int = 50
    conservative_threshold: float = 0.3
    aggressive_threshold: float = 0.7
    hysteresis: float = 0.05

    def __post_init__(self) -> None:
        if self.min_samples < 0:
            raise ValueError("min_samples must be >= 0")
        if not self.conservative_threshold < self.aggressive_threshold:
            raise ValueError("conservative_threshold must be below aggressive_threshold")
        if not 0 <= self.hysteresis * 2 < self.aggressive_threshold - self.conservative_threshold:
            raise ValueError("hysteresis must be >= 0 and under half the gap between the thresholds")


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    policy: PortfolioPolicy
    score: float | None
    reason: str
    inputs: dict[str, Any]

    @property
    def limits(self) -> PolicyLimits:
        return LIMITS[self.policy]


def score(summary: MemorySummary) -> float | None:
    """(avg_pnl × avg_confidence × win_rate) / max(avg_volatility, 0.01); None when a factor is unknown."""
    if (
        summary.avg_pnl is None
        or summary.avg_confidence is None
        or summary.win_rate is None
        or summary.avg_volatility is None
    ):
        return None
    return summary.avg_pnl * summary.avg_confidence * summary.win_rate / max(summary.avg_volatility, VOLATILITY_FLOOR)


def band(value: float, config: PolicyConfig) -> PortfolioPolicy:
    """The policy of a score without hysteresis: < conservative, > aggressive, else balanced."""
    if value < config.conservative_threshold:
        return PortfolioPolicy.CONSERVATIVE
    if value > config.aggressive_threshold:
        return PortfolioPolicy.AGGRESSIVE
    return PortfolioPolicy.BALANCED


_STRICTNESS = {PortfolioPolicy.AGGRESSIVE: 0, PortfolioPolicy.BALANCED: 1, PortfolioPolicy.CONSERVATIVE: 2}


def stricter(a: PortfolioPolicy, b: PortfolioPolicy | None) -> PortfolioPolicy:
    return a if b is None or _STRICTNESS[a] >= _STRICTNESS[b] else b


def decide(previous: PortfolioPolicy | None, summary: MemorySummary, config: PolicyConfig) -> PolicyDecision:
    """The policy for `summary`. Leaving the previous policy needs the score past that policy's
    threshold by `hysteresis` (CONSERVATIVE leaves at >= c + h, AGGRESSIVE at <= a - h, BALANCED
    at < c - h or > a + h); with no previous policy the plain bands apply.

    Without evidence (fewer than MIN_SAMPLES events, or a score that cannot be computed) the policy
    is BALANCED, except that a stricter previous policy is kept: a window that lost its events (a
    restart with a trimmed stream) never loosens a CONSERVATIVE policy."""
    value = score(summary)
    inputs: dict[str, Any] = {**asdict(summary), "previous": previous.value if previous else None}
    c, a, h = config.conservative_threshold, config.aggressive_threshold, config.hysteresis
    missing: str | None = None
    if summary.count < config.min_samples:
        missing = f"insufficient samples: {summary.count} < MIN_SAMPLES {config.min_samples}"
    elif value is None:
        lacking = "volatility" if summary.avg_volatility is None else "confidence"
        missing = f"score undefined: no event in the window has a {lacking}"
    if missing is not None:
        policy = stricter(PortfolioPolicy.BALANCED, previous)
        note = (
            f"; {policy.value} is kept: it is never loosened without evidence"
            if policy is not PortfolioPolicy.BALANCED
            else "; BALANCED until then"
        )
        return PolicyDecision(policy, value, missing + note, inputs)
    assert value is not None  # a summary with every factor known has a score
    plain = band(value, config)
    held = False
    # The bounds are rounded so that 0.7 - 0.05 is 0.65, not 0.6499999999999999.
    leave_c, leave_a, low, high = round(c + h, 12), round(a - h, 12), round(c - h, 12), round(a + h, 12)
    if previous is PortfolioPolicy.CONSERVATIVE and value < leave_c:
        held = plain is not PortfolioPolicy.CONSERVATIVE
        policy = PortfolioPolicy.CONSERVATIVE
    elif previous is PortfolioPolicy.AGGRESSIVE and value > leave_a:
        held = plain is not PortfolioPolicy.AGGRESSIVE
        policy = PortfolioPolicy.AGGRESSIVE
    elif previous is PortfolioPolicy.BALANCED and low <= value <= high:
        held = plain is not PortfolioPolicy.BALANCED
        policy = PortfolioPolicy.BALANCED
    else:
        policy = plain
    rule = {
        PortfolioPolicy.CONSERVATIVE: f"score {value:.4f} < {c:g}",
        PortfolioPolicy.BALANCED: f"{c:g} <= score {value:.4f} <= {a:g}",
        PortfolioPolicy.AGGRESSIVE: f"score {value:.4f} > {a:g}",
    }[plain]
    reason = (
        f"{rule}, but {policy.value} is held: leaving it needs the threshold crossed by the hysteresis {h:g}"
        if held
        else f"{rule}: {policy.value}"
    )
    return PolicyDecision(policy, value, reason, inputs)
