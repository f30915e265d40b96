"""Exact decimals in API output: one canonical text form (no exponent, no trailing zeros),
so a value reads the same fresh from a computation or back from the database."""

from decimal import Decimal
from typing import Annotated

from pydantic import PlainSerializer


def canonical(value: Decimal) -> str:
    if value.is_zero():
        return "0"
    normalized = value.normalize()
    if normalized == normalized.to_integral():
        normalized = normalized.quantize(Decimal(1))
    return format(normalized, "f")


DecimalStr = Annotated[Decimal, PlainSerializer(canonical, return_type=str, when_used="json")]
