import numpy as np

from app.domains.signals.labels import HOLD, LONG, SHORT, UNKNOWN, direction_labels, forward_return


def test_forward_return_and_band() -> None:
    close = np.array([100.0, 101.0, 100.9, 99.0, 99.05, 99.0])
    np.testing.assert_allclose(forward_return(close, 1)[:-1], np.log(close[1:] / close[:-1]))
    labels = direction_labels(close, horizon=1, band=0.005)
    # +1 %, -0.1 %, -1.9 %, +0.05 %, -0.05 %, unknown
    assert labels.tolist() == [LONG, HOLD, SHORT, HOLD, HOLD, UNKNOWN]
    assert direction_labels(close, horizon=10, band=0.0).tolist() == [UNKNOWN] * 6
