"""Migrations run on both databases, match the models, and downgrade cleanly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from moeplane.store.migrate import downgrade, upgrade
from moeplane.store.models import Base


def test_models_match_migrations(database):
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models changed without a migration: {diff}"


def test_downgrade_to_base_and_upgrade_again(database):
    downgrade(database.url, "base")
    tables = set(inspect(database.engine).get_table_names()) - {"alembic_version"}
    assert tables == set()
    upgrade(database.url)
    tables = set(inspect(database.engine).get_table_names())
    assert {"tenants", "api_keys", "quotas", "usage", "audit_log"} <= tables
    upgrade(database.url)  # idempotent


def test_usage_upsert_is_atomic_under_concurrency(database):
    from concurrent.futures import ThreadPoolExecutor

    from moeplane.store.tenants import create_tenant
    from moeplane.store.usage import month_totals, record_usage

    with database.session() as session:
        tenant_id = create_tenant(session, name="counter").id

    def add(_: int) -> None:
        with database.session() as session:
            record_usage(session, tenant_id, "prompt_tokens", 3)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(add, range(40)))
    with database.session() as session:
        assert month_totals(session, tenant_id) == {"prompt_tokens": 120}


def test_usage_counts_for_a_tenant_added_in_the_same_transaction(database):
    from moeplane.store.models import Tenant
    from moeplane.store.usage import month_totals, record_usage

    with database.session() as session:
        session.add(Tenant(id="ten-same-session", name="fresh"))  # pending, not flushed
        record_usage(session, "ten-same-session", "completion_tokens", 5)
        record_usage(session, "ten-same-session", "completion_tokens", 7)
    with database.session() as session:
        assert month_totals(session, "ten-same-session") == {"completion_tokens": 12}
