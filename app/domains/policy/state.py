"""The policy state document kept by a backend, and the snapshot computed from it."""

import json
from collections.abc import Iterable
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
        """Parse and validate a stored document; ValueError if it is not a state the API could have written
        (e.g. an override outside today's bounds)."""
        data = json.loads(raw)
        state = cls(
            mode=RiskMode(data["mode"]),
            overrides=data.get("overrides") or {},
            blocked_symbols=data.get("blocked_symbols") or {},
            kill_switch=data.get("kill_switch"),
            version=version,
        )
        for mode in RiskMode:
            effective_profile(mode, state.overrides.get(mode.value, {}))
        return state

    def with_version(self, version: int) -> "PolicyState":
        return replace(self, version=version)


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def replay(changes: Iterable[tuple[str, Any, str]], initial_mode: RiskMode) -> PolicyState | None:
    """The state an audit trail of (kind, to_value, reason), oldest first, leads to.

    Rebuilds the state of a deployment whose changes predate the durable copy. None when the
    trail holds no policy change.
    """
    state = PolicyState(mode=initial_mode)
    seen = False
    for kind, to_value, reason in changes:
        if kind == "RISK_MODE":
            state = replace(state, mode=RiskMode(to_value))
        elif kind in ("PROFILE_OVERRIDE", "PROFILE_RESET"):
            profile, overrides = to_value["profile"], dict(to_value["overrides"])
            rest = {k: v for k, v in state.overrides.items() if k != profile}
            state = replace(state, overrides={**rest, profile: overrides} if overrides else rest)
        elif kind in ("SYMBOL_BLOCKED", "SYMBOL_UNBLOCKED"):
            blocked = {k: v for k, v in state.blocked_symbols.items() if k != to_value["symbol"]}
            if to_value["blocked"]:
                blocked[to_value["symbol"]] = reason
            state = replace(state, blocked_symbols=blocked)
        elif kind == "KILL_SWITCH":
            state = replace(state, kill_switch=reason if to_value["active"] else None)
        else:
            continue
        seen = True
    return state if seen else None


@dataclass(frozen=True)
class PolicySnapshot:
    """Everything RiskGuard needs from policy, computed once per change and read lock-free.

    `restore_error` says the durable state could not be read: until it is, every profile is
    served with new positions disabled, so a restart never loosens a limit.
    """

    state: PolicyState
    profiles: dict[RiskMode, RiskProfile]
    limits: dict[RiskMode, dict[str, Any]]  # each profile as JSON, stored with every decision
    restore_error: str | None = None

    @classmethod
    def of(cls, state: PolicyState, restore_error: str | None = None) -> "PolicySnapshot":
        profiles = {mode: effective_profile(mode, state.overrides.get(mode.value, {})) for mode in RiskMode}
        if restore_error is not None:
            profiles = {m: p.model_copy(update={"allow_new_positions": False}) for m, p in profiles.items()}
        return cls(
            state=state,
            profiles=profiles,
            limits={m: p.limits() for m, p in profiles.items()},
            restore_error=restore_error,
        )

    @property
    def profile(self) -> RiskProfile:
        return self.profiles[self.state.mode]

    @property
    def mode(self) -> RiskMode:
        return self.state.mode
