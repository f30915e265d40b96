"""Forecasting and classification models of the ensemble, and the one list of their kinds (the registry,
training, artifacts and serving all read it)."""

GBM_KINDS = ("xgboost", "lightgbm")  # gradient-boosted classifiers
FORECASTER_KINDS = ("nhits", "patchtst")  # torch forecasters
MODEL_KINDS = (*GBM_KINDS, *FORECASTER_KINDS)
