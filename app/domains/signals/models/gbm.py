"""XGBoost and LightGBM direction classifiers (SHORT / HOLD / LONG).

Trained with the libraries' native APIs and saved in their native formats (XGBoost UBJSON,
LightGBM text): no pickle. Single-threaded and seeded, so a training run is repeatable.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import xgboost as xgb

from app.domains.markets.candles import FloatArray
from app.domains.signals.models import GBM_KINDS

N_CLASSES = 3
KINDS = GBM_KINDS
WEIGHTS = {"xgboost": "model.ubj", "lightgbm": "model.txt"}


class LightGbmSettings(Protocol):
    """The settings a LightGBM model reads (frozen configs: read-only)."""

    @property
    def learning_rate(self) -> float: ...

    @property
    def num_leaves(self) -> int: ...

    @property
    def max_depth(self) -> int: ...

    @property
    def min_child_samples(self) -> int: ...

    @property
    def subsample(self) -> float: ...

    @property
    def colsample(self) -> float: ...

    @property
    def l2(self) -> float: ...

    @property
    def seed(self) -> int: ...


def lightgbm_params(cfg: LightGbmSettings, objective: str) -> dict[str, Any]:
    """LightGBM's parameters from our settings' names: one mapping for the direction models and the meta
    layer (deterministic, one thread, silent)."""
    return {
        "objective": objective,
        "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves,
        "max_depth": cfg.max_depth,
        "min_child_samples": cfg.min_child_samples,
        "bagging_fraction": cfg.subsample,
        "bagging_freq": 1,
        "feature_fraction": cfg.colsample,
        "lambda_l2": cfg.l2,
        "num_threads": 1,
        "seed": cfg.seed,
        "deterministic": True,
        "verbosity": -1,
    }


@dataclass(frozen=True)
class GbmConfig:
    kind: str
    n_rounds: int = 300
    learning_rate: float = 0.05
    max_depth: int = 4
    num_leaves: int = 15
    min_child_samples: int = 200
    subsample: float = 0.8
    colsample: float = 0.8
    l2: float = 1.0
    early_stopping_rounds: int = 30
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown gradient-boosting kind {self.kind!r}; expected one of {KINDS}")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class GbmClassifier:
    def __init__(self, config: GbmConfig) -> None:
        self.config = config
        self._xgb: xgb.Booster | None = None
        self._lgb: lgb.Booster | None = None
        self.best_iteration: int | None = None

    def fit(
        self,
        x: FloatArray,
        y: npt.NDArray[np.int64],
        x_val: FloatArray | None = None,
        y_val: npt.NDArray[np.int64] | None = None,
    ) -> dict[str, float]:
        """Fit on (x, y); with a validation set, stop early on its log loss."""
        cfg = self.config
        if cfg.kind == "xgboost":
            params = {
                "objective": "multi:softprob",
                "num_class": N_CLASSES,
                "eta": cfg.learning_rate,
                "max_depth": cfg.max_depth,
                "subsample": cfg.subsample,
                "colsample_bytree": cfg.colsample,
                "lambda": cfg.l2,
                "eval_metric": "mlogloss",
                "tree_method": "hist",
                "nthread": 1,
                "seed": cfg.seed,
                **cfg.extra,
            }
            train = xgb.DMatrix(x, label=y)
            evals = [(xgb.DMatrix(x_val, label=y_val), "val")] if x_val is not None else []
            booster = xgb.train(
                params,
                train,
                num_boost_round=cfg.n_rounds,
                evals=evals,
                early_stopping_rounds=cfg.early_stopping_rounds if evals else None,
                verbose_eval=False,
            )
            self._xgb = booster
            self.best_iteration = int(booster.best_iteration) if evals else cfg.n_rounds - 1
        else:
            params = {**lightgbm_params(cfg, "multiclass"), "num_class": N_CLASSES, **cfg.extra}
            train_set = lgb.Dataset(x, label=y)
            valid_sets = [lgb.Dataset(x_val, label=y_val, reference=train_set)] if x_val is not None else []
            callbacks: list[Callable[..., Any]] = (
                [lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)] if valid_sets else []
            )
            booster_l = lgb.train(
                params, train_set, num_boost_round=cfg.n_rounds, valid_sets=valid_sets, callbacks=callbacks
            )
            self._lgb = booster_l
            self.best_iteration = int(booster_l.best_iteration or cfg.n_rounds) - 1
        metrics = {"best_iteration": float(self.best_iteration)}
        if x_val is not None and y_val is not None:
            p = self.predict_proba(x_val)
            metrics["val_log_loss"] = float(-np.mean(np.log(np.clip(p[np.arange(len(y_val)), y_val], 1e-12, 1))))
        return metrics

    def predict_proba(self, x: FloatArray) -> FloatArray:
        """(n, 3) class probabilities, columns SHORT, HOLD, LONG."""
        out: Any
        rounds = None if self.best_iteration is None else self.best_iteration + 1
        if self._xgb is not None:
            out = self._xgb.inplace_predict(x, iteration_range=(0, rounds or 0))
        elif self._lgb is not None:
            out = self._lgb.predict(x, num_iteration=rounds)
        else:
            raise RuntimeError("model is not trained")
        return np.asarray(out, dtype=np.float64).reshape(len(x), N_CLASSES)

    def save(self, directory: Path) -> dict[str, str]:
        directory.mkdir(parents=True, exist_ok=True)
        weights = directory / WEIGHTS[self.config.kind]
        if self._xgb is not None:
            self._xgb.save_model(str(weights))
        elif self._lgb is not None:
            self._lgb.save_model(str(weights), num_iteration=(self.best_iteration or 0) + 1)
        else:
            raise RuntimeError("model is not trained")
        config = directory / "config.json"
        config.write_text(json.dumps({**asdict(self.config), "best_iteration": self.best_iteration}, sort_keys=True))
        return {"weights": str(weights), "config": str(config), "sha256": sha256_of(weights)}

    @classmethod
    def load(cls, directory: Path) -> "GbmClassifier":
        raw = json.loads((directory / "config.json").read_text())
        best = raw.pop("best_iteration")
        model = cls(GbmConfig(**raw))
        weights = directory / WEIGHTS[model.config.kind]
        if model.config.kind == "xgboost":
            booster = xgb.Booster()
            booster.load_model(str(weights))
            model._xgb = booster
            model.best_iteration = best
        else:
            model._lgb = lgb.Booster(model_file=str(weights))
            model.best_iteration = None  # the saved text holds exactly the kept trees
        return model
