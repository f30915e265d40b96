"""Facts of PolicyStore v2."""

from dataclasses import dataclass
from typing import Any

from app.core.bus import Event


@dataclass(frozen=True, kw_only=True)
class RiskModeChanged(Event):
    from_mode: str
    to_mode: str
    reason: str
    actor: str


@dataclass(frozen=True, kw_only=True)
class PolicyChanged(Event):
    """Overrides, blocklist or kill switch changed."""

    kind: str
    from_value: Any
    to_value: Any
    reason: str
    actor: str
