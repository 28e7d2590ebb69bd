"""Support bots API without Ray: knowledge indexing, search (what a message would cite and
whether it escalates), escalated messages stored in conversations, history steering follow-ups,
the retrieval query's embedding billed and limited, validation, isolation. Conversations read
back and streamed turns stored: test_support_conversations.py. The model-answering path runs in
tests/e2e/test_apps_e2e.py."""

from __future__ import annotations

import json

from moeplane.modeling.embeddings import default_model_path, token_counter
from tests.factories import chat_jsonl, make_tenant, make_unchecked_file
from tests.unit.support.kb import HELP_CENTER_MD, HUMAN_REQUESTS, faq_jsonl


def _tokens(*texts: str) -> int:
    """What embedding ``texts`` costs, counted as the API must: the embedder's tokenizer."""
    return sum(token_counter(str(default_model_path()))(list(texts)))


def _upload(client, tenant, name: str, content: bytes, purpose: str = "knowledge") -> str:
    response = client.post(
        "/v1/files",
        headers=tenant.headers,
        data={"purpose": purpose},
        files={"file": (name, content, "text/plain")},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _setup(client, database, **bot):
    tenant = make_tenant(database)
    dep = client.post(
        "/v1/deployments", json={"name": "chat", "model": "qwen3-moe-tiny"}, headers=tenant.headers
    )
    assert dep.status_code == 201, dep.text
    files = [
        _upload(client, tenant, "help.md", HELP_CENTER_MD.encode()),
        _upload(client, tenant, "faq.jsonl", faq_jsonl()),
    ]
    body = {"name": "Helpdesk", "model": "chat", "files": files} | bot
    created = client.post("/v1/support/bots", json=body, headers=tenant.headers)
    assert created.status_code == 201, created.text
    return tenant, created.json()


def _search(client, tenant, bot_id, query, conversation_id=None):
    body = {"query": query} | ({"conversation_id": conversation_id} if conversation_id else {})
    response = client.post(f"/v1/support/bots/{bot_id}/search", json=body, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_bot_crud_and_index(client, database, catalog):
    tenant, bot = _setup(client, database, system_prompt="Be brief.")
    assert bot["object"] == "support.bot" and bot["id"].startswith("bot-")
    assert bot["status"] == "ready" and bot["passages"] == 10 and bot["model"] == "chat"
    assert bot["escalation_threshold"] == 0.2 and bot["system_prompt"] == "Be brief."
    listed = client.get("/v1/support/bots", headers=tenant.headers).json()
    assert [b["id"] for b in listed["data"]] == [bot["id"]] and listed["has_more"] is False
    assert client.get(f"/v1/support/bots/{bot['id']}", headers=tenant.headers).json() == bot

    faq_only = [bot["files"][1]]
    patched = client.patch(
        f"/v1/support/bots/{bot['id']}",
        json={"files": faq_only, "escalation_threshold": 0.5},
        headers=tenant.headers,
    ).json()
    assert patched["passages"] == 4 and patched["files"] == faq_only
    assert patched["escalation_threshold"] == 0.5
    found = _search(client, tenant, bot["id"], "Do you take PayPal?")
    assert found["passages"][0]["ref"] == "payment-methods"
    assert {p["ref"] for p in found["passages"]} <= {"gift-cards", "size-guide", "payment-methods",
                                                      "order-tracking"}  # fmt: skip

    deleted = client.delete(f"/v1/support/bots/{bot['id']}", headers=tenant.headers)
    assert deleted.json() == {"id": bot["id"], "object": "support.bot.deleted", "deleted": True}
    assert client.get(f"/v1/support/bots/{bot['id']}", headers=tenant.headers).status_code == 404


def test_search_cites_the_right_passage_and_escalates(client, database, catalog):
    tenant, bot = _setup(client, database)
    cases = {
        "How long does standard shipping take?": (
            "shipping-delivery-times", "Shipping > Delivery times"),
        "I forgot my password, what do I do?": (
            "account-resetting-your-password", "Account > Resetting your password"),
        "Can I buy a gift card for my sister?": ("gift-cards", "Do you sell gift cards?"),
    }  # fmt: skip
    for question, (ref, title) in cases.items():
        found = _search(client, tenant, bot["id"], question)
        top = found["passages"][0]
        assert (top["ref"], top["title"]) == (ref, title), (question, found)
        assert top["passage_id"].startswith("psg-") and found["escalate"] is False
    off_topic = _search(client, tenant, bot["id"], "What is the capital of Australia?")
    assert off_topic["escalate"] is True and off_topic["escalation_reason"] == "low_confidence"
    for request in HUMAN_REQUESTS:
        found = _search(client, tenant, bot["id"], request)
        assert found["escalation_reason"] == "human_requested", request


def test_escalated_messages_are_kept_and_steer_follow_ups(client, database, catalog):
    tenant, bot = _setup(client, database)
    url = f"/v1/support/bots/{bot['id']}/messages"
    first = client.post(url, json={"message": "I want a human"}, headers=tenant.headers)
    assert first.status_code == 200, first.text
    reply = first.json()
    assert reply["object"] == "support.message" and reply["escalate"] is True
    assert reply["escalation_reason"] == "human_requested" and "team" in reply["content"]
    assert reply["conversation_id"].startswith("conv-")
    # no model call, but the question was embedded for retrieval: that alone is billed
    embedded = _tokens("I want a human")
    assert reply["usage"] == {"prompt_tokens": 0, "completion_tokens": 0,
                              "embedding_tokens": embedded, "total_tokens": embedded}  # fmt: skip
    assert reply["finish_reason"] == "stop" and reply["role"] == "assistant"
    conversation = reply["conversation_id"]
    # an off-topic question in the same conversation, streamed: one chunk, usage, [DONE]
    with client.stream(
        "POST",
        url,
        json={"message": "Who won the football match?", "conversation_id": conversation,
              "stream": True},
        headers=tenant.headers,
    ) as streamed:  # fmt: skip
        lines = [line for line in streamed.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    head = json.loads(lines[0].removeprefix("data: "))
    assert head["conversation_id"] == conversation and head["escalate"] is True
    assert (
        head["escalation_reason"] == "low_confidence" and head["object"] == "support.message.chunk"
    )
    # history: the customer's last turn steers a bare follow-up
    asked = client.post(
        url, json={"message": "Do you ship to Canada? I want a human"}, headers=tenant.headers
    ).json()
    alone = _search(client, tenant, bot["id"], "And how much?")
    follow = _search(client, tenant, bot["id"], "And how much?", asked["conversation_id"])
    assert alone["escalate"] is True
    assert follow["escalate"] is False
    assert follow["passages"][0]["ref"] == "shipping-international-shipping"


def _prompt_tokens_billed(client, tenant) -> int:
    usage = client.get("/v1/usage", headers=tenant.headers).json()
    return usage["totals"].get("prompt_tokens", 0)


def test_retrieval_query_embedding_is_billed(client, database, catalog):
    tenant, bot = _setup(client, database)
    question = "Do you take PayPal?"
    found = _search(client, tenant, bot["id"], question)
    assert found["usage"] == {"embedding_tokens": _tokens(question),
                              "total_tokens": _tokens(question)}  # fmt: skip
    assert _prompt_tokens_billed(client, tenant) == _tokens(question)
    url = f"/v1/support/bots/{bot['id']}/messages"
    first = client.post(url, json={"message": "I want a human"}, headers=tenant.headers).json()
    # a follow-up embeds the previous customer turn too, to steer retrieval: both are billed
    follow = {"message": "a real person please", "conversation_id": first["conversation_id"]}
    second = client.post(url, json=follow, headers=tenant.headers).json()
    assert second["usage"]["embedding_tokens"] == _tokens("a real person please", "I want a human")
    with client.stream("POST", url, json={"message": "Talk to an agent", "stream": True},
                       headers=tenant.headers) as streamed:  # fmt: skip
        frames = [json.loads(x.removeprefix("data: ")) for x in streamed.iter_lines()
                  if x.startswith("data: {")]  # fmt: skip
    assert frames[-1]["usage"]["embedding_tokens"] == _tokens("Talk to an agent")
    billed = _tokens(question, "I want a human", "a real person please", "I want a human")
    billed += _tokens("Talk to an agent")
    assert _prompt_tokens_billed(client, tenant) == billed
    stored = client.get(
        f"/v1/support/bots/{bot['id']}/conversations/{first['conversation_id']}",
        headers=tenant.headers,
    ).json()
    per_turn = [_tokens("I want a human"), _tokens("a real person please", "I want a human")]
    embedded = [m["usage"]["embedding_tokens"] for m in stored["messages"]]
    assert embedded == [0, per_turn[0], 0, per_turn[1]]


def test_retrieval_embedding_counts_against_tpm_and_the_monthly_budget(client, database, catalog):
    question = "Do you take PayPal?"
    need = _tokens(question)
    tenant, bot = _setup(client, database)
    # room for two searches a minute, not three: the third is the 429 every inference route gives
    with database.session() as session:
        from moeplane.store.models import Quota

        session.get(Quota, tenant.id).tpm = 2 * need + need // 2
    search = f"/v1/support/bots/{bot['id']}/search"
    message = f"/v1/support/bots/{bot['id']}/messages"
    for _ in range(2):
        _search(client, tenant, bot["id"], question)
    for url, body in ((search, {"query": question}), (message, {"message": question})):
        limited = client.post(url, json=body, headers=tenant.headers)
        assert limited.status_code == 429, limited.text
        assert limited.json()["error"]["type"] == "rate_limit_error"
        assert int(limited.headers["Retry-After"]) >= 1
    assert _prompt_tokens_billed(client, tenant) == 2 * need  # denied work is not billed

    with database.session() as session:
        quota = session.get(Quota, tenant.id)
        quota.tpm, quota.monthly_tokens = 100_000, 2 * need + 1
    for url, body in ((search, {"query": question}), (message, {"message": "I want a human"})):
        spent = client.post(url, json=body, headers=tenant.headers)
        assert spent.status_code == 429, spent.text
        assert spent.json()["error"]["code"] == "monthly_tokens"
    assert _prompt_tokens_billed(client, tenant) == 2 * need
    listed = client.get(f"/v1/support/bots/{bot['id']}/conversations", headers=tenant.headers)
    assert listed.json()["data"] == []  # a refused message stores no turn


def test_messages_need_a_running_chat_deployment(client, database, catalog):
    tenant, bot = _setup(client, database)
    response = client.post(
        f"/v1/support/bots/{bot['id']}/messages",
        json={"message": "Do you take PayPal?"},
        headers=tenant.headers,
    )
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "deployment_not_ready"


def test_validation_names_the_field(client, database, settings, catalog):
    tenant, bot = _setup(client, database)
    md = bot["files"][0]
    tune = _upload(client, tenant, "t.jsonl", chat_jsonl(2), purpose="fine-tune")
    # uploads are checked now (tests/integration/api/test_files.py); a file from before is
    # still checked when a bot uses it
    content = b'{"question": "q", "answer": "a"}\n{oops\n'
    bad_faq = make_unchecked_file(
        database, settings.storage_uri, tenant.id, "knowledge", "bad.jsonl", content
    )
    cases = [
        ({"model": "nope"}, 404, "model"),
        ({"files": []}, 422, "files"),
        ({"files": ["file-missing"]}, 404, "files"),
        ({"files": [tune]}, 422, "files"),
        ({"files": [bad_faq]}, 422, "files"),
        ({"escalation_threshold": 3}, 422, "escalation_threshold"),
        ({"surprise": 1}, 422, "surprise"),
    ]
    for extra, status, param in cases:
        body = {"name": "b", "model": "chat", "files": [md]} | extra
        response = client.post("/v1/support/bots", json=body, headers=tenant.headers)
        assert response.status_code == status, (extra, response.text)
        assert response.json()["error"]["param"] == param, (extra, response.text)
    bad = client.post("/v1/support/bots", json={"name": "b", "model": "chat", "files": [bad_faq]},
                      headers=tenant.headers)  # fmt: skip
    assert "line 2" in bad.json()["error"]["message"]
    assert len(client.get("/v1/support/bots", headers=tenant.headers).json()["data"]) == 1


def test_isolation(client, database, catalog):
    tenant, bot = _setup(client, database)
    other = make_tenant(database)
    base = f"/v1/support/bots/{bot['id']}"
    calls = [
        ("GET", base, None),
        ("PATCH", base, {"name": "x"}),
        ("DELETE", base, None),
        ("POST", f"{base}/messages", {"message": "hi"}),
        ("POST", f"{base}/search", {"query": "hi"}),
    ]
    for method, url, body in calls:
        response = client.request(method, url, json=body, headers=other.headers)
        assert response.status_code == 404, (method, url, response.text)
    assert client.get("/v1/support/bots", headers=other.headers).json()["data"] == []
    # another tenant's files and conversations are not theirs either
    other_dep = client.post(
        "/v1/deployments", json={"name": "chat", "model": "qwen3-moe-tiny"}, headers=other.headers
    )
    assert other_dep.status_code == 201
    body = {"name": "b", "model": "chat", "files": bot["files"]}
    stolen = client.post("/v1/support/bots", json=body, headers=other.headers)
    assert stolen.status_code == 404 and stolen.json()["error"]["param"] == "files"
    conv = client.post(f"{base}/messages", json={"message": "I want a human"},
                       headers=tenant.headers).json()["conversation_id"]  # fmt: skip
    own = _upload(client, other, "kb.md", HELP_CENTER_MD.encode())
    mine = client.post("/v1/support/bots", json=body | {"files": [own]}, headers=other.headers)
    probe = client.post(
        f"/v1/support/bots/{mine.json()['id']}/search",
        json={"query": "hi", "conversation_id": conv},
        headers=other.headers,
    )
    assert probe.status_code == 404 and probe.json()["error"]["param"] == "conversation_id"


def test_eval_support_command(
    app, client, database, settings, catalog, live_server_factory, tmp_path
):
    import os
    import subprocess
    import sys

    from tests.unit.support.kb import QUESTIONS

    tenant, bot = _setup(client, database)
    server = live_server_factory(app)
    lines = [{"question": q, "passage": ref} for q, ref in QUESTIONS]
    lines += [{"question": h, "passage": None, "escalate": True} for h in HUMAN_REQUESTS]
    path = tmp_path / "questions.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOEPLANE_")} | {
        "MOEPLANE_HOME": str(settings.home),
        "MOEPLANE_API_URL": server.url,
        "MOEPLANE_API_KEY": tenant.key,
    }
    run = subprocess.run(
        [sys.executable, "-m", "moeplane.cli", "eval", "support", bot["id"], str(path), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    metrics = json.loads(run.stdout)
    assert metrics["questions"] == len(lines) and metrics["answerable"] == 10
    assert metrics["hit_at_1"] >= 0.9 and metrics["hit_at_3"] == 1.0
    assert metrics["escalation_precision"] == 1.0 and metrics["escalation_recall"] == 1.0
