"""Learning: datasets, training, walk-forward evaluation of what is served, the promotion pipeline, report and CLM."""
