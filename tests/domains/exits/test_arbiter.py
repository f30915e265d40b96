"""The exit arbiter: precedence, one full close per round, partials cut, stops only ratchet."""

from decimal import Decimal

import pytest

from app.domains.exits.arbiter import (
    ExitKind,
    ExitProposal,
    ExitSource,
    PositionView,
    arbitrate,
)

D = Decimal
LONG = PositionView("LONG", D("1.0"), D(60000), D(58800), D("0.001"))
SHORT = PositionView("SHORT", D("1.0"), D(60000), D(61200), D("0.001"))


def close(source: ExitSource, why: str = "close") -> ExitProposal:
    return ExitProposal(source, ExitKind.CLOSE, why)


def reduce(source: ExitSource, amount: str, why: str = "reduce") -> ExitProposal:
    return ExitProposal(source, ExitKind.REDUCE, why, amount=D(amount))


def move(source: ExitSource, stop: str, why: str = "move") -> ExitProposal:
    return ExitProposal(source, ExitKind.MOVE_STOP, why, stop=D(stop))


def test_the_highest_precedence_close_wins_and_supersedes_the_rest() -> None:
    result = arbitrate(
        LONG,
        [
            reduce(ExitSource.TAKE_PROFIT, "0.3", "TP1"),
            close(ExitSource.HEAT_GATE, "heat"),
            close(ExitSource.STOP, "SL"),
        ],
    )
    assert [(a.source, a.kind, a.amount) for a in result.actions] == [(ExitSource.STOP, ExitKind.CLOSE, D("1.0"))]
    assert {r.proposal.reason: r.why for r in result.refused} == {
        "heat": "superseded: STOP closes the position",
        "TP1": "superseded: STOP closes the position",
    }
    assert result.closes_all


@pytest.mark.parametrize(
    ("high", "low"),
    [
        (ExitSource.LIQUIDATION_GUARD, ExitSource.EMERGENCY),
        (ExitSource.EMERGENCY, ExitSource.STOP),
        (ExitSource.STOP, ExitSource.HEAT_GATE),
        (ExitSource.HEAT_GATE, ExitSource.HARVEST),
        (ExitSource.HARVEST, ExitSource.TAKE_PROFIT),
    ],
)
def test_precedence_is_the_documented_order(high: ExitSource, low: ExitSource) -> None:
    result = arbitrate(LONG, [close(low, "low"), close(high, "high")])
    assert [a.reason for a in result.actions] == ["high"]


def test_partials_are_cut_to_what_is_left_and_a_remainder_below_the_minimum_closes_all() -> None:
    result = arbitrate(
        LONG,
        [
            reduce(ExitSource.HARVEST, "0.5"),
            reduce(ExitSource.TAKE_PROFIT, "0.3"),
            reduce(ExitSource.TAKE_PROFIT, "0.4"),
        ],
    )
    assert [(a.kind, a.amount) for a in result.actions] == [
        (ExitKind.REDUCE, D("0.5")),
        (ExitKind.REDUCE, D("0.3")),
        (ExitKind.CLOSE, D("0.2")),  # the last 0.2: nothing would remain, so it is the close
    ]
    cut = arbitrate(LONG, [reduce(ExitSource.HARVEST, "0.7"), reduce(ExitSource.TAKE_PROFIT, "0.4")])
    assert [(a.kind, a.amount) for a in cut.actions] == [(ExitKind.REDUCE, D("0.7")), (ExitKind.CLOSE, D("0.3"))]
    tiny = arbitrate(LONG, [reduce(ExitSource.TAKE_PROFIT, "0.9995")])
    assert [(a.kind, a.amount) for a in tiny.actions] == [(ExitKind.CLOSE, D("1.0"))]
    assert "less than the minimum 0.001 would remain" in tiny.actions[0].reason
    # The operator's partial outranks the stop: it goes first, then the stop closes what is left.
    both = arbitrate(LONG, [close(ExitSource.STOP), reduce(ExitSource.OPERATOR, "0.1")])
    assert [(a.source, a.kind, a.amount) for a in both.actions] == [
        (ExitSource.OPERATOR, ExitKind.REDUCE, D("0.1")),
        (ExitSource.STOP, ExitKind.CLOSE, D("0.9")),
    ]


def test_a_stop_only_ratchets_and_stays_protective() -> None:
    assert [a.stop for a in arbitrate(LONG, [move(ExitSource.STOP, "59000")]).actions] == [D(59000)]
    for bad, why in (
        ("58000", "would not move in the position's favour"),
        ("60000", "not on the protective side of the mark"),
        ("0", "finite price > 0"),
    ):
        result = arbitrate(LONG, [move(ExitSource.STOP, bad)])
        assert not result.actions and why in result.refused[0].why
    assert [a.stop for a in arbitrate(SHORT, [move(ExitSource.STOP, "61000")]).actions] == [D(61000)]
    assert not arbitrate(SHORT, [move(ExitSource.STOP, "61500")]).actions


def test_only_the_highest_precedence_stop_move_is_taken() -> None:
    result = arbitrate(LONG, [move(ExitSource.HARVEST, "59500", "harvest"), move(ExitSource.STOP, "59000", "trail")])
    assert [(a.source, a.stop) for a in result.actions] == [(ExitSource.STOP, D(59000))]
    assert result.refused[0].why == "a stop move of higher precedence was taken this round"


def test_invalid_partials_are_refused_with_why() -> None:
    result = arbitrate(LONG, [ExitProposal(ExitSource.HARVEST, ExitKind.REDUCE, "no amount")])
    assert not result.actions and result.refused[0].why == "a partial close needs an amount > 0"
