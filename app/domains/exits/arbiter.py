"""The one exit arbiter: every close, partial close or stop move, from any source, is decided here.

Sources in precedence order (highest first): the liquidation guard and emergencies (SafetyGovernor
emergency, EMERGENCY mode, an operator's command), the stop (the exit plan's stop or its trailing
stop), the heat gate, harvest, the take-profit ladder. `arbitrate` is pure: the position and the
proposals of one moment in, the actions to execute and the proposals refused (each with why) out.

Rules, in order:
1. Proposals are taken by precedence; within one source, in the order given.
2. A full close ends the round: every later proposal is refused as superseded by it.
3. A partial close that would leave less than the market's minimum amount (or asks for more than
   is left) closes the rest instead, said in its reason; one with nothing left is refused.
4. A stop move only ever moves in the position's favour (up for a long, down for a short) and must
   stay on the protective side of the mark; only the highest-precedence valid move is taken.
"""

from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Literal

ZERO = Decimal(0)


class ExitSource(IntEnum):
    """Lower value = higher precedence."""

    LIQUIDATION_GUARD = 0
    EMERGENCY = 1
    OPERATOR = 2
    STOP = 3
    HEAT_GATE = 4
    HARVEST = 5
    TAKE_PROFIT = 6


class ExitKind(StrEnum):
    CLOSE = "CLOSE"
    REDUCE = "REDUCE"
    MOVE_STOP = "MOVE_STOP"


@dataclass(frozen=True, slots=True)
class PositionView:
    side: Literal["LONG", "SHORT"]
    amount: Decimal  # contracts left
    mark: Decimal
    stop: Decimal | None  # the stop in force
    min_amount: Decimal  # the market's minimum order amount


@dataclass(frozen=True, slots=True)
class ExitProposal:
    source: ExitSource
    kind: ExitKind
    reason: str
    amount: Decimal | None = None  # REDUCE: contracts to close
    stop: Decimal | None = None  # MOVE_STOP: the new stop


@dataclass(frozen=True, slots=True)
class ExitAction:
    source: ExitSource
    kind: ExitKind
    reason: str
    amount: Decimal = ZERO  # contracts to close (CLOSE: all that is left)
    stop: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    proposal: ExitProposal
    why: str


@dataclass(frozen=True, slots=True)
class Arbitration:
    actions: tuple[ExitAction, ...]
    refused: tuple[Refusal, ...]

    @property
    def closes_all(self) -> bool:
        return any(a.kind is ExitKind.CLOSE for a in self.actions)


def arbitrate(position: PositionView, proposals: list[ExitProposal]) -> Arbitration:
    ordered = sorted(enumerate(proposals), key=lambda p: (p[1].source, p[0]))
    actions: list[ExitAction] = []
    refused: list[Refusal] = []
    left = position.amount
    stop = position.stop
    closed_by: ExitSource | None = None
    moved = False
    for _, p in ordered:
        if closed_by is not None:
            refused.append(Refusal(p, f"superseded: {closed_by.name} closes the position"))
            continue
        if p.kind is ExitKind.CLOSE:
            if left <= 0:
                refused.append(Refusal(p, "nothing left to close"))
                continue
            actions.append(ExitAction(p.source, ExitKind.CLOSE, p.reason, left))
            left, closed_by = ZERO, p.source
        elif p.kind is ExitKind.REDUCE:
            if p.amount is None or p.amount <= 0:
                refused.append(Refusal(p, "a partial close needs an amount > 0"))
                continue
            if left <= 0:
                refused.append(Refusal(p, "nothing left to close"))
                continue
            amount = min(p.amount, left)
            if left - amount < position.min_amount:  # includes a partial larger than what is left
                actions.append(
                    ExitAction(
                        p.source,
                        ExitKind.CLOSE,
                        f"{p.reason}; closes all {left}: less than the minimum {position.min_amount} would remain",
                        left,
                    )
                )
                left, closed_by = ZERO, p.source
                continue
            actions.append(ExitAction(p.source, ExitKind.REDUCE, p.reason, amount))
            left -= amount
        else:
            why = _stop_refusal(position, stop, p.stop, moved)
            if why is not None:
                refused.append(Refusal(p, why))
                continue
            assert p.stop is not None
            actions.append(ExitAction(p.source, ExitKind.MOVE_STOP, p.reason, ZERO, p.stop))
            stop, moved = p.stop, True
    return Arbitration(tuple(actions), tuple(refused))


def _stop_refusal(position: PositionView, current: Decimal | None, new: Decimal | None, moved: bool) -> str | None:
    if moved:
        return "a stop move of higher precedence was taken this round"
    if new is None or not new.is_finite() or new <= 0:
        return "the new stop must be a finite price > 0"
    long = position.side == "LONG"
    if (new >= position.mark) if long else (new <= position.mark):
        return f"stop {new} is not on the protective side of the mark {position.mark}"
    if current is not None and ((new <= current) if long else (new >= current)):
        return f"stop {new} would not move in the position's favour from {current}"
    return None
