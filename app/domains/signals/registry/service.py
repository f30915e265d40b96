"""The model registry: register versions, decide promotions, keep only what retention allows.

A promotion decision (status changes and its audit row) is one transaction; `ModelPromoted` is
published after the commit, and retention runs last. Artifacts are deleted only after the
database says their version is retired, and never outside `model_dir`.
"""

import asyncio
import builtins
import importlib.metadata
import logging
import math
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.bus import EventBus
from app.core.clock import utcnow
from app.core.errors import Conflict, NotFound
from app.domains.markets.candles import TIMEFRAME_MS
from app.domains.signals.registry.events import ModelPromoted
from app.domains.signals.registry.gate import PromotionMargins, promotion_gate, training_overlap
from app.domains.signals.registry.models import (
    CANDIDATE,
    CHAMPION,
    KINDS,
    RETIRED,
    ModelPromotionRecord,
    ModelVersion,
)
from app.domains.signals.registry.repository import RegistryRepository

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REPO_ROOT = Path(__file__).resolve().parents[4]


def code_version() -> str:
    """The commit the code was trained from (`git rev-parse --short HEAD`), else the package version.

    Blocking (at most a few seconds): call it once per training run, not on a request path.
    """
    git = shutil.which("git")
    if git is not None:
        try:
            out = subprocess.run(  # noqa: S603 - fixed argv, no shell
                [git, "rev-parse", "--short", "HEAD"],
                cwd=_REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            out = None
        if out is not None and out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()[:64]
    try:
        return importlib.metadata.version("quantum-trader")[:64]
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def json_safe(value: Any) -> Any:
    """NaN and infinities become null: JSON has no such numbers and Postgres rejects them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def label_reach(version: ModelVersion) -> timedelta:
    """How far past its last training row a version's labels looked (the label horizon in candles)."""
    training = version.hyperparameters.get("training") if isinstance(version.hyperparameters, dict) else None
    horizon = training.get("horizon", 0) if isinstance(training, dict) else 0
    step_ms = TIMEFRAME_MS.get(version.timeframe, 0)
    return timedelta(milliseconds=int(horizon) * step_ms) if isinstance(horizon, int) else timedelta(0)


def trained_on_window(who: str, version: ModelVersion, window_start: datetime, window_end: datetime) -> str | None:
    """Why `version`'s training data (labels included) overlaps the window, or None (`gate.training_overlap`)."""
    return training_overlap(who, version.train_start, version.train_end, window_start, window_end, label_reach(version))


@dataclass(frozen=True)
class PromotionDecision:
    candidate_id: uuid.UUID
    promoted: bool
    reason: str
    champion_id: uuid.UUID | None
    """The champion after the decision (the candidate if promoted)."""
    previous_champion_id: uuid.UUID | None
    retired: tuple[uuid.UUID, ...] = field(default=())
    """Versions retention retired right after the decision."""


class ModelRegistry:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: EventBus,
        model_dir: Path,
        keep_candidates: int = 5,
        clock: Clock = utcnow,
    ) -> None:
        if keep_candidates < 0:
            raise ValueError(f"keep_candidates must be >= 0, got {keep_candidates}")
        self._sessions = sessions
        self._bus = bus
        self.model_dir = model_dir.resolve()
        self.keep_candidates = keep_candidates
        self.clock = clock

    # Commands -----------------------------------------------------------------------

    async def register(
        self,
        kind: str,
        artifact_dir: Path,
        *,
        symbols: Sequence[str],
        timeframe: str,
        train_start: datetime,
        train_end: datetime,
        test_start: datetime,
        test_end: datetime,
        features: Sequence[str],
        code_version: str,
        hyperparameters: dict[str, Any],
        metrics: dict[str, float],
        artifact_sha256: str,
    ) -> ModelVersion:
        """Record a trained model as a candidate. Its artifacts must already be saved under model_dir."""
        if kind not in KINDS:
            raise ValueError(f"unknown model kind {kind!r} (one of {', '.join(KINDS)})")
        artifact_path = await asyncio.to_thread(self._checked_artifact_dir, artifact_dir)
        digest = artifact_sha256.lower()
        if not _SHA256.fullmatch(digest):
            raise ValueError(f"artifact_sha256 must be 64 hex digits, got {artifact_sha256!r}")
        if not train_start < train_end <= test_start < test_end:
            raise ValueError(
                "expected train_start < train_end <= test_start < test_end (out-of-sample test after training), "
                f"got {train_start}, {train_end}, {test_start}, {test_end}"
            )
        version = ModelVersion(
            id=uuid.uuid4(),
            kind=kind,
            status=CANDIDATE,
            symbols=list(symbols),
            timeframe=timeframe,
            train_start=train_start,
            train_end=train_end,
            test_start=test_start,
            test_end=test_end,
            features=list(features),
            code_version=code_version,
            hyperparameters=json_safe(hyperparameters),
            metrics=json_safe(metrics),
            artifact_path=str(artifact_path),
            artifact_sha256=digest,
            created_at=self.clock(),
            promoted_at=None,
            retired_at=None,
        )
        async with self._sessions() as session, session.begin():
            RegistryRepository(session).add_version(version)
        return version

    async def decide(
        self,
        candidate_id: uuid.UUID,
        candidate_metrics: dict[str, float],
        champion_metrics: dict[str, float] | None,
        baseline_metrics: dict[str, float],
        window_start: datetime,
        window_end: datetime,
        margins: PromotionMargins = PromotionMargins(),  # noqa: B008 - frozen, so sharing is safe
    ) -> PromotionDecision:
        """Promote the candidate if it beats the champion (or, with none, the baseline) on one window.

        All metrics must be measured on [window_start, window_end): `champion_metrics` is required
        exactly when the kind has a champion. A candidate trained on the window is an error (ValueError);
        a champion trained on it cannot be compared there: the comparison is refused (not promoted, the
        reason says why; its metrics may be None). The audit row and `ModelPromoted` are written either way.
        """
        if not window_start < window_end:
            raise ValueError(f"empty window {window_start} .. {window_end}")
        async with self._sessions() as session, session.begin():
            repo = RegistryRepository(session)
            candidate = await repo.get(candidate_id, for_update=True)
            if candidate is None:
                raise NotFound(f"model version {candidate_id} not found")
            if candidate.status != CANDIDATE:
                raise Conflict(f"model version {candidate_id} is {candidate.status}, not a candidate")
            overlap = trained_on_window("the candidate", candidate, window_start, window_end)
            if overlap is not None:
                raise ValueError(overlap)
            champion = await repo.champion_of(candidate.kind, for_update=True)
            refused = (
                trained_on_window(f"champion {champion.id}", champion, window_start, window_end) if champion else None
            )
            if champion is not None and champion_metrics is None and refused is None:
                raise Conflict(f"{candidate.kind} has champion {champion.id}: its metrics on the window are needed")
            if champion is None and champion_metrics is not None:
                raise Conflict(f"{candidate.kind} has no champion, yet champion metrics were given")
            if refused is not None:
                promoted, reason = False, f"comparison refused: {refused}"
            else:
                promoted, reason = promotion_gate(
                    candidate_metrics, champion_metrics if champion else None, baseline_metrics, margins
                )
            now = self.clock()
            previous = champion.id if champion is not None else None
            if promoted:
                if previous is not None:
                    await repo.set_status([previous], RETIRED, now)
                await repo.set_status([candidate.id], CHAMPION, now)
            await repo.insert_promotion(
                {
                    "kind": candidate.kind,
                    "candidate_id": candidate.id,
                    "champion_id": previous,
                    "promoted": promoted,
                    "reason": reason,
                    "candidate_metrics": json_safe(candidate_metrics),
                    "champion_metrics": json_safe(champion_metrics),
                    "window_start": window_start,
                    "window_end": window_end,
                    "created_at": now,
                }
            )
            kind = candidate.kind
        logger.info(
            "model_promotion_decided",
            extra={"kind": kind, "candidate_id": str(candidate_id), "promoted": promoted, "reason": reason},
        )
        self._bus.publish(
            ModelPromoted(
                kind=kind,
                candidate_id=str(candidate_id),
                previous_champion_id=str(previous) if previous is not None else None,
                promoted=promoted,
                reason=reason,
            )
        )
        retired = await self.apply_retention(kind)
        return PromotionDecision(
            candidate_id=candidate_id,
            promoted=promoted,
            reason=reason,
            champion_id=candidate_id if promoted else previous,
            previous_champion_id=previous,
            retired=tuple(retired),
        )

    async def register_refit(
        self,
        promoted_id: uuid.UUID,
        artifact_dir: Path,
        *,
        train_start: datetime,
        train_end: datetime,
        code_version: str,
        hyperparameters: dict[str, Any],
        artifact_sha256: str,
    ) -> ModelVersion:
        """Record a refit of a promoted version (the same model fitted on data up to `train_end`) as a candidate.

        The refit was not tested: it carries the evidence that promoted `promoted_id` (its test window and
        metrics, also as its own, and the gate's reason and window, in `hyperparameters["evidence"]`) and
        `hyperparameters["refit_of"]`. Its
        training end is recorded as given, so the gate never scores it in-sample on data it has seen.
        `promote_refit` makes it the champion."""
        artifact_path = await asyncio.to_thread(self._checked_artifact_dir, artifact_dir)
        digest = artifact_sha256.lower()
        if not _SHA256.fullmatch(digest):
            raise ValueError(f"artifact_sha256 must be 64 hex digits, got {artifact_sha256!r}")
        async with self._sessions() as session, session.begin():
            repo = RegistryRepository(session)
            promoted = await repo.get(promoted_id)
            if promoted is None:
                raise NotFound(f"model version {promoted_id} not found")
            decision = await repo.promotion_of(promoted_id)
            if decision is None:
                raise Conflict(f"model version {promoted_id} was never promoted: no evidence to refit it on")
            if not train_start < train_end or train_end < promoted.train_end:
                raise ValueError(
                    f"a refit of {promoted_id} must train on data ending at or after its {promoted.train_end}, "
                    f"got {train_start} .. {train_end}"
                )
            evidence = {
                "metrics": promoted.metrics,
                "test_start": promoted.test_start.isoformat(),
                "test_end": promoted.test_end.isoformat(),
                "reason": decision.reason,
                "window_start": decision.window_start.isoformat(),
                "window_end": decision.window_end.isoformat(),
                "decided_at": decision.created_at.isoformat(),
                "train_start": promoted.train_start.isoformat(),
                "train_end": promoted.train_end.isoformat(),
            }
            version = ModelVersion(
                id=uuid.uuid4(),
                kind=promoted.kind,
                status=CANDIDATE,
                symbols=list(promoted.symbols),
                timeframe=promoted.timeframe,
                train_start=train_start,
                train_end=train_end,
                test_start=promoted.test_start,
                test_end=promoted.test_end,
                features=list(promoted.features),
                code_version=code_version,
                hyperparameters=json_safe({**hyperparameters, "refit_of": str(promoted_id), "evidence": evidence}),
                metrics=dict(promoted.metrics),
                artifact_path=str(artifact_path),
                artifact_sha256=digest,
                created_at=self.clock(),
                promoted_at=None,
                retired_at=None,
            )
            repo.add_version(version)
        return version

    async def promote_refit(self, refit_id: uuid.UUID, promoted_id: uuid.UUID) -> PromotionDecision:
        """Make a refit (`register_refit`) of the current champion the champion, without a comparison: it is the
        promoted model fitted on more data, promoted on the champion's evidence.

        Refused (Conflict) unless `promoted_id` is still the champion, the refit is a candidate recorded as a refit
        of it, of the same kind, trained on data ending at or after the champion's. The audit row (reason "refit
        of <id> on data to <end>", the evidence's metrics and window) and `ModelPromoted` are written as a gate
        decision's are."""
        async with self._sessions() as session, session.begin():
            repo = RegistryRepository(session)
            refit = await repo.get(refit_id, for_update=True)
            if refit is None:
                raise NotFound(f"model version {refit_id} not found")
            promoted = await repo.get(promoted_id, for_update=True)
            if promoted is None:
                raise NotFound(f"model version {promoted_id} not found")
            if refit.kind != promoted.kind:
                raise Conflict(f"refit {refit_id} is a {refit.kind}, {promoted_id} a {promoted.kind}")
            if refit.status != CANDIDATE:
                raise Conflict(f"model version {refit_id} is {refit.status}, not a candidate")
            if refit.hyperparameters.get("refit_of") != str(promoted_id):
                raise Conflict(f"model version {refit_id} is not a refit of {promoted_id}")
            champion = await repo.champion_of(refit.kind, for_update=True)
            if champion is None or champion.id != promoted_id:
                now_champion = champion.id if champion is not None else "none"
                raise Conflict(f"{promoted_id} is no longer the {refit.kind} champion ({now_champion} is)")
            if refit.train_end < promoted.train_end:
                raise Conflict(
                    f"refit {refit_id} was trained on data to {refit.train_end}, "
                    f"before the champion's {promoted.train_end}"
                )
            reason = f"refit of {promoted_id} on data to {refit.train_end:%Y-%m-%d %H:%M}"
            now = self.clock()
            await repo.set_status([promoted_id], RETIRED, now)
            await repo.set_status([refit_id], CHAMPION, now)
            await repo.insert_promotion(
                {
                    "kind": refit.kind,
                    "candidate_id": refit_id,
                    "champion_id": promoted_id,
                    "promoted": True,
                    "reason": reason,
                    "candidate_metrics": json_safe(refit.metrics),
                    "champion_metrics": json_safe(promoted.metrics),
                    "window_start": promoted.test_start,
                    "window_end": promoted.test_end,
                    "created_at": now,
                }
            )
            kind = refit.kind
        logger.info(
            "model_refit_promoted",
            extra={"kind": kind, "candidate_id": str(refit_id), "refit_of": str(promoted_id), "reason": reason},
        )
        self._bus.publish(
            ModelPromoted(
                kind=kind,
                candidate_id=str(refit_id),
                previous_champion_id=str(promoted_id),
                promoted=True,
                reason=reason,
            )
        )
        retired = await self.apply_retention(kind)
        return PromotionDecision(
            candidate_id=refit_id,
            promoted=True,
            reason=reason,
            champion_id=refit_id,
            previous_champion_id=promoted_id,
            retired=tuple(retired),
        )

    async def apply_retention(self, kind: str) -> builtins.list[uuid.UUID]:
        """Keep the champion and the newest `keep_candidates` candidates; retire the rest and delete
        their artifacts. Returns the ids this call retired.

        Files go only after the commit, so a failed commit never leaves a live version without its
        artifact; a deletion that fails is logged and retried by the next call.
        """
        async with self._sessions() as session, session.begin():
            repo = RegistryRepository(session)
            champion = await repo.champion_of(kind, for_update=True)
            candidates = await repo.candidates_of(kind)
            kept = candidates[: self.keep_candidates] + ([champion] if champion is not None else [])
            kept_ids = {v.id for v in kept}
            others = [v for v in await repo.versions_of(kind) if v.id not in kept_ids]
            retire = [v.id for v in others if v.status != RETIRED]
            await repo.set_status(retire, RETIRED, self.clock())
            live = await repo.live_artifact_paths()
        await asyncio.to_thread(self._delete_artifacts, [v.artifact_path for v in others], live)
        if retire:
            logger.info("models_retired", extra={"kind": kind, "ids": [str(i) for i in retire]})
        return retire

    # Files (blocking; run in a thread) ------------------------------------------------

    def _inside_model_dir(self, path: Path) -> bool:
        resolved = path.resolve()
        return resolved != self.model_dir and resolved.is_relative_to(self.model_dir)

    def _checked_artifact_dir(self, artifact_dir: Path) -> Path:
        if not self._inside_model_dir(artifact_dir):
            raise ValueError(f"artifact directory {artifact_dir} is not inside the model directory {self.model_dir}")
        if not artifact_dir.is_dir():
            raise ValueError(f"artifact directory {artifact_dir} does not exist")
        return artifact_dir.resolve()

    def _delete_artifacts(self, paths: Sequence[str], kept: Sequence[str]) -> None:
        """Delete artifact directories inside model_dir that no live version (of any kind) uses."""
        kept_paths = [Path(p).resolve() for p in kept]
        for raw in paths:
            path = Path(raw)
            if not path.exists():
                continue
            if not self._inside_model_dir(path):
                logger.warning("model_artifact_outside_model_dir", extra={"path": raw})
                continue
            resolved = path.resolve()
            if any(resolved.is_relative_to(k) or k.is_relative_to(resolved) for k in kept_paths):
                logger.warning("model_artifact_shared_with_kept_version", extra={"path": raw})
                continue
            try:
                shutil.rmtree(resolved)
            except OSError:
                logger.exception("model_artifact_delete_failed", extra={"path": raw})

    # Queries ------------------------------------------------------------------------

    async def get(self, version_id: uuid.UUID) -> ModelVersion:
        async with self._sessions() as session:
            version = await RegistryRepository(session).get(version_id)
        if version is None:
            raise NotFound(f"model version {version_id} not found")
        return version

    async def champion(self, kind: str) -> ModelVersion | None:
        async with self._sessions() as session:
            return await RegistryRepository(session).champion_of(kind)

    async def list(
        self, kind: str | None = None, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[builtins.list[ModelVersion], int]:
        async with self._sessions() as session:
            return await RegistryRepository(session).list_versions(kind, status, limit, offset)

    async def promotions(
        self, kind: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[builtins.list[ModelPromotionRecord], int]:
        async with self._sessions() as session:
            return await RegistryRepository(session).list_promotions(kind, limit, offset)
