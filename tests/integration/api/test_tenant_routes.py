"""A tenant's own routes, and isolation: tenant A never sees or touches tenant B's objects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from moeplane.store.usage import record_usage
from tests.factories import bearer, make_tenant


def test_me_shows_tenant_quota_usage_and_key(client, database):
    tenant = make_tenant(database, rpm=77)
    with database.session() as session:
        record_usage(session, tenant.id, "completion_tokens", 120)
        record_usage(session, tenant.id, "completion_tokens", 30)
    me = client.get("/v1/me", headers=tenant.headers).json()
    assert me["tenant"]["id"] == tenant.id and me["quota"]["rpm"] == 77
    assert me["usage"]["totals"] == {"completion_tokens": 150}
    assert me["key"]["id"] == tenant.key_id


def test_tenant_creates_lists_and_revokes_own_keys(client, database):
    tenant = make_tenant(database)
    created = client.post("/v1/keys", json={"name": "app"}, headers=tenant.headers)
    assert created.status_code == 201
    new = created.json()
    assert new["tenant_id"] == tenant.id and new["role"] == "tenant"
    assert client.get("/v1/me", headers=bearer(new["key"])).status_code == 200

    ids = [k["id"] for k in client.get("/v1/keys", headers=tenant.headers).json()["data"]]
    assert set(ids) == {tenant.key_id, new["id"]}

    assert client.delete(f"/v1/keys/{new['id']}", headers=tenant.headers).status_code == 200
    assert client.get("/v1/me", headers=bearer(new["key"])).status_code == 401


def test_usage_lists_daily_rows_with_totals_and_filters(client, database):
    tenant = make_tenant(database)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    with database.session() as session:
        record_usage(session, tenant.id, "prompt_tokens", 10, at=yesterday)
        record_usage(session, tenant.id, "prompt_tokens", 5)
        record_usage(session, tenant.id, "completion_tokens", 7)
    usage = client.get("/v1/usage", headers=tenant.headers).json()
    assert usage["totals"] == {"prompt_tokens": 15, "completion_tokens": 7}
    assert len(usage["data"]) == 3
    today = datetime.now(UTC).date().isoformat()
    only_today = client.get(
        "/v1/usage", params={"start": today, "kind": "prompt_tokens"}, headers=tenant.headers
    ).json()
    assert only_today["totals"] == {"prompt_tokens": 5}
    bad = client.get("/v1/usage", params={"start": "2026-13-01"}, headers=tenant.headers)
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "start"
    reversed_range = client.get(
        "/v1/usage", params={"start": today, "end": "2020-01-01"}, headers=tenant.headers
    )
    assert reversed_range.status_code == 422


def test_isolation_on_every_tenant_route(client, database, admin_headers):
    a = make_tenant(database, name="a")
    b = make_tenant(database, name="b")
    b_extra = client.post("/v1/keys", json={"name": "b2"}, headers=b.headers).json()
    with database.session() as session:
        record_usage(session, b.id, "prompt_tokens", 999)

    # another tenant's key id is a 404, never a 403, and is left untouched
    for key_id in (b.key_id, b_extra["id"]):
        response = client.delete(f"/v1/keys/{key_id}", headers=a.headers)
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found_error"
    assert client.get("/v1/me", headers=b.headers).status_code == 200
    assert client.get("/v1/me", headers=bearer(b_extra["key"])).status_code == 200

    # listings and views never show B's rows
    keys = client.get("/v1/keys", headers=a.headers).json()["data"]
    assert {k["tenant_id"] for k in keys} == {a.id}
    assert client.get("/v1/usage", headers=a.headers).json()["totals"] == {}
    assert client.get("/v1/me", headers=a.headers).json()["tenant"]["id"] == a.id
    assert client.get("/v1/me", headers=a.headers).json()["usage"]["totals"] == {}


def test_admin_key_on_tenant_routes_is_403(client, admin_headers):
    for method, path in [("GET", "/v1/me"), ("GET", "/v1/keys"), ("GET", "/v1/usage")]:
        assert client.request(method, path, headers=admin_headers).status_code == 403


def test_admin_usage_across_tenants(client, database, admin_headers):
    a = make_tenant(database)
    b = make_tenant(database)
    with database.session() as session:
        record_usage(session, a.id, "prompt_tokens", 3)
        record_usage(session, b.id, "prompt_tokens", 4)
    everything = client.get("/v1/admin/usage", headers=admin_headers).json()
    assert everything["totals"] == {"prompt_tokens": 7}
    only_b = client.get("/v1/admin/usage", params={"tenant_id": b.id}, headers=admin_headers)
    assert only_b.json()["totals"] == {"prompt_tokens": 4}
