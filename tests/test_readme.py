"""The README says what the code does: lists that must not drift from it."""

import re

from app.domains.risk.guard import DenialCode
from tests.support import ROOT


def test_readme_lists_every_denial_code() -> None:
    readme = (ROOT / "README.md").read_text()
    paragraph = readme[readme.index("RiskGuard denial codes:") :].split("\n\n", 1)[0]
    listed = re.findall(r"`([A-Z_]+)`", paragraph)
    assert set(listed) >= {code.value for code in DenialCode}
    assert (
        not set(listed)
        - {code.value for code in DenialCode}
        - {
            "ACCEPT_FALLBACK_SIGNALS",
            "LIQUIDATION_BUFFER_PCT",
            "MAX_PRICE_DEVIATION_PCT",
            "MAX_PRICE_AGE_SECONDS",
            "SIGNAL_MAX_AGE_SECONDS",
        }
    )
