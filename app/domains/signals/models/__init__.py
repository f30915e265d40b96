"""Forecasting and classification models of the ensemble."""
