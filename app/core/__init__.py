"""Shared plumbing: settings, event bus, database, Redis, logging, metrics, errors."""
