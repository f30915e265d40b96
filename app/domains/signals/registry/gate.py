"""The promotion gate: a candidate replaces the champion only if it is better on both counts.

Both metrics dicts must come from the same out-of-sample window, scored with the served rule
(`backtest.score_probabilities`: log loss of the probabilities, net return of the served decision);
comparing numbers from different windows would reward an easier period, not a better model. Neither
model may have been trained on that window (`training_overlap`): a model scored on data it was
fitted on is scored in-sample, and the comparison is refused.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class PromotionMargins:
    """How much better a candidate must be: lower log loss by `log_loss`, higher net return by `net_return`."""

    log_loss: float = 0.002
    net_return: float = 0.0

    def __post_init__(self) -> None:
        for name in ("log_loss", "net_return"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"margin {name} must be a finite number >= 0, got {value!r}")


def promotion_gate(
    candidate: dict[str, float],
    incumbent: dict[str, float] | None,
    baseline: dict[str, float],
    margins: PromotionMargins,
) -> tuple[bool, str]:
    """Whether `candidate` beats `incumbent` (or `baseline` when there is no champion), and why.

    Promote iff log_loss <= incumbent's - margin and net_return >= incumbent's + margin.
    A NaN anywhere never promotes: NaN compares false both ways, so it could not be ranked.
    """
    against, name = (incumbent, "champion") if incumbent is not None else (baseline, "baseline")
    c_loss, i_loss = float(candidate["log_loss"]), float(against["log_loss"])
    c_ret, i_ret = float(candidate["net_return"]), float(against["net_return"])
    need_loss = i_loss - margins.log_loss
    need_ret = i_ret + margins.net_return
    loss_ok = c_loss <= need_loss
    ret_ok = c_ret >= need_ret
    reason = (
        f"log_loss {c_loss:.4f} vs {name} {i_loss:.4f} (needs <= {need_loss:.4f}): {'ok' if loss_ok else 'worse'}; "
        f"net_return {c_ret:.4f} vs {name} {i_ret:.4f} (needs >= {need_ret:.4f}): {'ok' if ret_ok else 'worse'}"
    )
    nan = [
        f"{who} {metric}"
        for who, metric, value in (
            ("candidate", "log_loss", c_loss),
            ("candidate", "net_return", c_ret),
            (name, "log_loss", i_loss),
            (name, "net_return", i_ret),
        )
        if math.isnan(value)
    ]
    if nan:
        return False, f"NaN metric ({', '.join(nan)}): never promoted on NaN; {reason}"
    return loss_ok and ret_ok, reason


def training_overlap(
    who: str,
    train_start: datetime,
    train_end: datetime,
    window_start: datetime,
    window_end: datetime,
    label_reach: timedelta = timedelta(0),
) -> str | None:
    """Why `who`'s training data overlaps the comparison window [window_start, window_end), or None.

    The training data are the rows [train_start, train_end) and the candles their labels look ahead
    to, up to train_end + `label_reach` (the label horizon)."""
    seen_until = train_end + label_reach
    if train_start < window_end and window_start < seen_until:
        return (
            f"{who} was trained on data from {train_start:%Y-%m-%d %H:%M} to {seen_until:%Y-%m-%d %H:%M} "
            f"(labels included), inside the comparison window {window_start:%Y-%m-%d %H:%M} .. "
            f"{window_end:%Y-%m-%d %H:%M}: not out of sample"
        )
    return None
