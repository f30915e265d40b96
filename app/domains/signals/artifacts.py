"""Saving and loading a trained model set, all in native, pickle-free formats.

An ensemble artifact is self-contained: `members/<kind>/` holds each member model and
`ensemble.json` the weights, calibration and everything needed to score new candles, so a
champion ensemble stays loadable whatever retention does to its members' own versions.

The meta layer (`meta.MetaModel`: P(TP1 before the stop) for the side the ensemble proposes), when trained,
lives in `members/meta/` (LightGBM text + meta.json), its sha256 recorded under `meta` in ensemble.json.
An artifact without one (older, or trained with too few out-of-sample rows) still loads: `load_meta` says
the layer is absent and why.

`FORMAT` numbers what `ensemble.json` and its members mean. Format 2: the forecasters have distributional
heads (σ predicted per row over a multi-step horizon) and no constant residual σ, and the temperature was
fitted on its own calibration slice (`training`). An artifact of another format is refused with
`ArtifactMismatch` (retrain it): format-1 forecasters would load, but their outputs would be read with the
wrong error model.
"""

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.domains.signals.ensemble import Ensemble
from app.domains.signals.features import FEATURES
from app.domains.signals.meta import MODEL_FILE as META_MODEL_FILE
from app.domains.signals.meta import MetaModel
from app.domains.signals.models import FORECASTER_KINDS, GBM_KINDS
from app.domains.signals.models.forecaster import TorchForecaster
from app.domains.signals.models.gbm import GbmClassifier
from app.domains.signals.modelset import WINDOW_CHANNELS, TrainedModels, TrainingConfig

ENSEMBLE_FILE = "ensemble.json"
FORMAT = 2
TORCH_KINDS = FORECASTER_KINDS
META_DIR = "meta"  # under members/: the meta layer, when the artifact has one


def save_member(trained: TrainedModels, kind: str, directory: Path) -> dict[str, str]:
    if kind in GBM_KINDS:
        return trained.gbm[kind].save(directory)
    return trained.forecasters[kind].save(directory)


def save_ensemble(
    trained: TrainedModels,
    directory: Path,
    metadata: dict[str, Any],
    meta: MetaModel | None = None,
    meta_absent: str | None = None,
) -> dict[str, str]:
    """Write the whole set; returns the sha256 of ensemble.json, which names every member's hash (and the meta
    layer's, if given; else `meta_absent` records why there is none)."""
    members = {kind: save_member(trained, kind, directory / "members" / kind) for kind in (*GBM_KINDS, *TORCH_KINDS)}
    document = {
        "format": FORMAT,
        "config": asdict(trained.config),
        "weights": trained.ensemble.weights,
        "temperature": trained.ensemble.temperature,
        "temperature_evidence": trained.ensemble.evidence,
        "fit_info": trained.fit_info,
        "prior": [float(p) for p in trained.prior],
        "features": list(FEATURES),
        "window_channels": list(WINDOW_CHANNELS),
        "members": {kind: {"sha256": saved["sha256"]} for kind, saved in members.items()},
        "metadata": metadata,
    }
    if meta is not None:
        document["meta"] = {"sha256": meta.save(directory / "members" / META_DIR)["sha256"]}
    else:
        document["meta_absent"] = meta_absent or "no meta layer was trained"
    path = directory / ENSEMBLE_FILE
    path.write_text(json.dumps(document, indent=1, sort_keys=True))
    return {"weights": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


class ArtifactMismatch(ValueError):
    pass


def load_ensemble(directory: Path) -> tuple[TrainedModels, dict[str, Any]]:
    """The trained set of an ensemble artifact and its metadata; member hashes are checked."""
    document = json.loads((directory / ENSEMBLE_FILE).read_text())
    found = document.get("format", 1)
    if found != FORMAT:
        raise ArtifactMismatch(
            f"{directory}: ensemble artifact format {found}, this code reads format {FORMAT} (forecasters that "
            "predict their σ per row, not a constant residual σ); retrain it"
        )
    if document["features"] != list(FEATURES) or document["window_channels"] != list(WINDOW_CHANNELS):
        raise ArtifactMismatch(f"{directory}: trained on other features than this code computes")
    gbm: dict[str, GbmClassifier] = {}
    forecasters: dict[str, TorchForecaster] = {}
    for kind, info in document["members"].items():
        member = directory / "members" / kind
        if kind in GBM_KINDS:
            weights = next(p for p in member.iterdir() if p.name.startswith("model."))
            if hashlib.sha256(weights.read_bytes()).hexdigest() != info["sha256"]:
                raise ArtifactMismatch(f"{weights}: sha256 differs from the one recorded at training")
            gbm[kind] = GbmClassifier.load(member)
        else:
            forecasters[kind] = TorchForecaster.load(member, expected_sha256=info["sha256"])
    trained = TrainedModels(
        config=TrainingConfig(**document["config"]),
        gbm=gbm,
        forecasters=forecasters,
        ensemble=Ensemble(
            {k: float(v) for k, v in document["weights"].items()},
            float(document["temperature"]),
            dict(document["temperature_evidence"]),
        ),
        prior=np.asarray(document["prior"], dtype=np.float64),
        fit_info=dict(document["fit_info"]),
    )
    return trained, dict(document["metadata"])


@dataclass(frozen=True)
class MetaLayer:
    """An artifact's meta layer, or why it has none (`absent`)."""

    model: MetaModel | None
    absent: str | None = None


def load_meta(directory: Path) -> MetaLayer:
    """The meta layer of an ensemble artifact; an artifact without one loads with `absent` saying why."""
    document = json.loads((directory / ENSEMBLE_FILE).read_text())
    info = document.get("meta")
    if info is None:
        why = document.get("meta_absent", "the artifact predates the meta layer")
        return MetaLayer(None, f"no meta layer in {directory.name}: {why}")
    model = MetaModel.load(directory / "members" / META_DIR)
    weights = directory / "members" / META_DIR / META_MODEL_FILE
    if hashlib.sha256(weights.read_bytes()).hexdigest() != info["sha256"]:
        raise ArtifactMismatch(f"{weights}: sha256 differs from the one recorded in {ENSEMBLE_FILE}")
    return MetaLayer(model)
