"""Saving and loading a trained model set, all in native, pickle-free formats.

An ensemble artifact is self-contained: `members/<kind>/` holds each member model and
`ensemble.json` the weights, calibration and everything needed to score new candles, so a
champion ensemble stays loadable whatever retention does to its members' own versions.
"""

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from app.domains.signals.ensemble import Ensemble
from app.domains.signals.features import FEATURES
from app.domains.signals.models.forecaster import TorchForecaster
from app.domains.signals.models.gbm import GbmClassifier
from app.domains.signals.training import WINDOW_CHANNELS, TrainedModels, TrainingConfig

ENSEMBLE_FILE = "ensemble.json"
GBM_KINDS = ("xgboost", "lightgbm")
TORCH_KINDS = ("nhits", "patchtst")


def save_member(trained: TrainedModels, kind: str, directory: Path) -> dict[str, str]:
    if kind in GBM_KINDS:
        return trained.gbm[kind].save(directory)
    return trained.forecasters[kind].save(directory)


def save_ensemble(trained: TrainedModels, directory: Path, metadata: dict[str, Any]) -> dict[str, str]:
    """Write the whole set; returns the sha256 of ensemble.json, which names every member's hash."""
    members = {kind: save_member(trained, kind, directory / "members" / kind) for kind in (*GBM_KINDS, *TORCH_KINDS)}
    document = {
        "config": asdict(trained.config),
        "weights": trained.ensemble.weights,
        "temperature": trained.ensemble.temperature,
        "residual_std": trained.residual_std,
        "prior": [float(p) for p in trained.prior],
        "features": list(FEATURES),
        "window_channels": list(WINDOW_CHANNELS),
        "members": {kind: {"sha256": saved["sha256"]} for kind, saved in members.items()},
        "metadata": metadata,
    }
    path = directory / ENSEMBLE_FILE
    path.write_text(json.dumps(document, indent=1, sort_keys=True))
    return {"weights": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


class ArtifactMismatch(ValueError):
    pass


def load_ensemble(directory: Path) -> tuple[TrainedModels, dict[str, Any]]:
    """The trained set of an ensemble artifact and its metadata; member hashes are checked."""
    document = json.loads((directory / ENSEMBLE_FILE).read_text())
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
        residual_std={k: float(v) for k, v in document["residual_std"].items()},
        ensemble=Ensemble({k: float(v) for k, v in document["weights"].items()}, float(document["temperature"])),
        prior=np.asarray(document["prior"], dtype=np.float64),
    )
    return trained, dict(document["metadata"])
