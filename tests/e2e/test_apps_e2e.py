"""Application endpoints end to end on the session's local Ray head: an ``embeddings``
deployment of the packaged all-MiniLM-L6-v2 and a support bot on a qwen3-moe-tiny chat
deployment, both deployed by the real reconciler through Serve's REST API and called through
the API (TestClient over the real app, gateway and Serve handles).

qwen3-moe-tiny has random weights, so the bot's answers are checked for what retrieval and the
prompt decide (citations, escalation, history, streaming, metering), not for their words. A
customer who leaves mid-stream is a real disconnect, over a live uvicorn server.
"""

from __future__ import annotations

import base64
import json
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from moeplane.api.app import create_app
from moeplane.config import Settings
from moeplane.limits import MemoryLimiter
from moeplane.modeling import read_config, sha256_dir, summarize_config
from moeplane.modeling.embeddings import default_model_path, token_counter
from moeplane.modeling.publish import register_embedding_model
from moeplane.serving.reconcile import ServeClient, reconcile_deployments
from moeplane.store.db import Database
from moeplane.store.migrate import upgrade
from moeplane.store.models import InferenceRequest, Message
from moeplane.store.registry import ensure_model, register_version, summary_dict
from tests.conftest import LiveServer, clear_serve_apps
from tests.factories import make_tenant
from tests.unit.support.kb import HELP_CENTER_MD, faq_jsonl

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TEXTS = ["Where is my order?", "Refunds take 5-7 business days.", "ok"]


def _register_chat_model(session, path) -> None:
    summary = summarize_config(read_config(path))
    model = ensure_model(
        session, model_id="qwen3-moe-tiny", tenant_id=None, family=summary.family,
        base_model_id="qwen3-moe-tiny",
    )  # fmt: skip
    register_version(
        session, model, artifact_uri=path.as_uri(), sha256=sha256_dir(path),
        config=summary_dict(summary),
    )  # fmt: skip


def _wait_running(database, settings, client, tenant, names, timeout=300) -> None:
    serve = ServeClient(settings)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reconcile_deployments(database, settings, serve)
        deps = client.get("/v1/deployments", headers=tenant.headers).json()["data"]
        status = {d["name"]: (d["status"], d["status_reason"]) for d in deps}
        assert not any(s == "failed" for s, _ in status.values()), status
        if all(status[n][0] == "running" for n in names):
            return
        time.sleep(1)
    raise AssertionError(f"deployments not running: {status}")


def _sse(lines) -> list:
    return [json.loads(x.removeprefix("data: ")) for x in lines if x and x != "data: [DONE]"]


def test_embeddings_and_support_bot(ray_head, base_checkpoints, tmp_path):
    url = f"sqlite:///{tmp_path / 'moeplane.db'}"
    upgrade(url)
    database = Database(url)
    settings = Settings(
        home=tmp_path / "home",
        database_url=url,
        redis_url=None,
        storage_uri=(tmp_path / "storage").as_uri(),
        ray_address=ray_head["address"],
        ray_dashboard_url=ray_head["dashboard"],
    )
    with database.session() as session:
        _register_chat_model(session, base_checkpoints["qwen3-moe-tiny"])
        register_embedding_model(session)
    tenant = make_tenant(database, name="shop", max_deployments=4)
    app = create_app(settings, db=database, limiter=MemoryLimiter())
    try:
        with TestClient(app) as client:
            for name, model in (("embed", "all-minilm-l6-v2"), ("chat", "qwen3-moe-tiny")):
                body = {"name": name, "model": model, "max_batch_size": 8}
                created = client.post("/v1/deployments", json=body, headers=tenant.headers)
                assert created.status_code == 201, created.text
            _wait_running(database, settings, client, tenant, ["embed", "chat"])
            _check_embeddings(client, tenant, database)
            bot_id = _check_support_bot(client, tenant, database)
            _check_abandoned_answer(settings, database, tenant, bot_id)
    finally:
        clear_serve_apps(ray_head["dashboard"])
        database.dispose()


def _check_embeddings(client, tenant, database) -> None:
    from sentence_transformers import SentenceTransformer

    expected = SentenceTransformer(str(default_model_path()), device="cpu").encode(TEXTS)
    body = {"model": "embed", "input": TEXTS}
    response = client.post("/v1/embeddings", json=body, headers=tenant.headers)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["object"] == "list" and result["model"] == "embed"
    assert [d["index"] for d in result["data"]] == [0, 1, 2]
    assert all(d["object"] == "embedding" for d in result["data"])
    got = np.array([d["embedding"] for d in result["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    tokens = sum(token_counter(str(default_model_path()))(TEXTS))
    assert result["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    packed = client.post(
        "/v1/embeddings", json=body | {"input": TEXTS[0], "encoding_format": "base64"},
        headers=tenant.headers,
    ).json()  # fmt: skip
    vector = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, expected[0], atol=2e-5)
    rows = _billed(database, "all-minilm-l6-v2", 2)  # by the replica, once per request
    assert sorted(r.prompt_tokens for r in rows)[-1] == tokens


def _billed(database, model: str, count: int, timeout: float = 30) -> list[InferenceRequest]:
    """The replica's billing rows for ``model`` once there are ``count`` (written off the
    request's path)."""
    deadline = time.monotonic() + timeout
    while True:
        with database.session() as session:
            stmt = select(InferenceRequest).where(InferenceRequest.model == model)
            rows = list(session.scalars(stmt))
        if len(rows) >= count or time.monotonic() > deadline:
            assert len(rows) == count, rows
            return rows
        time.sleep(0.2)


def _upload(client, tenant, name, content) -> str:
    response = client.post(
        "/v1/files", headers=tenant.headers, data={"purpose": "knowledge"},
        files={"file": (name, content, "text/plain")},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _check_support_bot(client, tenant, database) -> str:
    files = [_upload(client, tenant, "help.md", HELP_CENTER_MD.encode()),
             _upload(client, tenant, "faq.jsonl", faq_jsonl())]  # fmt: skip
    bot = client.post(
        "/v1/support/bots",
        json={"name": "Helpdesk", "model": "chat", "files": files, "system_prompt": "Be brief."},
        headers=tenant.headers,
    ).json()
    url = f"/v1/support/bots/{bot['id']}/messages"
    first = client.post(
        url, json={"message": "Do you ship to Canada?", "max_tokens": 8}, headers=tenant.headers
    )
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["escalate"] is False and answer["escalation_reason"] is None
    top = answer["citations"][0]
    assert (top["ref"], top["title"]) == (
        "shipping-international-shipping", "Shipping > International shipping")  # fmt: skip
    assert 0 < answer["usage"]["completion_tokens"] <= 8 and answer["usage"]["prompt_tokens"] > 100
    embedded = sum(token_counter(str(default_model_path()))(["Do you ship to Canada?"]))
    assert answer["usage"]["embedding_tokens"] == embedded
    assert answer["finish_reason"] in ("stop", "length")
    conversation = answer["conversation_id"]
    # a bare follow-up, streamed: history steers retrieval to the same passage
    body = {"message": "And how much?", "conversation_id": conversation, "stream": True,
            "max_tokens": 8}  # fmt: skip
    with client.stream("POST", url, json=body, headers=tenant.headers) as streamed:
        assert streamed.status_code == 200
        lines = list(streamed.iter_lines())
    assert [x for x in lines if x][-1] == "data: [DONE]"
    chunks = _sse(lines)
    head = chunks[0]
    assert head["conversation_id"] == conversation and head["escalate"] is False
    assert head["citations"][0]["ref"] == "shipping-international-shipping"
    assert 0 < chunks[-1]["usage"]["completion_tokens"] <= 8
    streamed_text = "".join(c.get("delta", "") for c in chunks[:-1])
    human = client.post(
        url, json={"message": "I want a human", "conversation_id": conversation},
        headers=tenant.headers,
    ).json()  # fmt: skip
    assert human["escalate"] is True and human["escalation_reason"] == "human_requested"
    with database.session() as session:
        stored = session.scalars(
            select(Message)
            .where(Message.conversation_id == conversation)
            .order_by(Message.created_at)
        ).all()
        assert [m.role for m in stored] == ["user", "assistant"] * 3
        assert stored[3].content == streamed_text  # the streamed answer is the stored one
        assert stored[5].escalate and stored[5].completion_tokens == 0
    time.sleep(1)  # the escalation did not call the model: still two bills
    _billed(database, "qwen3-moe-tiny", 2)
    return bot["id"]


def _check_abandoned_answer(settings, database, tenant, bot_id: str) -> None:
    """A customer who closes the connection mid-stream: the replica bills what it generated
    and the conversation keeps the partial answer, once, marked ``abandoned``."""
    seen: list[dict] = []
    body = {"message": "Do you ship to Canada?", "stream": True, "max_tokens": 400,
            "temperature": 1.0}  # fmt: skip
    app = create_app(settings, db=database, limiter=MemoryLimiter())
    with (
        LiveServer(app) as server,
        httpx.Client(base_url=server.url, headers=tenant.headers, timeout=60) as http,
    ):
        url = f"/v1/support/bots/{bot_id}/messages"
        with http.stream("POST", url, json=body) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    seen.append(json.loads(line.removeprefix("data: ")))
                if len(seen) == 4:
                    break  # closing the unread response closes the connection
        stored = f"/v1/support/bots/{bot_id}/conversations/{seen[0]['conversation_id']}"
        deadline = time.monotonic() + 30
        read = http.get(stored)
        while read.status_code == 404 and time.monotonic() < deadline:  # stored as it stops
            time.sleep(0.2)
            read = http.get(stored)
    assert read.status_code == 200, read.text
    messages = read.json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    reply = messages[1]
    assert reply["id"] == seen[0]["id"] and reply["finish_reason"] == "abandoned"
    assert reply["content"].startswith("".join(c["delta"] for c in seen))
    assert 0 < reply["usage"]["completion_tokens"] < 400
    rows = _billed(database, "qwen3-moe-tiny", 3)  # the replica billed the abandoned one too
    aborted = [r for r in rows if r.finish_reason == "abort"]
    assert len(aborted) == 1  # it generated at least what the stored answer holds
    assert reply["usage"]["completion_tokens"] <= aborted[0].completion_tokens < 400
