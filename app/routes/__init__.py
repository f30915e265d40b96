"""HTTP endpoints: thin adapters from requests to domain services."""
