"""Operators: tenants, quotas, keys, audit — on SQLite and PostgreSQL."""

from __future__ import annotations

import time

from tests.factories import bearer, make_tenant


def test_create_get_list_update_delete_tenant(client, admin_headers):
    created = client.post("/v1/admin/tenants", json={"name": "acme"}, headers=admin_headers)
    assert created.status_code == 201, created.text
    tenant = created.json()
    assert tenant["object"] == "tenant" and tenant["id"].startswith("ten-")
    assert tenant["status"] == "active" and tenant["weight"] == 1.0

    assert client.get(f"/v1/admin/tenants/{tenant['id']}", headers=admin_headers).json() == tenant
    listed = client.get("/v1/admin/tenants", headers=admin_headers).json()
    assert listed["object"] == "list" and [t["id"] for t in listed["data"]] == [tenant["id"]]

    patched = client.patch(
        f"/v1/admin/tenants/{tenant['id']}",
        json={"status": "suspended", "weight": 2.5},
        headers=admin_headers,
    )
    assert patched.status_code == 200
    assert patched.json()["status"] == "suspended" and patched.json()["weight"] == 2.5

    deleted = client.delete(f"/v1/admin/tenants/{tenant['id']}", headers=admin_headers)
    assert deleted.status_code == 200 and deleted.json()["status"] == "deleted"
    gone = client.get(f"/v1/admin/tenants/{tenant['id']}", headers=admin_headers)
    assert gone.status_code == 404
    assert gone.json()["error"]["type"] == "not_found_error"
    # the name is free again
    again = client.post("/v1/admin/tenants", json={"name": "acme"}, headers=admin_headers)
    assert again.status_code == 201


def test_duplicate_name_is_conflict(client, admin_headers):
    assert client.post("/v1/admin/tenants", json={"name": "dup"}, headers=admin_headers).is_success
    second = client.post("/v1/admin/tenants", json={"name": "DUP"}, headers=admin_headers)
    assert second.status_code == 409
    assert second.json()["error"]["param"] == "name"


def test_invalid_bodies_name_the_field(client, admin_headers):
    cases = [
        ({"name": ""}, "name"),
        ({"name": "x", "weight": 0}, "weight"),
        ({"name": "x", "unknown": 1}, "unknown"),
        ({"name": "x", "quota": {"rpm": 0}}, "quota.rpm"),
        # past a 64-bit integer: was a 500 from the database (schemathesis found it)
        ({"name": "x", "quota": {"compute_budget": 24814046958361354240}}, "quota.compute_budget"),
        ({}, "name"),
    ]
    for body, param in cases:
        response = client.post("/v1/admin/tenants", json=body, headers=admin_headers)
        assert response.status_code == 422, body
        error = response.json()["error"]
        assert error["param"] == param and error["type"] == "invalid_request_error"
        assert param.split(".")[-1] in error["message"]
    assert client.get("/v1/admin/tenants", headers=admin_headers).json()["data"] == []


def test_list_search_filter_and_pagination(client, admin_headers):
    ids = []
    for name in ["alpha", "beta", "alphabet", "gamma", "delta"]:
        ids.append(
            client.post("/v1/admin/tenants", json={"name": name}, headers=admin_headers).json()[
                "id"
            ]
        )
    found = client.get("/v1/admin/tenants?q=ALPHA", headers=admin_headers).json()["data"]
    assert sorted(t["name"] for t in found) == ["alpha", "alphabet"]

    seen, after = [], None
    while True:
        params = {"limit": 2} | ({"after": after} if after else {})
        page = client.get("/v1/admin/tenants", params=params, headers=admin_headers).json()
        seen += [t["id"] for t in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == list(reversed(ids))  # newest first, each exactly once

    client.patch(f"/v1/admin/tenants/{ids[0]}", json={"status": "suspended"}, headers=admin_headers)
    suspended = client.get("/v1/admin/tenants?status=suspended", headers=admin_headers).json()
    assert [t["id"] for t in suspended["data"]] == [ids[0]]


def test_quota_get_and_edit(client, admin_headers):
    tenant = client.post(
        "/v1/admin/tenants", json={"name": "q", "quota": {"rpm": 42}}, headers=admin_headers
    ).json()
    url = f"/v1/admin/tenants/{tenant['id']}/quota"
    quota = client.get(url, headers=admin_headers).json()
    assert quota["rpm"] == 42 and quota["object"] == "quota"

    updated = client.put(url, json={"tpm": 5000, "max_deployments": 7}, headers=admin_headers)
    assert updated.status_code == 200
    body = updated.json()
    assert (body["tpm"], body["max_deployments"], body["rpm"]) == (5000, 7, 42)
    assert client.get(url, headers=admin_headers).json() == body

    bad = client.put(url, json={"tpm": -1}, headers=admin_headers)
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "tpm"
    missing = client.put("/v1/admin/tenants/ten-nope/quota", json={}, headers=admin_headers)
    assert missing.status_code == 404


def test_keys_created_listed_revoked(client, admin_headers):
    tenant = client.post("/v1/admin/tenants", json={"name": "k"}, headers=admin_headers).json()
    created = client.post(
        f"/v1/admin/tenants/{tenant['id']}/keys", json={"name": "ci"}, headers=admin_headers
    )
    assert created.status_code == 201
    key = created.json()
    assert key["key"].startswith("mp-") and key["prefix"] == key["key"][:10]
    assert key["role"] == "tenant" and key["tenant_id"] == tenant["id"]

    assert client.get("/v1/me", headers=bearer(key["key"])).status_code == 200
    listed = client.get(f"/v1/admin/tenants/{tenant['id']}/keys", headers=admin_headers).json()
    assert [k["id"] for k in listed["data"]] == [key["id"]]
    assert "key" not in listed["data"][0]  # the secret is never shown again

    revoked = client.delete(f"/v1/admin/keys/{key['id']}", headers=admin_headers)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    denied = client.get("/v1/me", headers=bearer(key["key"]))
    assert denied.status_code == 401 and "revoked" in denied.json()["error"]["message"]
    assert client.delete("/v1/admin/keys/key-nope", headers=admin_headers).status_code == 404


def test_expired_key_is_401(client, admin_headers):
    tenant = client.post("/v1/admin/tenants", json={"name": "e"}, headers=admin_headers).json()
    past = client.post(
        f"/v1/admin/tenants/{tenant['id']}/keys",
        json={"expires_at": int(time.time()) - 10},
        headers=admin_headers,
    )
    assert past.status_code == 422 and past.json()["error"]["param"] == "expires_at"
    soon = client.post(
        f"/v1/admin/tenants/{tenant['id']}/keys",
        json={"expires_at": int(time.time()) + 2},
        headers=admin_headers,
    ).json()
    assert client.get("/v1/me", headers=bearer(soon["key"])).status_code == 200
    time.sleep(2.2)
    expired = client.get("/v1/me", headers=bearer(soon["key"]))
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]


def test_suspended_tenant_gets_403_everywhere(client, database, admin_headers):
    tenant = make_tenant(database)
    client.patch(
        f"/v1/admin/tenants/{tenant.id}", json={"status": "suspended"}, headers=admin_headers
    )
    for method, path in [
        ("GET", "/v1/me"),
        ("GET", "/v1/keys"),
        ("POST", "/v1/keys"),
        ("GET", "/v1/usage"),
        ("DELETE", f"/v1/keys/{tenant.key_id}"),
    ]:
        response = client.request(method, path, headers=tenant.headers, json={})
        assert response.status_code == 403, (method, path)
        assert response.json()["error"]["code"] == "suspended"
    client.patch(f"/v1/admin/tenants/{tenant.id}", json={"status": "active"}, headers=admin_headers)
    assert client.get("/v1/me", headers=tenant.headers).status_code == 200


def test_deleted_tenant_keys_stop_working(client, database, admin_headers):
    tenant = make_tenant(database)
    assert client.delete(f"/v1/admin/tenants/{tenant.id}", headers=admin_headers).is_success
    assert client.get("/v1/me", headers=tenant.headers).status_code == 401


def test_admin_routes_refuse_tenant_keys_and_anonymous(client, database):
    tenant = make_tenant(database)
    admin_routes = [
        ("POST", "/v1/admin/tenants"),
        ("GET", "/v1/admin/tenants"),
        ("GET", f"/v1/admin/tenants/{tenant.id}"),
        ("PATCH", f"/v1/admin/tenants/{tenant.id}"),
        ("DELETE", f"/v1/admin/tenants/{tenant.id}"),
        ("GET", f"/v1/admin/tenants/{tenant.id}/quota"),
        ("PUT", f"/v1/admin/tenants/{tenant.id}/quota"),
        ("POST", f"/v1/admin/tenants/{tenant.id}/keys"),
        ("GET", f"/v1/admin/tenants/{tenant.id}/keys"),
        ("DELETE", f"/v1/admin/keys/{tenant.key_id}"),
        ("GET", "/v1/admin/usage"),
        ("GET", "/v1/admin/audit"),
    ]
    for method, path in admin_routes:
        as_tenant = client.request(method, path, headers=tenant.headers, json={"name": "x"})
        assert as_tenant.status_code == 403, (method, path)
        assert as_tenant.json()["error"]["type"] == "permission_error"
        anonymous = client.request(method, path, json={"name": "x"})
        assert anonymous.status_code == 401, (method, path)
        garbage = client.request(method, path, headers=bearer("mp-not-a-key"), json={})
        assert garbage.status_code == 401, (method, path)
    # nothing was changed by the refused calls
    assert client.get("/v1/me", headers=tenant.headers).status_code == 200


def test_audit_log_records_changes(client, admin_headers):
    tenant = client.post("/v1/admin/tenants", json={"name": "au"}, headers=admin_headers).json()
    client.put(f"/v1/admin/tenants/{tenant['id']}/quota", json={"rpm": 5}, headers=admin_headers)
    log = client.get(
        "/v1/admin/audit", params={"tenant_id": tenant["id"]}, headers=admin_headers
    ).json()
    actions = [e["action"] for e in log["data"]]
    assert actions == ["quota.update", "tenant.create"]
    assert log["data"][0]["detail"] == {"rpm": 5}
    only = client.get(
        "/v1/admin/audit", params={"action": "tenant.create"}, headers=admin_headers
    ).json()
    assert [e["target_id"] for e in only["data"]] == [tenant["id"]]
