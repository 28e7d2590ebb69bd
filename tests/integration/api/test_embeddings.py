"""Embeddings without Ray: the catalog model, its deployment kind, the route's errors before any
replica, and token counting. The served vectors are compared with sentence-transformers in
tests/e2e/test_apps_e2e.py."""

from __future__ import annotations

import pytest

from moeplane.modeling.embeddings import EMBEDDING_MODEL_ID, default_model_path, token_counter
from moeplane.modeling.publish import register_embedding_model
from tests.factories import make_tenant


@pytest.fixture
def embedding_model(database) -> str:
    with database.session() as session:
        version = register_embedding_model(session)
        assert version is not None
        assert register_embedding_model(session) is None  # idempotent
        return version.id


def test_catalog_model_deploys_as_embeddings(client, database, catalog, embedding_model):
    tenant = make_tenant(database)
    model = client.get(f"/v1/models/{EMBEDDING_MODEL_ID}", headers=tenant.headers)
    assert model.status_code == 200, model.text
    dep = client.post(
        "/v1/deployments",
        json={"name": "embed", "model": EMBEDDING_MODEL_ID},
        headers=tenant.headers,
    )
    assert dep.status_code == 201, dep.text
    assert dep.json()["kind"] == "embeddings" and dep.json()["model_version_id"] == embedding_model
    sharded = client.post(
        "/v1/deployments",
        json={"name": "embed2", "model": EMBEDDING_MODEL_ID, "expert_shards": 2},
        headers=tenant.headers,
    )
    assert sharded.status_code == 422 and sharded.json()["error"]["param"] == "expert_shards"
    with database.session() as session:
        from moeplane.store.models import ModelVersion

        version = session.get(ModelVersion, embedding_model)
        assert version.artifact_uri == default_model_path().as_uri()
        assert version.config["family"] == "sentence_embedding"
        assert version.config["num_experts"] == 0 and version.config["hidden_size"] == 384


def test_errors_before_any_replica(client, database, catalog, embedding_model):
    tenant = make_tenant(database)
    url = "/v1/embeddings"
    missing = client.post(url, json={"model": "embed", "input": "hi"}, headers=tenant.headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_deployed"
    for name, model in (("embed", EMBEDDING_MODEL_ID), ("chat", "qwen3-moe-tiny")):
        body = {"name": name, "model": model}
        assert client.post("/v1/deployments", json=body, headers=tenant.headers).status_code == 201
    pending = client.post(url, json={"model": "embed", "input": ["a", "b"]}, headers=tenant.headers)
    assert pending.status_code == 503 and pending.json()["error"]["code"] == "deployment_not_ready"
    # a chat deployment is not an embeddings one (and vice versa)
    chat = client.post(url, json={"model": "chat", "input": "hi"}, headers=tenant.headers)
    assert chat.status_code == 404
    other = make_tenant(database)
    hidden = client.post(url, json={"model": "embed", "input": "hi"}, headers=other.headers)
    assert hidden.status_code == 404
    for body, param in (
        ({"model": "embed", "input": ""}, "input"),
        ({"model": "embed", "input": []}, "input"),
        ({"model": "embed", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "embed", "input": ["x"] * 2049}, "input"),
    ):
        response = client.post(url, json=body, headers=tenant.headers)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["param"].startswith(param), response.text


def test_monthly_budget_counts_embedding_tokens(client, database, catalog, embedding_model):
    tenant = make_tenant(database, monthly_tokens=5)
    body = {"name": "embed", "model": EMBEDDING_MODEL_ID}
    assert client.post("/v1/deployments", json=body, headers=tenant.headers).status_code == 201
    with database.session() as session:
        from moeplane.store.models import Deployment

        dep = session.query(Deployment).filter_by(tenant_id=tenant.id).one()
        dep.status, dep.observed_generation = "running", 1  # as the reconciler would
    body = {"model": "embed", "input": "one two three four five six"}
    response = client.post("/v1/embeddings", json=body, headers=tenant.headers)
    assert response.status_code == 429 and response.json()["error"]["code"] == "monthly_tokens"


def test_token_counter_matches_the_replica_truncation():
    counter = token_counter(str(default_model_path()))
    assert counter(["hello world", "word " * 1000]) == [4, 256]
    assert counter.dim == 384
