"""Training targets: the forward return over a horizon, and its direction with a no-trade band."""

import numpy as np
import numpy.typing as npt

from app.domains.markets.candles import FloatArray

SHORT, HOLD, LONG = 0, 1, 2
CLASSES = ("SHORT", "HOLD", "LONG")
UNKNOWN = -1


def forward_return(close: FloatArray, horizon: int) -> FloatArray:
    """log(close[t + horizon] / close[t]); NaN where the future is not known yet."""
    out = np.full(close.shape, np.nan)
    if horizon < len(close):
        out[:-horizon] = np.log(close[horizon:] / close[:-horizon])
    return out


def direction_labels(close: FloatArray, horizon: int, band: float) -> npt.NDArray[np.int64]:
    """LONG above +band, SHORT below -band, HOLD inside: tiny moves are not a direction."""
    future = forward_return(close, horizon)
    labels = np.full(close.shape, UNKNOWN, dtype=np.int64)
    known = np.isfinite(future)
    labels[known] = HOLD
    labels[known & (future > band)] = LONG
    labels[known & (future < -band)] = SHORT
    return labels
