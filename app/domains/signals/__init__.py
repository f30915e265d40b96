"""Signals: market data, features, the model ensemble, the registry and continuous learning."""
