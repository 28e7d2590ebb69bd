"""Idempotency-Key on creating POSTs, including concurrent duplicates on a live server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.factories import make_tenant


def test_same_key_same_body_replays(client, admin_headers):
    headers = admin_headers | {"Idempotency-Key": "create-acme"}
    first = client.post("/v1/admin/tenants", json={"name": "acme"}, headers=headers)
    second = client.post("/v1/admin/tenants", json={"name": "acme"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(client.get("/v1/admin/tenants", headers=admin_headers).json()["data"]) == 1


def test_same_key_different_body_is_409(client, admin_headers):
    headers = admin_headers | {"Idempotency-Key": "k1"}
    assert client.post("/v1/admin/tenants", json={"name": "one"}, headers=headers).is_success
    conflict = client.post("/v1/admin/tenants", json={"name": "two"}, headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_key_reused"
    assert conflict.json()["error"]["param"] == "Idempotency-Key"


def test_key_creation_replay_never_repeats_the_secret(client, database):
    tenant = make_tenant(database)
    headers = tenant.headers | {"Idempotency-Key": "new-key"}
    first = client.post("/v1/keys", json={"name": "x"}, headers=headers).json()
    replay = client.post("/v1/keys", json={"name": "x"}, headers=headers).json()
    assert first["key"].startswith("mp-") and replay["key"] is None
    assert replay["id"] == first["id"]
    keys = client.get("/v1/keys", headers=tenant.headers).json()["data"]
    assert len(keys) == 2  # the fixture's key and exactly one new one


def test_keys_are_scoped_per_tenant(client, database):
    a, b = make_tenant(database), make_tenant(database)
    same = {"Idempotency-Key": "shared"}
    ka = client.post("/v1/keys", json={}, headers=a.headers | same).json()
    kb = client.post("/v1/keys", json={}, headers=b.headers | same).json()
    assert ka["id"] != kb["id"] and kb["tenant_id"] == b.id


def test_concurrent_duplicates_create_one_object(app, admin_headers, live_server_factory):
    server = live_server_factory(app)
    headers = admin_headers | {"Idempotency-Key": "race"}

    def post(_: int) -> httpx.Response:
        return httpx.post(
            f"{server.url}/v1/admin/tenants", json={"name": "racer"}, headers=headers, timeout=60
        )

    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(post, range(12)))
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    listed = httpx.get(f"{server.url}/v1/admin/tenants", headers=admin_headers).json()
    assert len(listed["data"]) == 1
