"""Support conversations read back (list, one with its messages, isolation), and a streamed
answer's turn stored exactly once: complete, or abandoned by the client mid-stream.

Without Ray there is no chat replica, so the streamed path is driven here through the route's
own SSE generator over scripted engine chunks, with the real database and the same cancellation
Starlette applies when a client disconnects; the real disconnect over HTTP against a real replica
is in tests/e2e/test_apps_e2e.py.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import anyio
from starlette.requests import Request

from moeplane.api.routes.support import _stream, _Turn
from moeplane.api.schemas.support import MessageCreate
from moeplane.serving.support import Retrieval
from tests.factories import make_tenant
from tests.integration.api.test_support import _setup


def _ask(client, tenant, bot_id, message, conversation_id=None):
    body = {"message": message} | ({"conversation_id": conversation_id} if conversation_id else {})
    url = f"/v1/support/bots/{bot_id}/messages"
    response = client.post(url, json=body, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_conversations_list_and_read_back(client, database, catalog):
    tenant, bot = _setup(client, database)
    base = f"/v1/support/bots/{bot['id']}/conversations"
    first = _ask(client, tenant, bot["id"], "I want a human")
    conv = first["conversation_id"]
    second = _ask(client, tenant, bot["id"], "Who won the football match?", conv)
    others = [_ask(client, tenant, bot["id"], "talk to an agent")["conversation_id"]
              for _ in range(2)]  # fmt: skip

    read = client.get(f"{base}/{conv}", headers=tenant.headers)
    assert read.status_code == 200, read.text
    detail = read.json()
    assert detail["id"] == conv and detail["object"] == "support.conversation"
    assert detail["bot_id"] == bot["id"] and detail["escalated"] is True
    assert detail["created_at"] <= detail["updated_at"]
    messages = detail["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "I want a human"), ("assistant", first["content"]),
        ("user", "Who won the football match?"), ("assistant", second["content"]),
    ]  # fmt: skip
    assert [m["id"] for m in messages[1::2]] == [first["id"], second["id"]]
    assert messages[1] == first and messages[3] == second  # as answered, field for field
    assert [m["finish_reason"] for m in messages] == [None, "stop", None, "stop"]
    assert [m["escalation_reason"] for m in messages[1::2]] == ["human_requested",
                                                               "low_confidence"]  # fmt: skip
    assert messages[0]["citations"] == [] and messages[0]["escalate"] is False
    assert messages[3]["citations"] and messages[3]["citations"][0]["passage_id"].startswith("psg-")
    assert all(isinstance(m["created_at"], int) for m in messages)

    listed = client.get(base, params={"limit": 2}, headers=tenant.headers).json()
    assert listed["object"] == "list" and listed["has_more"] is True
    assert [c["id"] for c in listed["data"]] == others[::-1]  # newest first
    rest = client.get(base, params={"limit": 2, "after": others[0]}, headers=tenant.headers).json()
    assert [c["id"] for c in rest["data"]] == [conv] and rest["has_more"] is False
    assert "messages" not in rest["data"][0]
    assert client.get(base, params={"limit": 0}, headers=tenant.headers).status_code == 422


def test_conversations_are_scoped_to_tenant_and_bot(client, database, catalog):
    tenant, bot = _setup(client, database)
    conv = _ask(client, tenant, bot["id"], "I want a human")["conversation_id"]
    base = f"/v1/support/bots/{bot['id']}/conversations"
    # the same tenant's second bot: its conversations are its own
    body = {"name": "Second", "model": "chat", "files": bot["files"][:1]}
    twin = client.post("/v1/support/bots", json=body, headers=tenant.headers).json()
    twin_base = f"/v1/support/bots/{twin['id']}/conversations"
    crossed = client.get(f"{twin_base}/{conv}", headers=tenant.headers)
    assert crossed.status_code == 404 and crossed.json()["error"]["param"] == "conversation_id"
    assert client.get(twin_base, headers=tenant.headers).json()["data"] == []
    missing = client.get(f"{base}/conv-missing", headers=tenant.headers)
    assert missing.status_code == 404
    # another tenant sees neither the bot nor the conversation, even under its own bot
    other = make_tenant(database)
    for url in (base, f"{base}/{conv}"):
        hidden = client.get(url, headers=other.headers)
        assert hidden.status_code == 404 and hidden.json()["error"]["param"] == "bot_id", url
    assert client.get("/v1/support/bots/bot-missing/conversations",
                      headers=tenant.headers).status_code == 404  # fmt: skip
    # deleting the bot deletes its conversations
    client.delete(f"/v1/support/bots/{bot['id']}", headers=tenant.headers)
    assert client.get(f"{base}/{conv}", headers=tenant.headers).status_code == 404


# -- a streamed answer's turn, stored once -------------------------------------------------


def _chunk(text: str, n: int, finish_reason: str | None = None) -> dict:
    return {"text": text, "finish_reason": finish_reason, "prompt_tokens": 40,
            "completion_tokens": n}  # fmt: skip


class _Reservation:
    def __init__(self) -> None:
        self.settled: list[int] = []

    def settle(self, actual: int) -> None:
        self.settled.append(actual)


def _stream_turn(app, tenant, bot_id, script, *, leave_after=None, leave_by="cancel"):
    """Run the route's SSE generator for one streamed answer: ``script`` is the replica's
    chunks after the first (an exception is raised where it stands; after the last, the replica
    is slow). The client reads ``leave_after`` frames, then leaves: Starlette either cancels the
    response task while the generator waits for the replica (``cancel``) or drops and closes
    the generator (``close``). Returns (frames read, conversation id, reservation)."""
    request = Request({"type": "http", "app": app, "headers": []})
    body = MessageCreate(message="Do you take PayPal?", stream=True)
    turn = _Turn(request, SimpleNamespace(id=tenant.id), SimpleNamespace(bot_id=bot_id), body, 7)
    citation = {"passage_id": "psg-x", "ref": "payment-methods", "title": "Pay", "score": 0.5}
    found = Retrieval([citation], [("Pay", "We take PayPal.")], 0.5, None)
    call = _Reservation()

    async def replica():
        for item in script:
            if isinstance(item, Exception):
                raise item
            yield item
            if item["finish_reason"] is not None:
                return
        await anyio.sleep_forever()  # still generating when the client goes

    async def client():
        frames: list[bytes] = []
        chunks = replica()
        sse = _stream(turn, found, _chunk("We", 1), chunks, call)
        async with anyio.create_task_group() as group:

            async def leave() -> None:  # as Starlette does when the client disconnects
                await anyio.sleep(0.05)  # by now the generator waits on the replica
                group.cancel_scope.cancel()

            async def read() -> None:
                async for frame in sse:
                    frames.append(frame)
                    if leave_after is not None and len(frames) == leave_after:
                        if leave_by == "close":
                            await sse.aclose()
                            return
                        group.start_soon(leave)

            group.start_soon(read)
        return frames

    frames = anyio.run(client)
    return frames, turn.conversation_id, call


def _stored(client, tenant, bot_id, conversation_id):
    url = f"/v1/support/bots/{bot_id}/conversations/{conversation_id}"
    return client.get(url, headers=tenant.headers)


def test_a_complete_stream_is_stored_once(app, client, database, catalog):
    tenant, bot = _setup(client, database)
    script = [_chunk(" take", 2), _chunk(" PayPal.", 3, "stop")]
    frames, conv, call = _stream_turn(app, tenant, bot["id"], script)
    assert frames[-1] == b"data: [DONE]\n\n"
    usage = json.loads(frames[-2].decode().removeprefix("data: "))["usage"]
    assert usage == {"prompt_tokens": 40, "completion_tokens": 3, "embedding_tokens": 7,
                     "total_tokens": 50}  # fmt: skip
    messages = _stored(client, tenant, bot["id"], conv).json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    reply = messages[1]
    assert reply["content"] == "We take PayPal." and reply["finish_reason"] == "stop"
    assert reply["usage"] == usage and call.settled == [43]


def test_an_abandoned_stream_keeps_what_was_sent(app, client, database, catalog):
    tenant, bot = _setup(client, database)
    for leave_by in ("cancel", "close"):
        script = [_chunk(" take", 2), _chunk(" Pay", 3)]
        frames, conv, call = _stream_turn(
            app, tenant, bot["id"], script, leave_after=3, leave_by=leave_by
        )
        assert len(frames) == 3 and b"[DONE]" not in b"".join(frames)
        response = _stored(client, tenant, bot["id"], conv)
        assert response.status_code == 200, (leave_by, response.text)
        messages = response.json()["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"], leave_by
        reply = messages[1]
        assert reply["content"] == "We take Pay" and reply["finish_reason"] == "abandoned"
        assert reply["usage"]["completion_tokens"] == 3 and reply["usage"]["embedding_tokens"] == 7
        assert call.settled == [43], leave_by  # the reservation is settled once, to what ran
    # a later turn in the conversation sees the partial answer as history, in order
    follow = _ask(client, tenant, bot["id"], "I want a human", conv)
    roles = [m["role"] for m in _stored(client, tenant, bot["id"], conv).json()["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"] and follow["escalate"] is True


def test_a_replica_failing_mid_stream_stores_nothing(app, client, database, catalog):
    tenant, bot = _setup(client, database)
    frames, conv, call = _stream_turn(
        app, tenant, bot["id"], [_chunk(" take", 2), RuntimeError("shard died")]
    )
    error = json.loads(frames[-1].decode().removeprefix("data: "))
    assert error["error"]["code"] == "replica_failed"
    assert _stored(client, tenant, bot["id"], conv).status_code == 404  # as a 503 would
    assert call.settled == [42]
