"""Signals, what is served: features, labels, the direction models and their ensemble, the regime filter, the meta
layer (P(TP1 before the stop)), the fallback rule, the served decision, the model registry and the signal service.
Training and evaluation are `app.domains.learning`'s; sizing is `app.domains.sizing`'s."""
