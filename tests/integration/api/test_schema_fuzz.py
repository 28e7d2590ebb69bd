"""Fuzz every operation of the OpenAPI schema: no 5xx, and responses match the schema."""

from __future__ import annotations

import shutil

import pytest
import schemathesis

# Imported here, at module level: imported lazily deep inside hypothesis' recursive generation,
# pytest's assertion rewriter parses it at a deep stack and CPython 3.11 can fail with
# "SystemError: AST constructor recursion depth mismatch" (seen once in CI).
import schemathesis.core.jsonschema.patterns
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from moeplane.api.app import create_app
from moeplane.config import Settings
from moeplane.limits import MemoryLimiter
from moeplane.store.db import Database
from tests.factories import make_admin_key, make_tenant


@pytest.fixture
def fuzz_context(tmp_path, sqlite_template):
    path = tmp_path / "fuzz.db"
    shutil.copy(sqlite_template, path)
    db = Database(f"sqlite:///{path}")
    app = create_app(Settings(home=tmp_path, database_url=db.url), db=db, limiter=MemoryLimiter())
    admin = make_admin_key(db)
    tenant = make_tenant(db, rpm=1_000_000)
    yield app, admin, tenant.headers
    db.dispose()


def test_api_never_errors_and_matches_its_schema(fuzz_context):
    """Every operation, 30 generated requests each (pytest 9 cannot use schemathesis' lazy
    fixture loader, so the operations are driven here with hypothesis directly)."""
    app, admin, tenant = fuzz_context
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        _fuzz(operation, admin if operation.path.startswith("/v1/admin") else tenant)


def _fuzz(operation, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=30,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        # Cross-field rules (e.g. start <= end) are not expressible in OpenAPI, so a
        # schema-valid request may rightly get a 422: skip that one check.
        case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

    check()
