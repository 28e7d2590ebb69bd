"""The admin JSON behind the dashboard's charts: right numbers, admin only, and the dashboard's
/admin/api copy serves exactly what /v1/admin serves."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from moeplane.api.app import create_app
from moeplane.api.dashboard.cluster import parse_cluster_status
from moeplane.config import Settings
from moeplane.limits import MemoryLimiter
from moeplane.store.ids import new_id
from moeplane.store.jobs import add_event
from moeplane.store.models import ExpertStats, FineTuneJob, InferenceRequest, utcnow
from tests.browser.seed import EXPERTS, LAYERS, seed_platform
from tests.factories import make_tenant
from tests.integration.api.test_dashboard import _key, login


@pytest.fixture
def seeded(database):
    return seed_platform(database)


def test_overview_counts_by_status(client, admin_headers, seeded):
    body = client.get("/v1/admin/overview", headers=admin_headers).json()
    assert body["tenants"] == {"active": 3}
    assert body["jobs"] == {"succeeded": 1, "running": 1, "queued": 1}
    assert body["deployments"] == {"running": 1, "deploying": 1}


def test_traffic_per_minute_and_percentiles(client, admin_headers, database, seeded):
    tenant = make_tenant(database)
    now = utcnow()
    with database.session() as s:
        for minutes_ago, latency, tokens in ((0, 100.0, 10), (0, 300.0, 30), (2, 200.0, 60)):
            s.add(
                InferenceRequest(
                    id=new_id("req"),
                    tenant_id=tenant.id,
                    deployment_id="dep-x",
                    model="m",
                    prompt_tokens=5,
                    completion_tokens=tokens,
                    finish_reason="stop",
                    latency_ms=latency,
                    created_at=now - timedelta(minutes=minutes_ago),
                )
            )
        s.add(  # outside the window
            InferenceRequest(
                id=new_id("req"),
                tenant_id=tenant.id,
                deployment_id="dep-x",
                model="m",
                prompt_tokens=5,
                completion_tokens=999,
                finish_reason="stop",
                latency_ms=1.0,
                created_at=now - timedelta(minutes=11),
            )
        )
    body = client.get(
        "/v1/admin/traffic", params={"minutes": 10, "deployment_id": "dep-x"}, headers=admin_headers
    ).json()
    assert body["minutes"] == 10 and len(body["points"]) == 10 and body["bucket_s"] == 60
    assert [p["t"] for p in body["points"]] == [body["start"] + 60 * i for i in range(10)]
    last = next(p for p in body["points"] if p["t"] <= now.timestamp() < p["t"] + 60)
    assert last["requests"] == 2 and last["completion_tokens"] == 40
    assert last["tokens_per_s"] == round(40 / 60, 2)
    assert last["latency_p50_ms"] == 100.0 and last["latency_p95_ms"] == 300.0
    assert sum(p["requests"] for p in body["points"]) == 3
    assert body["points"][0]["latency_p50_ms"] is None  # an empty minute has no latency
    totals = body["totals"]
    assert totals["requests"] == 3 and totals["completion_tokens"] == 100
    assert totals["latency_p50_ms"] == 200.0 and totals["latency_p95_ms"] == 300.0

    everything = client.get("/v1/admin/traffic", headers=admin_headers).json()
    assert everything["totals"]["requests"] == seeded.requests + 4  # 11 minutes ago counts
    by_tenant = client.get(
        "/v1/admin/traffic", params={"tenant_id": seeded.acme.id}, headers=admin_headers
    ).json()
    assert by_tenant["totals"]["requests"] == seeded.requests
    assert client.get("/v1/admin/traffic?minutes=2", headers=admin_headers).status_code == 422


def test_daily_usage_is_zero_filled_per_kind(client, admin_headers, seeded):
    body = client.get(
        "/v1/admin/usage/daily", params={"tenant_id": seeded.acme.id}, headers=admin_headers
    ).json()
    assert len(body["days"]) == 30 and body["days"] == sorted(body["days"])
    assert set(body["series"]) == {"completion_tokens", "prompt_tokens", "training_tokens"}
    assert all(len(v) == 30 for v in body["series"].values())
    assert body["series"]["training_tokens"][-1] == 47_512
    assert body["series"]["prompt_tokens"][:16] == [0] * 16  # 14 days of history were seeded
    week = client.get("/v1/admin/usage/daily?days=7", headers=admin_headers).json()
    assert len(week["days"]) == 7 and week["tenant_id"] is None


def test_loss_curve_from_metrics_events_and_checkpoints(client, admin_headers, database, seeded):
    body = client.get(
        f"/v1/admin/fine_tuning/jobs/{seeded.done_job_id}/metrics", headers=admin_headers
    ).json()
    steps = [p["step"] for p in body["points"]]
    assert steps == list(range(1, 37)) and body["total_steps"] == 36
    assert body["checkpoints"] == [12, 24, 36] and body["status"] == "succeeded"
    assert body["points"][0]["train_loss"] > body["points"][-1]["train_loss"]

    # a resumed run reports a step again: one point per step, the latest wins
    with database.session() as s:
        job = s.get(FineTuneJob, seeded.running_job_id)
        add_event(s, job, "again", type_="metrics", data={"step": 3, "train_loss": 0.125})
        add_event(s, job, "bad", type_="metrics", data={"step": "x", "train_loss": "nan"})
    running = client.get(
        f"/v1/admin/fine_tuning/jobs/{seeded.running_job_id}/metrics", headers=admin_headers
    ).json()
    assert [p["step"] for p in running["points"]] == list(range(1, 9))
    assert running["points"][2]["train_loss"] == 0.125
    missing = client.get("/v1/admin/fine_tuning/jobs/ftjob-nope/metrics", headers=admin_headers)
    assert missing.status_code == 404


def test_expert_load_sums_the_served_versions_replicas(client, admin_headers, database, seeded):
    with database.session() as s:
        s.add(  # an old version's replica: not part of what is served now
            ExpertStats(
                deployment_id=seeded.deployment_id,
                replica_id="old-replica",
                model_version_id=seeded.base_version_id,
                counts=[[10**6] * EXPERTS] * LAYERS,
                tokens=10**6,
            )
        )
        rows = s.query(ExpertStats).filter_by(model_version_id=seeded.tuned_version_id).all()
        expected = [
            [sum(r.counts[layer][e] for r in rows) for e in range(EXPERTS)]
            for layer in range(LAYERS)
        ]
    body = client.get(
        f"/v1/admin/deployments/{seeded.deployment_id}/experts", headers=admin_headers
    ).json()
    assert body["replicas"] == 2 and body["model_version_id"] == seeded.tuned_version_id
    assert body["counts"] == expected
    for layer in body["load"]:
        assert len(layer) == EXPERTS and abs(sum(layer) - 1) < 1e-9


def test_cluster_says_when_ray_is_unreachable(tmp_path, database, admin_headers):
    settings = Settings(
        home=tmp_path, database_url=database.url, ray_dashboard_url="http://127.0.0.1:9"
    )
    with TestClient(create_app(settings, db=database, limiter=MemoryLimiter())) as client:
        body = client.get("/v1/admin/cluster", headers=admin_headers).json()
    assert body["reachable"] is False and "unreachable" in body["error"]
    assert body["resources"] == []


def test_cluster_status_parsing_both_key_styles():
    gib = 1024**3
    for camel in (True, False):
        report = {
            ("loadMetricsReport" if camel else "load_metrics_report"): {
                "usage": {
                    "CPU": [1.5, 4.0],
                    ("objectStoreMemory" if camel else "object_store_memory"): [0, 2 * gib],
                    "memory": [gib, 8 * gib],
                    "node:127.0.0.1": [0, 1],
                },
                ("usageByNode" if camel else "usage_by_node"): {"n1": {}, "n2": {}},
                ("resourceDemand" if camel else "resource_demand"): [[{"CPU": 1}, 3]],
            }
        }
        key = "clusterStatus" if camel else "cluster_status"
        parsed = parse_cluster_status({"result": True, "data": {key: report}})
        assert parsed.reachable and parsed.nodes == 2 and parsed.pending_demand == 3
        by_name = {r.name: (r.used, r.total, r.unit) for r in parsed.resources}
        assert by_name == {
            "CPU": (1.5, 4.0, "cores"),
            "Memory": (1.0, 8.0, "GiB"),
            "Object store": (0.0, 2.0, "GiB"),
        }
    early = parse_cluster_status({"data": {"clusterStatus": None}})
    assert early.reachable and early.error and early.resources == []


@pytest.mark.ray
@pytest.mark.slow
def test_cluster_reads_a_real_ray_head(ray_head, tmp_path, database, admin_headers):
    settings = Settings(home=tmp_path, database_url=database.url)
    settings.ray_dashboard_url = ray_head["dashboard"]
    with TestClient(create_app(settings, db=database, limiter=MemoryLimiter())) as client:
        for _ in range(60):  # the autoscaler monitor reports a few seconds after start
            body = client.get("/v1/admin/cluster", headers=admin_headers).json()
            if body["resources"]:
                break
            time.sleep(1)
    assert body["reachable"], body
    cpu = next(r for r in body["resources"] if r["name"] == "CPU")
    assert cpu["total"] == 2.0 and body["nodes"] == 1


def test_admin_only_and_the_dashboard_copy_is_the_same_json(client, admin_headers, seeded):
    tenant = {"Authorization": f"Bearer {seeded.acme.key}"}
    paths = [
        "/overview",
        "/traffic?minutes=30",
        f"/usage/daily?tenant_id={seeded.acme.id}",
        f"/fine_tuning/jobs/{seeded.done_job_id}/metrics",
        f"/deployments/{seeded.deployment_id}/experts",
    ]
    for path in paths:
        assert client.get("/v1/admin" + path).status_code == 401
        assert client.get("/v1/admin" + path, headers=tenant).status_code == 403
    assert client.get("/v1/admin/cluster", headers=tenant).status_code == 403
    login(client, _key(admin_headers))
    for path in paths:
        api = client.get("/v1/admin" + path, headers=admin_headers).json()
        dashboard = client.get("/admin/api" + path).json()
        if path.startswith("/traffic") and api["start"] != dashboard["start"]:
            continue  # a minute boundary passed between the two calls
        assert api == dashboard, path


def test_admin_cancel_route(client, admin_headers, database, seeded):
    tenant = {"Authorization": f"Bearer {seeded.evil.key}"}
    cancel = f"/v1/admin/fine_tuning/jobs/{seeded.queued_job_id}/cancel"
    assert client.post(cancel, headers=tenant).status_code == 403
    done = client.post(cancel, headers=admin_headers)
    assert done.status_code == 200 and done.json()["status"] == "cancelled"
    assert client.post(cancel, headers=admin_headers).status_code == 409
