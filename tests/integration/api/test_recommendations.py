"""Catalogs and recommendations over the API (no Ray here), on SQLite and PostgreSQL: upload ->
catalog -> index build (the Celery task's body, run synchronously) -> deployment; validation
naming the field or line; tenant isolation on every route; quotas; re-index rolls the
deployment; the built index respects filters, exclusions and cold start."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from moeplane.recommend.catalogs import build_catalog_index, user_history
from moeplane.recommend.engine import Recommender, load_index_uri
from moeplane.recommend.generator import generate
from moeplane.storage import Storage
from moeplane.store.models import Deployment
from tests.factories import make_tenant, make_unchecked_file

DATA = generate(120, 80, seed=5)


@pytest.fixture(scope="module")
def encoder():
    from moeplane.modeling.embeddings import EmbeddingModel

    return EmbeddingModel()


def _jsonl(rows) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def _upload(client, tenant, purpose: str, content: bytes) -> str:
    files = {"file": (f"{purpose}.jsonl", content, "application/jsonl")}
    response = client.post(
        "/v1/files", files=files, data={"purpose": purpose}, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _catalog(client, tenant, products=None, events=None, **extra):
    body = {"name": "shop"} | extra
    body["products_file"] = _upload(
        client, tenant, "catalog", _jsonl(products or [p.to_json() for p in DATA.products])
    )
    if events is not False:
        body["events_file"] = _upload(
            client, tenant, "events", _jsonl(events or [e.to_json() for e in DATA.events])
        )
    return client.post("/v1/catalogs", json=body, headers=tenant.headers)


def _build(database, settings, catalog_id, encoder):
    return build_catalog_index(database, Storage(settings.storage_uri), catalog_id, encoder.encode)


def test_catalog_index_deployment_and_isolation(client, database, settings, encoder):
    tenant, other = make_tenant(database), make_tenant(database)
    created = _catalog(client, tenant)
    assert created.status_code == 201, created.text
    cat = created.json()
    assert cat["object"] == "catalog" and cat["id"].startswith("cat-")
    assert (cat["status"], cat["progress"], cat["error"]) == ("queued", 0.0, None)
    assert cat["products"] == 120 and cat["events"] == len(DATA.events)
    not_ready = client.post(
        "/v1/recommendations", json={"catalog": cat["id"], "user_id": "u1"}, headers=tenant.headers
    )
    assert not_ready.status_code == 503
    assert not_ready.json()["error"]["code"] == "catalog_not_ready"

    assert _build(database, settings, cat["id"], encoder) == "ready"
    assert _build(database, settings, cat["id"], encoder) is None  # redelivery: nothing to do
    got = client.get(f"/v1/catalogs/{cat['id']}", headers=tenant.headers).json()
    assert (got["status"], got["progress"], got["built_generation"]) == ("ready", 1.0, 1)
    with database.session() as session:
        dep = session.get(Deployment, got["deployment_id"])
        assert dep.kind == "recommender" and dep.name == f"catalog-{cat['id'][-8:]}"
        assert dep.options["catalog_id"] == cat["id"] and dep.status == "pending"
        index_uri = dep.options["index_uri"]
    deploying = client.post(
        "/v1/recommendations", json={"catalog": cat["id"], "user_id": "u1"}, headers=tenant.headers
    )
    assert deploying.status_code == 503
    assert deploying.json()["error"]["code"] == "deployment_not_ready"
    listed = client.get("/v1/catalogs", headers=tenant.headers).json()
    assert [c["id"] for c in listed["data"]] == [cat["id"]]

    # another tenant: every route is a 404, and its own files cannot point at ours
    assert client.get("/v1/catalogs", headers=other.headers).json()["data"] == []
    assert client.get(f"/v1/catalogs/{cat['id']}", headers=other.headers).status_code == 404
    event = {"user_id": "x", "product_id": "p000001", "type": "view", "timestamp": 1.0}
    foreign = client.post(
        f"/v1/catalogs/{cat['id']}/events", json={"events": [event]}, headers=other.headers
    )
    assert foreign.status_code == 404
    rec = client.post(
        "/v1/recommendations", json={"catalog": cat["id"], "user_id": "u1"}, headers=other.headers
    )
    assert rec.status_code == 404 and rec.json()["error"]["param"] == "catalog"
    steal = client.post(
        "/v1/catalogs",
        json={"name": "x", "products_file": created.json()["id"]},
        headers=other.headers,
    )
    assert steal.status_code == 404
    assert client.post("/v1/catalogs", json={"name": "x"}).status_code == 401

    # the stored index answers like the replica will
    engine = Recommender(load_index_uri(index_uri), encoder.encode)
    _check_index_behaviour(engine, database, tenant, cat["id"])

    # appending events with reindex builds generation 2 and rolls the deployment
    appended = client.post(
        f"/v1/catalogs/{cat['id']}/events",
        json={"events": [event, event | {"type": "purchase"}], "reindex": True},
        headers=tenant.headers,
    )
    assert appended.status_code == 200, appended.text
    body = appended.json()
    assert body["added"] == 2 and body["catalog"]["status"] == "queued"
    assert body["catalog"]["generation"] == 2
    assert _build(database, settings, cat["id"], encoder) == "ready"
    with database.session() as session:
        dep = session.get(Deployment, got["deployment_id"])
        assert dep.generation == 2 and dep.options["index_uri"] != index_uri


def _check_index_behaviour(engine, database, tenant, catalog_id):
    products = {p.id: p for p in DATA.products}
    buyers = sorted({e.user_id for e in DATA.events if e.type == "purchase"})
    user = buyers[0]
    with database.session() as session:
        history = user_history(session, tenant.id, catalog_id, user)
    seen = {pid for pid, _, _ in history}
    out = engine.handle({"history": history, "k": 10})
    assert out["strategy"] == "hybrid" and len(out["data"]) == 10
    assert not seen & {r["product_id"] for r in out["data"]}
    assert all(r["reason"] for r in out["data"])
    category = Counter(p.category for p in DATA.products).most_common(1)[0][0]
    filtered = engine.handle(
        {
            "history": history,
            "k": 5,
            "filters": {"categories": [category], "price_max": 10_000, "in_stock": True},
        }
    )["data"]
    assert filtered and all(
        products[r["product_id"]].category == category and products[r["product_id"]].in_stock
        for r in filtered
    )
    cold = engine.handle({"history": [], "k": 5})
    assert cold["strategy"] == "popular" and len(cold["data"]) == 5
    touched = {e.product_id for e in DATA.events}
    new = next(p for p in DATA.products if p.id not in touched) if len(touched) < 120 else None
    if new is not None:  # an item nobody interacted with still gets similar items
        similar = engine.handle({"product_id": new.id, "k": 3})
        assert similar["strategy"] == "similar_items" and len(similar["data"]) == 3
    search = engine.handle({"query": DATA.products[0].title, "k": 3})
    assert search["strategy"] == "search"
    assert search["data"][0]["product_id"] == DATA.products[0].id


def test_validation_names_the_field_or_line(client, database, settings):
    tenant = make_tenant(database)
    rows = [p.to_json() for p in DATA.products[:3]]
    # uploads are checked (tests/integration/api/test_files.py); files from before are checked
    # again when a catalog uses them
    content = _jsonl([*rows, rows[0] | {"id": "z", "price": "x"}])
    legacy = make_unchecked_file(
        database, settings.storage_uri, tenant.id, "catalog", "p.jsonl", content
    )
    bad = client.post(
        "/v1/catalogs", json={"name": "shop", "products_file": legacy}, headers=tenant.headers
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["param"] == "products_file"
    assert "line 4: price must be a number" in bad.json()["error"]["message"]
    events = [{"user_id": "u", "product_id": "nope", "type": "view", "timestamp": 1}]
    unknown = _catalog(client, tenant, products=rows, events=events)
    assert unknown.status_code == 422
    assert "line 1: product_id 'nope' is not in the catalog" in unknown.json()["error"]["message"]
    wrong = client.post(
        "/v1/catalogs",
        json={"name": "x", "products_file": _upload(client, tenant, "events", b"")},
        headers=tenant.headers,
    )
    assert wrong.status_code == 422 and wrong.json()["error"]["param"] == "products_file"
    missing = client.post(
        "/v1/catalogs", json={"name": "x", "products_file": "file-nope"}, headers=tenant.headers
    )
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "products_file"
    assert client.get("/v1/catalogs", headers=tenant.headers).json()["data"] == []

    cat = _catalog(client, tenant, products=rows, events=False).json()
    cases = [
        ({"catalog": cat["id"]}, 422, "user_id"),
        ({"catalog": cat["id"], "user_id": "u", "k": 0}, 422, "k"),
        (
            {"catalog": cat["id"], "user_id": "u", "filters": {"price_min": 5, "price_max": 1}},
            422,
            "filters.price_max",
        ),
        ({"catalog": "cat-nope", "user_id": "u"}, 404, "catalog"),
        ({"catalog": cat["id"], "user_id": "u", "surprise": 1}, 422, "surprise"),
    ]
    for body, status, param in cases:
        response = client.post("/v1/recommendations", json=body, headers=tenant.headers)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["param"] == param, (body, response.text)
    event = {
        "user_id": "u",
        "product_id": rows[0]["id"],
        "type": "view",
        "timestamp": "2026-11-01T00:00:00Z",
    }
    cases = [
        ([event, event | {"product_id": "nope"}], "events[1].product_id"),
        ([event | {"type": "like"}], "events.0.type"),
        ([event | {"timestamp": "yesterday"}], "events[0].timestamp"),
    ]
    for events, param in cases:
        response = client.post(
            f"/v1/catalogs/{cat['id']}/events", json={"events": events}, headers=tenant.headers
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["param"] == param, response.text
    got = client.get(f"/v1/catalogs/{cat['id']}", headers=tenant.headers).json()
    assert got["events"] == 0  # nothing of a refused batch was kept


def test_deployment_quota_leaves_the_index_ready_but_unserved(client, database, settings, encoder):
    tenant = make_tenant(database, max_deployments=0)
    rows = [p.to_json() for p in DATA.products[:20]]
    cat = _catalog(client, tenant, products=rows, events=False).json()
    assert _build(database, settings, cat["id"], encoder) == "ready"
    got = client.get(f"/v1/catalogs/{cat['id']}", headers=tenant.headers).json()
    assert got["status"] == "ready" and got["deployment_id"] is None
    assert got["error"]["code"] == "max_deployments"
    response = client.post(
        "/v1/recommendations", json={"catalog": cat["id"], "query": "x"}, headers=tenant.headers
    )
    assert response.status_code == 503 and "not served" in response.json()["error"]["message"]


def test_eval_cli_on_a_stored_catalog(client, database, settings, encoder, monkeypatch):
    from typer.testing import CliRunner

    from moeplane.cli import app as cli
    from moeplane.config import get_settings

    tenant = make_tenant(database)
    cat = _catalog(client, tenant).json()
    runner = CliRunner()
    monkeypatch.setenv("MOEPLANE_DATABASE_URL", database.url)
    get_settings.cache_clear()
    try:
        early = runner.invoke(cli, ["eval", "recommendations", cat["id"]])
        assert early.exit_code == 1 and "not built yet" in early.output
        _build(database, settings, cat["id"], encoder)
        result = runner.invoke(cli, ["eval", "recommendations", cat["id"], "--json"])
        assert result.exit_code == 0, result.output
        metrics = {m["strategy"]: m for m in json.loads(result.output)}
        table = runner.invoke(cli, ["eval", "recommendations", cat["id"]]).output
    finally:
        get_settings.cache_clear()
    assert set(metrics) == {"hybrid", "popularity", "embedding"}
    assert metrics["hybrid"]["users"] > 20
    assert metrics["hybrid"]["recall"] > metrics["popularity"]["recall"]
    assert "recall@10" in table and "hybrid" in table.splitlines()[2]


class _Replica:
    """Stands in for the Serve hop only (tests/e2e covers the real one): the real scoring over
    the stored index, or a failure, as ``handle.recommend.remote(payload)`` gives them."""

    def __init__(self, engine: Recommender | None):
        self.engine = engine
        self.recommend = self

    async def remote(self, payload):
        if self.engine is None:
            raise RuntimeError("replica died")
        return self.engine.handle(payload)


class _EveryLoop(dict):
    """The API's handle cache with ``replica`` as the handle of every (app, event loop)."""

    def __init__(self, replica: _Replica):
        super().__init__()
        self.replica = replica

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: object) -> _Replica:
        return self.replica


def test_a_request_is_counted_once_served_and_handed_back_when_the_replica_fails(
    app, client, database, settings, encoder
):
    from moeplane.store.usage import month_totals

    tenant = make_tenant(database)
    cat = _catalog(client, tenant).json()
    assert _build(database, settings, cat["id"], encoder) == "ready"
    built = client.get(f"/v1/catalogs/{cat['id']}", headers=tenant.headers).json()
    with database.session() as session:  # what the reconciler records once Serve runs it
        dep = session.get(Deployment, built["deployment_id"])
        dep.status, dep.observed_generation = "running", dep.generation
        index_uri = dep.options["index_uri"]

    def used() -> int:
        with database.session() as session:
            return month_totals(session, tenant.id).get("recommendations", 0)

    body = {"catalog": cat["id"], "user_id": DATA.events[0].user_id, "k": 5}
    app.state.recommender_handles = _EveryLoop(_Replica(Recommender(load_index_uri(index_uri))))
    served = client.post("/v1/recommendations", json=body, headers=tenant.headers)
    assert served.status_code == 200, served.text
    assert len(served.json()["data"]) == 5 and used() == 1
    app.state.recommender_handles = _EveryLoop(_Replica(None))
    failed = client.post("/v1/recommendations", json=body, headers=tenant.headers)
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "replica_failed"
    assert used() == 1  # the failed request's count was handed back
