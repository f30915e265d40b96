"""/api/clm: continuous learning — retrain on demand, and what the scheduler and the last job did.

Training runs in a separate process: `POST /retrain` answers 202 as soon as the job started,
and `GET /status` shows its progress and outcome.
"""

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from app.core.validation import Reason
from app.routes.deps import Actor, AuthorizedContainer, ContainerDep

router = APIRouter(prefix="/api/clm", tags=["clm"])


class RetrainBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "a month of new candles after the halving"}]}
    )

    reason: Reason = Field(description="Why; kept with the job")


class JobOut(BaseModel):
    id: str
    trigger: str = Field(description="manual (POST /retrain) or schedule")
    reason: str
    actor: str
    started_at: datetime
    data_until: datetime | None = Field(description="End (exclusive) of the data the job trains and tests on")


class JobErrorOut(BaseModel):
    type: str
    message: str


class DecisionOut(BaseModel):
    promoted: bool
    reason: str
    champion_id: str | None
    previous_champion_id: str | None


class JobSummaryOut(BaseModel):
    versions: dict[str, str] = Field(description="Registered version id per model kind")
    decisions: dict[str, DecisionOut]
    report: dict[str, dict[str, float | None]] = Field(description="Out-of-sample metrics per model and baseline")
    fit_seconds: dict[str, float]
    train_rows: int
    test_rows: int
    data_until_ms: int
    duration_s: float = Field(description="Seconds the training process worked")
    pid: int = Field(description="The training process")


class LastJobOut(JobOut):
    finished_at: datetime
    duration_s: float
    ok: bool
    error: JobErrorOut | None
    summary: JobSummaryOut | None


class CheckOut(BaseModel):
    at: datetime
    new_samples: int | None = Field(description="Fewest new candles of any symbol since the last run (null: none)")
    min_new_samples: int
    started_job_id: str | None
    skipped: str | None = Field(description="Why the scheduler did not start a job")


class ClmConfigOut(BaseModel):
    symbols: list[str]
    timeframe: str
    interval_seconds: float
    min_new_samples: int
    train_days: int
    test_days: int
    enabled: bool
    torch_epochs: int | None


class ClmStatusOut(BaseModel):
    running: bool
    current: JobOut | None
    last: LastJobOut | None
    last_check: CheckOut | None
    next_run_at: datetime | None = Field(description="Next scheduler check; null when the schedule is off")
    config: ClmConfigOut


@router.post(
    "/retrain",
    status_code=202,
    response_model=JobOut,
    responses={409: {"description": "A training job is already running"}},
)
async def retrain(body: RetrainBody, container: AuthorizedContainer, actor: Actor) -> dict[str, Any]:
    """Start a training job now (new-sample minimum ignored); 202 with the job, 409 if one runs."""
    return await container.clm.retrain(body.reason, actor)


@router.get("/status", response_model=ClmStatusOut)
async def status(container: ContainerDep) -> dict[str, Any]:
    return container.clm.status()
