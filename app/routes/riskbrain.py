"""/api/risk/assessment: the Risk Brain's latest assessment (computed on the first request)."""

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from app.domains.riskbrain.metrics import LEVELS, MarketRisk
from app.domains.riskbrain.schemas import RiskAssessmentOut
from app.domains.riskbrain.service import StampedAssessment
from app.routes.deps import ContainerDep

router = APIRouter(prefix="/api/risk", tags=["risk brain"])


def _market(m: MarketRisk) -> dict[str, Any]:
    as_of = datetime.fromtimestamp(m.as_of / 1000, tz=UTC) if m.as_of is not None else None
    return {**{k: getattr(m, k) for k in MarketRisk.__dataclass_fields__}, "as_of": as_of}


def to_out(stamped: StampedAssessment) -> RiskAssessmentOut:
    a, config = stamped.assessment, stamped.config
    return RiskAssessmentOut.model_validate(
        {
            "status": a.status,
            "detail": a.detail,
            "samples": a.samples,
            "samples_needed": a.samples_needed,
            "computed_at": stamped.computed_at,
            "trigger": stamped.trigger,
            "score": a.score,
            "level": a.level.value if a.level is not None else None,
            "components": a.components,
            "actions": a.actions,
            "returns": a.metrics,
            "exposure": a.exposure,
            "market": _market(stamped.market),
            "method": {
                "returns": "simple returns of the realized equity curve (snapshots except trade openings)",
                "levels": ", ".join(f"{level:g}" for level in LEVELS),
                "historical": "VaR = L_(ceil(n*a)) (numpy inverted_cdf); ES = mean of losses >= VaR",
                "parametric": "normal: mean, std ddof=1, scipy.stats.norm.ppf",
                "monte_carlo": "one-period draws of the fitted normal, numpy default_rng (PCG64)",
                "mc_paths": config.mc_paths,
                "mc_seed": config.mc_seed,
                "window": config.window,
                "min_samples": config.min_samples,
                "market_window_hours": config.market_window_hours,
            },
        },
        from_attributes=True,
    )


@router.get("/assessment", response_model=RiskAssessmentOut)
async def assessment(container: ContainerDep) -> RiskAssessmentOut:
    """Tail risk (VaR and ES by three methods, tail metrics), exposure and concentration, a 0-100 score with
    its level and actions. Recomputed on every closed trade and on a timer; with too few returns
    `status` is `insufficient_data` and every return-based figure is null."""
    return to_out(await container.riskbrain.current())
