"""Facts of the model registry, published after commit."""

from dataclasses import dataclass

from app.core.bus import Event


@dataclass(frozen=True, kw_only=True)
class ModelPromoted(Event):
    """A promotion decision was made; published whether or not the candidate was promoted."""

    kind: str
    candidate_id: str
    previous_champion_id: str | None
    promoted: bool
    reason: str
