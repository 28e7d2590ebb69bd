"""Persistence: SQLAlchemy models, sessions, the tenant-scoping helper and Alembic migrations."""
