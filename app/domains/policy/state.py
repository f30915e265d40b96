"""The policy state document kept by a backend, and the snapshot computed from it."""

import json
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from app.domains.policy.profiles import RiskMode, RiskProfile, effective_profile


@dataclass(frozen=True)
class PolicyState:
    """What lives in Redis: the active mode, per-profile overrides, blocklist and kill switch."""

    mode: RiskMode
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    blocked_symbols: dict[str, str] = field(default_factory=dict)
    kill_switch: str | None = None
    version: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "mode": self.mode.value,
                "overrides": self.overrides,
                "blocked_symbols": self.blocked_symbols,
                "kill_switch": self.kill_switch,
            },
            default=_json_default,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, raw: str | bytes, version: int) -> "PolicyState":
        data = json.loads(raw)
        return cls(
            mode=RiskMode(data["mode"]),
            overrides=data.get("overrides") or {},
            blocked_symbols=data.get("blocked_symbols") or {},
            kill_switch=data.get("kill_switch"),
            version=version,
        )

    def with_version(self, version: int) -> "PolicyState":
        return replace(self, version=version)


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


@dataclass(frozen=True)
class PolicySnapshot:
    """Everything RiskGuard needs from policy, computed once per change and read lock-free."""

    state: PolicyState
    profiles: dict[RiskMode, RiskProfile]
    limits: dict[RiskMode, dict[str, Any]]  # each profile as JSON, stored with every decision

    @classmethod
    def of(cls, state: PolicyState) -> "PolicySnapshot":
        profiles = {mode: effective_profile(mode, state.overrides.get(mode.value, {})) for mode in RiskMode}
        return cls(state=state, profiles=profiles, limits={m: p.limits() for m, p in profiles.items()})

    @property
    def profile(self) -> RiskProfile:
        return self.profiles[self.state.mode]

    @property
    def mode(self) -> RiskMode:
        return self.state.mode
