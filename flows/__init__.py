"""Prefect flows and the grok-batch CLI."""
