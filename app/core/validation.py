"""Input rules shared by every edge: request bodies, query, path and header parameters.

One place for what a string or number from outside may be, so the database never sees a value
it cannot store (PostgreSQL refuses NUL in text and Infinity in JSON) and no arithmetic on an
input can leave Decimal's range. A value outside these rules is a 422 naming the field.
"""

import re
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, Strict, StringConstraints

# C0 controls, DEL, C1 controls, and lone surrogates (not encodable as UTF-8).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def no_control_characters(value: str) -> str:
    """Refuse control characters: invisible in logs and the audit trail, NUL is refused by PostgreSQL."""
    found = _UNSAFE.search(value)
    if found is not None:
        code = f"U+{ord(found.group()):04X}"
        raise ValueError(f"control character or lone surrogate {code} at position {found.start()} is not allowed")
    return value


_Safe = AfterValidator(no_control_characters)

Reason = Annotated[str, StringConstraints(min_length=3, max_length=500), _Safe]
"""Why an operator acts; kept in the audit trail."""
SymbolText = Annotated[str, StringConstraints(min_length=1, max_length=32), _Safe]
"""A symbol as given (Binance id or ccxt unified), before the catalog resolves it."""
Label = Annotated[str, StringConstraints(min_length=1, max_length=64), _Safe]
"""A short name: a signal source, a filter on a kind or status."""
ActorName = Annotated[str, StringConstraints(min_length=1, max_length=128), _Safe]
"""Who acts, for the audit trail (X-Actor)."""
ClientOrderId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-:.]+$")]
"""An idempotency key: printable ASCII only."""

# Numbers. Decimals accept JSON numbers or decimal strings; NaN, infinities and booleans are
# refused, and every one has an upper bound and a precision, so products and quotients of
# inputs stay far inside Decimal's 28 digits.
MAX_USD = Decimal("1e12")  # notionals and caps: more than the whole futures market
MAX_PRICE = Decimal("1e9")
MIN_PRICE = Decimal("1e-12")  # smallest price step any market quotes is far larger
MAX_TRADE_LEVERAGE = Decimal(1000)  # above the hard 125 RiskGuard denies with a reason, not a 422
MAX_COUNT = 1_000_000
MAX_LIMIT = 500
MAX_OFFSET = 1_000_000

Usd = Annotated[Decimal, Field(gt=0, le=MAX_USD, decimal_places=8, allow_inf_nan=False)]
"""An amount of USDT (notional, cap), to the 8 decimals USDT is counted in."""
Price = Annotated[Decimal, Field(ge=MIN_PRICE, le=MAX_PRICE, decimal_places=12, allow_inf_nan=False)]
"""A price (entry, stop, exit) in USDT."""
TradeLeverage = Annotated[Decimal, Field(gt=0, le=MAX_TRADE_LEVERAGE, decimal_places=8, allow_inf_nan=False)]
"""Leverage requested for a trade."""
Count = Annotated[int, Strict(), Field(ge=0, le=MAX_COUNT)]
"""A count: an integer, never a boolean or a float."""
Flag = Annotated[bool, Strict()]
"""A boolean: true or false, never 1, 0 or "yes"."""


def _iso_text(value: object) -> object:
    """A timestamp is ISO 8601 text: a bare number would be read as seconds since 1970, which no
    caller means and the document does not promise."""
    if isinstance(value, int | float | Decimal) or (isinstance(value, str) and _NUMBER.fullmatch(value.strip())):
        raise ValueError("give an ISO 8601 date-time with a timezone, e.g. 2026-11-30T12:00:00Z, not a number")
    return value


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")

Timestamp = Annotated[AwareDatetime, BeforeValidator(_iso_text)]
"""An aware ISO 8601 date-time from outside (naive times and numbers are refused)."""
