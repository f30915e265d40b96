"""/api/ceo: the operating mode (the "CEO brain"), its inputs and decisions, and operator pins."""

from dataclasses import asdict, fields
from decimal import Decimal

from fastapi import APIRouter

from app.bootstrap import Container
from app.core.context import current_trace_id
from app.domains.modes.schemas import ModeDecisionsPage, ModeStatusOut, PinBody, TrailEntryOut, UnpinBody
from app.routes.deps import Actor, AuthorizedContainer, ContainerDep, Limit, Offset

router = APIRouter(prefix="/api/ceo", tags=["operating modes"])


def status_of(container: Container) -> ModeStatusOut:
    modes = container.modes
    layer = modes.limit_layer()
    last = modes.last
    return ModeStatusOut.model_validate(
        {
            "role": "leader" if modes.leadership.is_leader else "follower",
            "enabled": container.settings.modes_enabled,
            "restored": modes.restored,
            "restore_error": modes.restore_error,
            "mode": modes.mode,
            "decided": modes.decided,
            "since": modes.since,
            "pinned": asdict(modes.pin) if modes.pin else None,
            "layer": {
                f.name: str(v) if isinstance(v, Decimal) else v
                for f in fields(layer)
                if (v := getattr(layer, f.name)) is not None
            },
            "last_evaluation": {
                "mode": last.mode,
                "rule_mode": last.rule_mode,
                "reason": last.reason,
                "inputs": last.inputs.as_dict(),
                "evaluated_at": modes.evaluated_at,
            }
            if last is not None
            else None,
            "rules": {k: float(v) for k, v in asdict(modes.config.rules).items() if k != "derived"},
            "persist_error": modes.persist_error,
            "decisions": [asdict(e) for e in modes.trail()],
        }
    )


@router.get("/status", response_model=ModeStatusOut)
async def status(container: ContainerDep) -> ModeStatusOut:
    """The operating mode in force, why (the last evaluation with its inputs), the pin if any, the mode's
    layer of the limit stack and the last decisions. Served from memory: it answers with the database down."""
    return status_of(container)


@router.post("/evaluate", response_model=ModeStatusOut)
async def evaluate(container: AuthorizedContainer) -> ModeStatusOut:
    """Decide the mode from fresh inputs now (a change is stored with its inputs and reason)."""
    await container.modes.evaluate("request")
    return status_of(container)


@router.post("/pin", response_model=ModeStatusOut)
async def pin(body: PinBody, container: AuthorizedContainer, actor: Actor) -> ModeStatusOut:
    """Hold a mode until unpinned, whatever the rules decide (stored and audited before it applies)."""
    await container.modes.pin_mode(body.mode, body.reason, actor, current_trace_id())
    return status_of(container)


@router.post("/unpin", response_model=ModeStatusOut)
async def unpin(body: UnpinBody, container: AuthorizedContainer, actor: Actor) -> ModeStatusOut:
    """Release the pin: the decided mode applies again. 409 when nothing is pinned."""
    await container.modes.unpin(body.reason, actor, current_trace_id())
    return status_of(container)


@router.get("/decisions", response_model=ModeDecisionsPage)
async def decisions(container: ContainerDep, limit: Limit = 50, offset: Offset = 0) -> ModeDecisionsPage:
    """The stored trail, newest first: decided mode changes (with inputs and reason), pins and unpins."""
    items = await container.modes.history(limit, offset)
    return ModeDecisionsPage(items=[TrailEntryOut.model_validate(asdict(e)) for e in items], limit=limit, offset=offset)
