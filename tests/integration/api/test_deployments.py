"""Deployments API (no Ray here): validation, shards, atomic quotas, PATCH generations, delete,
isolation, routing statistics, and the inference routes' errors before any replica."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from moeplane.serving.metering import Meter
from moeplane.store.models import Deployment
from tests.factories import make_tenant


def _create(client, tenant, **extra):
    body = {"name": "support", "model": "qwen3-moe-tiny"} | extra
    return client.post("/v1/deployments", json=body, headers=tenant.headers)


def test_create_shape_defaults_and_list(client, database, catalog):
    tenant = make_tenant(database, name="Acme Corp")
    created = _create(client, tenant, expert_shards=2, autoscaling={"max_replicas": 2})
    assert created.status_code == 201, created.text
    dep = created.json()
    assert dep["object"] == "deployment" and dep["id"].startswith("dep-")
    assert dep["status"] == "pending" and dep["generation"] == 1 and dep["kind"] == "llm"
    assert dep["observed_generation"] == 0 and dep["observed_version_id"] is None
    assert dep["model_version_id"] == catalog["qwen3-moe-tiny"]
    assert dep["serve_application"] == "mp-acme-corp-support"
    assert dep["replicas"] == {"current": 0, "min": 1, "max": 2}
    assert dep["autoscaling"]["policy"] == "ongoing_requests"
    assert dep["resources"] == {
        "cpus_per_shard": 0.5,
        "gpus_per_shard": 0.0,
        "packed_weights": "auto",
    }
    listed = client.get("/v1/deployments", headers=tenant.headers).json()
    assert [d["id"] for d in listed["data"]] == [dep["id"]]
    got = client.get(f"/v1/deployments/{dep['id']}", headers=tenant.headers).json()
    assert got == dep


def test_validation_names_the_field(client, database, catalog):
    tenant = make_tenant(database)
    cases = [
        ({"expert_shards": 3}, "expert_shards"),  # 8 experts do not split in 3
        ({"model": "qwen3-tiny", "expert_shards": 2}, "expert_shards"),  # dense
        ({"name": "Bad_Name"}, "name"),
        ({"autoscaling": {"min_replicas": 3, "max_replicas": 2}}, "autoscaling.max_replicas"),
        ({"autoscaling": {"policy": "vibes"}}, "autoscaling.policy"),
        ({"resources": {"cpus_per_shard": 0}}, "resources.cpus_per_shard"),
        ({"resources": {"packed_weights": "always"}}, "resources.packed_weights"),
        ({"version": 7}, "version"),
        ({"surprise": 1}, "surprise"),
    ]
    for extra, param in cases:
        response = _create(client, tenant, **extra)
        assert response.status_code in (404, 422), (extra, response.text)
        assert response.json()["error"]["param"] == param, (extra, response.text)
    assert _create(client, tenant, model="nope").status_code == 404
    assert client.get("/v1/deployments", headers=tenant.headers).json()["data"] == []


def test_duplicate_name_conflicts(client, database, catalog):
    tenant = make_tenant(database)
    assert _create(client, tenant).status_code == 201
    again = _create(client, tenant)
    assert again.status_code == 409 and again.json()["error"]["param"] == "name"
    other = make_tenant(database)
    assert _create(client, other).status_code == 201  # names are per tenant


def test_quotas_hold_under_concurrency(live_server_factory, app, database, catalog):
    tenant = make_tenant(database, max_deployments=2, max_replicas=3)
    server = live_server_factory(app)

    def create(i: int) -> int:
        body = {"name": f"d{i}", "model": "qwen3-tiny"}
        return httpx.post(
            f"{server.url}/v1/deployments", json=body, headers=tenant.headers, timeout=30
        ).status_code

    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(create, range(6)))
    assert sorted(codes) == [201, 201, 429, 429, 429, 429], codes
    with database.session() as session:
        assert session.query(Deployment).filter_by(tenant_id=tenant.id).count() == 2


def test_replica_quota_counts_max_replicas(client, database, catalog):
    tenant = make_tenant(database, max_deployments=5, max_replicas=3)
    assert _create(client, tenant, autoscaling={"max_replicas": 2}).status_code == 201
    denied = _create(client, tenant, name="two", autoscaling={"max_replicas": 2})
    assert denied.status_code == 429 and denied.json()["error"]["code"] == "max_replicas"
    ok = _create(client, tenant, name="two", autoscaling={"max_replicas": 1})
    assert ok.status_code == 201
    dep_id = ok.json()["id"]
    grow = client.patch(
        f"/v1/deployments/{dep_id}",
        json={"autoscaling": {"max_replicas": 2}},
        headers=tenant.headers,
    )
    assert grow.status_code == 429


def test_patch_bumps_generation_only_on_change_and_repins_version(client, database, catalog):
    tenant = make_tenant(database)
    dep = _create(client, tenant).json()
    same = client.patch(
        f"/v1/deployments/{dep['id']}", json={"max_batch_size": 8}, headers=tenant.headers
    ).json()
    assert same["generation"] == 1
    changed = client.patch(
        f"/v1/deployments/{dep['id']}",
        json={"autoscaling": {"max_replicas": 2, "policy": "tokens"}, "max_batch_size": 4},
        headers=tenant.headers,
    ).json()
    assert changed["generation"] == 2 and changed["max_batch_size"] == 4
    assert changed["autoscaling"]["policy"] == "tokens"
    assert changed["autoscaling"]["min_replicas"] == 1  # untouched fields stay
    dense = client.patch(
        f"/v1/deployments/{dep['id']}", json={"model": "qwen3-tiny"}, headers=tenant.headers
    ).json()
    assert dense["model_version_id"] == catalog["qwen3-tiny"] and dense["generation"] == 3
    packed = client.patch(  # a replica setting: a rolling update, other resources kept
        f"/v1/deployments/{dep['id']}",
        json={"resources": {"packed_weights": "off"}},
        headers=tenant.headers,
    ).json()
    assert packed["generation"] == 4 and packed["resources"]["packed_weights"] == "off"
    assert packed["resources"]["cpus_per_shard"] == 0.5
    bad = client.patch(
        f"/v1/deployments/{dep['id']}", json={"expert_shards": 2}, headers=tenant.headers
    )
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "expert_shards"
    huge = client.patch(  # past a 64-bit integer: was a 500 from SQLite
        f"/v1/deployments/{dep['id']}", json={"version": 2**64}, headers=tenant.headers
    )
    assert huge.status_code == 422 and huge.json()["error"]["param"] == "version"


def test_delete_marks_for_the_reconciler(client, database, catalog):
    tenant = make_tenant(database)
    dep = _create(client, tenant).json()
    deleted = client.delete(f"/v1/deployments/{dep['id']}", headers=tenant.headers)
    assert deleted.status_code == 200 and deleted.json()["status"] == "deleting"
    patch = client.patch(
        f"/v1/deployments/{dep['id']}", json={"max_batch_size": 2}, headers=tenant.headers
    )
    assert patch.status_code == 409


def test_isolation_on_every_deployment_route(client, database, catalog):
    owner, other = make_tenant(database), make_tenant(database)
    dep = _create(client, owner).json()
    path = f"/v1/deployments/{dep['id']}"
    for method, url, body in [
        ("GET", path, None),
        ("PATCH", path, {"max_batch_size": 2}),
        ("DELETE", path, None),
        ("GET", f"{path}/experts", None),
    ]:
        response = client.request(method, url, json=body, headers=other.headers)
        assert response.status_code == 404, (method, url, response.text)
    assert client.get("/v1/deployments", headers=other.headers).json()["data"] == []
    # the other tenant cannot call it by name or model either
    for model in ("support", dep["id"], "qwen3-moe-tiny"):
        response = client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers=other.headers,
        )
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "model_not_deployed"
    assert client.get(path, headers=owner.headers).json()["status"] == "pending"


def test_inference_before_the_deployment_runs_is_a_clear_503(client, database, catalog):
    tenant = make_tenant(database)
    _create(client, tenant)
    response = client.post(
        "/v1/chat/completions",
        json={"model": "support", "messages": [{"role": "user", "content": "hi"}]},
        headers=tenant.headers,
    )
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "deployment_not_ready"
    invalid = client.post(
        "/v1/chat/completions",
        json={"model": "support", "messages": [{"role": "user", "content": "hi"}], "n": 2},
        headers=tenant.headers,
    )
    assert invalid.status_code == 422 and invalid.json()["error"]["param"] == "n"


def test_expert_statistics_sum_replicas_of_the_served_version(client, database, catalog):
    tenant = make_tenant(database)
    dep = _create(client, tenant).json()
    meter = Meter(database.url, dep["id"], "qwen3-moe-tiny", dep["model_version_id"])
    meter.save_expert_counts("r1", [[3, 1], [0, 4]], tokens=2)
    meter.save_expert_counts("r2", [[1, 1], [2, 0]], tokens=1)
    meter.save_expert_counts("r2", [[1, 3], [2, 2]], tokens=2)  # cumulative: overwrites
    stats = client.get(f"/v1/deployments/{dep['id']}/experts", headers=tenant.headers).json()
    assert stats["replicas"] == 2 and stats["tokens"] == 4
    assert stats["counts"] == [[4, 4], [2, 6]]
    assert stats["load"] == [[0.5, 0.5], [0.25, 0.75]]


def test_metering_bills_a_request_once(database, catalog):
    tenant = make_tenant(database)
    meter = Meter(database.url, "dep-x", "m", "mv-x")
    kwargs = dict(
        request_id="req-1",
        tenant_id=tenant.id,
        prompt_tokens=5,
        completion_tokens=7,
        finish_reason="abort",
        latency_ms=3.0,
    )
    assert meter.record(**kwargs) is True
    assert meter.record(**kwargs) is False
    from moeplane.store.usage import month_totals

    with database.session() as session:
        totals = month_totals(session, tenant.id)
    assert totals["prompt_tokens"] == 5 and totals["completion_tokens"] == 7
