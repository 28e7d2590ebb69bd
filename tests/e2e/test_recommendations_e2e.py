"""Recommendations end to end on the session's Ray head: catalog upload -> index build (task
body, synchronous) -> the reconciler deploys the recommender -> POST /v1/recommendations through
the real Serve replica: filters, seen items excluded, cold start, usage counted, isolation."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from fastapi.testclient import TestClient

from moeplane.api.app import create_app
from moeplane.config import Settings
from moeplane.limits import MemoryLimiter
from moeplane.recommend.catalogs import build_catalog_index
from moeplane.recommend.generator import generate
from moeplane.serving.reconcile import ServeClient, reconcile_deployments
from moeplane.storage import Storage
from moeplane.store.db import Database
from moeplane.store.models import Catalog, Deployment
from moeplane.store.usage import month_totals
from tests.conftest import clear_serve_apps
from tests.factories import make_tenant

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _upload(client, tenant, purpose, rows) -> str:
    content = ("\n".join(json.dumps(r) for r in rows) + "\n").encode()
    response = client.post(
        "/v1/files",
        files={"file": (f"{purpose}.jsonl", content)},
        data={"purpose": purpose},
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_recommendations_served_by_a_serve_replica(ray_head, sqlite_template, tmp_path):
    from moeplane.modeling.embeddings import EmbeddingModel

    shutil.copy(sqlite_template, tmp_path / "moeplane.db")
    database = Database(f"sqlite:///{tmp_path / 'moeplane.db'}")
    settings = Settings(
        home=tmp_path / "home",
        database_url=database.url,
        redis_url=None,
        storage_uri=(tmp_path / "storage").as_uri(),
        ray_address=ray_head["address"],
        ray_dashboard_url=ray_head["dashboard"],
    )
    data = generate(150, 100, seed=2)
    products = {p.id: p for p in data.products}
    tenant, other = make_tenant(database, name="shop"), make_tenant(database, name="rival")
    app = create_app(settings, db=database, limiter=MemoryLimiter())
    try:
        with TestClient(app) as client:
            body = {
                "name": "demo",
                "products_file": _upload(
                    client, tenant, "catalog", [p.to_json() for p in data.products]
                ),
                "events_file": _upload(
                    client, tenant, "events", [e.to_json() for e in data.events]
                ),
            }
            catalog_id = client.post("/v1/catalogs", json=body, headers=tenant.headers).json()["id"]
            storage = Storage(settings.storage_uri)
            assert build_catalog_index(database, storage, catalog_id, EmbeddingModel().encode)
            with database.session() as session:
                dep_id = session.get(Catalog, catalog_id).deployment_id
            deadline = time.monotonic() + 240
            while True:
                reconcile_deployments(database, settings, ServeClient(settings))
                with database.session() as session:
                    dep = session.get(Deployment, dep_id)
                    status, reason = dep.status, dep.status_reason
                if status == "running":
                    break
                assert status != "failed" and time.monotonic() < deadline, (status, reason)
                time.sleep(1)

            def ask(tenant_, **extra):
                return client.post(
                    "/v1/recommendations",
                    json={"catalog": catalog_id} | extra,
                    headers=tenant_.headers,
                )

            user = sorted({e.user_id for e in data.events if e.type == "purchase"})[0]
            seen = {e.product_id for e in data.events if e.user_id == user}
            plain = ask(tenant, user_id=user, k=10)
            assert plain.status_code == 200, plain.text
            out = plain.json()
            assert out["object"] == "list" and out["strategy"] == "hybrid"
            assert out["catalog"] == catalog_id and len(out["data"]) == 10
            assert not seen & {r["product_id"] for r in out["data"]}
            first = out["data"][0]
            assert set(first) == {"product_id", "title", "score", "reason", "category", "price"}
            assert [r["score"] for r in out["data"]] == sorted(
                (r["score"] for r in out["data"]), reverse=True
            )
            kept = ask(tenant, user_id=user, k=10, exclude_seen=False).json()["data"]
            assert seen & {r["product_id"] for r in kept}  # what they liked ranks high
            filters = {"category": first["category"], "price_max": first["price"], "in_stock": True}
            narrow = ask(tenant, user_id=user, filters=filters).json()["data"]
            assert narrow and all(
                products[r["product_id"]].category == first["category"]
                and r["price"] <= first["price"]
                and products[r["product_id"]].in_stock
                for r in narrow
            )
            cold = ask(tenant, user_id="never-seen", k=5).json()
            assert cold["strategy"] == "popular" and len(cold["data"]) == 5
            similar = ask(tenant, product_id=data.products[0].id, k=3).json()
            assert similar["strategy"] == "similar_items"
            assert data.products[0].id not in {r["product_id"] for r in similar["data"]}
            search = ask(tenant, query=data.products[3].title, k=3).json()
            assert search["data"][0]["product_id"] == data.products[3].id
            assert ask(other, user_id=user).status_code == 404
            missing = ask(tenant, product_id="nope")
            assert missing.status_code == 404 and missing.json()["error"]["param"] == "product_id"
            time.sleep(0.5)  # usage is written after the response
            with database.session() as session:
                assert month_totals(session, tenant.id).get("recommendations") == 6
    finally:
        clear_serve_apps(ray_head["dashboard"])
        database.dispose()
