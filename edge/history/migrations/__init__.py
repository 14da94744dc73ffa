"""Alembic migrations of the history schema (run by edge.history.store, never by hand)."""
