"""The one clock and the time units everything shares.

`utcnow` is the default clock of every service (tests inject their own); `HOUR_MS` and `DAY_MS` are an hour and a
day in the milliseconds candles and bars are stamped with.
"""

from datetime import UTC, datetime

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def utcnow() -> datetime:
    return datetime.now(UTC)
