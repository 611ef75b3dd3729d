"""Alembic migrations for the daemon database (audit log, tokens)."""
