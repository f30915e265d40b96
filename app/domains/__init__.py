"""Business domains. Each owns its models, logic and events and imports no FastAPI."""
