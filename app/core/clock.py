"""The one clock and the time units everything shares.

`utcnow` is the default clock of every service (tests inject their own); `HOUR_MS` is one hour in the
milliseconds candles and bars are stamped with.
"""

from datetime import UTC, datetime

HOUR_MS = 3_600_000


def utcnow() -> datetime:
    return datetime.now(UTC)
