"""The customer-support bot: ``/v1/support/bots`` and their messages.

An answer is retrieval (in this process: `moeplane.serving.support`) and then, unless the bot
escalates, a generation on the bot's chat deployment through the same metered path as
``/v1/chat/completions`` (`moeplane.api.metered`): tpm reservation, monthly budget, 503s,
engine-side billing, SSE. Escalations are answered with a hand-off message without calling the
model. Routes are async and use short transactions, so no database transaction (nor SQLite's
write lock) is held while passages are embedded or the model generates.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from moeplane.api.deps import Pagination, TenantNow, TenantScope, in_short_transaction
from moeplane.api.metered import collect, open_generation, reserve_prompt, sse, stream_sse
from moeplane.api.schemas.common import ListPage
from moeplane.api.schemas.support import (
    BotCreate,
    BotDeleted,
    BotPublic,
    BotUpdate,
    MessageCreate,
    MessagePublic,
    SearchRequest,
    SearchResult,
)
from moeplane.serving import support
from moeplane.store.audit import audit
from moeplane.store.ids import new_id
from moeplane.store.models import Bot
from moeplane.store.scoping import get_owned, page, scoped
from moeplane.support import HANDOFF, build_messages

router = APIRouter(prefix="/v1/support/bots", tags=["support"])


async def _index(request: Request, files: list[support.KnowledgeFile]) -> support.IndexedPassages:
    storage = request.app.state.storage
    return await run_in_threadpool(
        lambda: support.embed_passages(storage, files, support.shared_embedder())
    )


@router.post("", response_model=BotPublic, status_code=201)
async def create_bot(body: BotCreate, request: Request, tenant: TenantNow):
    def check(session) -> list[support.KnowledgeFile]:  # type: ignore[no-untyped-def]
        support.check_chat_model(session, tenant.id, body.model)
        return support.knowledge_files(session, tenant.id, body.files)

    files = await in_short_transaction(request, check)
    index = await _index(request, files)
    spec = support.BotSpec(**body.model_dump(exclude={"files"}), file_ids=body.files)

    def write(session) -> BotPublic:  # type: ignore[no-untyped-def]
        bot = support.write_bot(session, tenant.id, None, spec, index)
        audit(session, tenant.actor, "bot.create", target_id=bot.id)
        return BotPublic.of(bot)

    return await in_short_transaction(request, write)


@router.get("", response_model=ListPage[BotPublic])
async def list_bots(request: Request, tenant: TenantNow, pagination: Pagination):
    def read(session) -> ListPage[BotPublic]:  # type: ignore[no-untyped-def]
        stmt = scoped(Bot, tenant.id)
        rows, has_more = page(session, stmt, Bot.id, limit=pagination.limit, after=pagination.after)
        return ListPage(data=[BotPublic.of(b) for b in rows], has_more=has_more)

    return await in_short_transaction(request, read)


def _get(session, tenant: TenantScope, bot_id: str) -> Bot:  # type: ignore[no-untyped-def]
    return get_owned(session, Bot, tenant.id, bot_id, label="bot", param="bot_id")


@router.get("/{bot_id}", response_model=BotPublic)
async def get_bot(bot_id: str, request: Request, tenant: TenantNow):
    return await in_short_transaction(request, lambda s: BotPublic.of(_get(s, tenant, bot_id)))


@router.patch("/{bot_id}", response_model=BotPublic)
async def update_bot(bot_id: str, body: BotUpdate, request: Request, tenant: TenantNow):
    def check(session) -> list[support.KnowledgeFile] | None:  # type: ignore[no-untyped-def]
        _get(session, tenant, bot_id)
        if body.model is not None:
            support.check_chat_model(session, tenant.id, body.model)
        return support.knowledge_files(session, tenant.id, body.files) if body.files else None

    files = await in_short_transaction(request, check)
    index = await _index(request, files) if files is not None else None
    change = support.BotChange(**body.model_dump(exclude={"files"}), file_ids=body.files)

    def write(session) -> BotPublic:  # type: ignore[no-untyped-def]
        bot = support.write_bot(session, tenant.id, _get(session, tenant, bot_id), change, index)
        audit(session, tenant.actor, "bot.update", target_id=bot.id)
        return BotPublic.of(bot)

    return await in_short_transaction(request, write)


@router.delete("/{bot_id}", response_model=BotDeleted)
async def delete_bot(bot_id: str, request: Request, tenant: TenantNow):
    def remove(session) -> BotDeleted:  # type: ignore[no-untyped-def]
        bot = support.delete_bot(session, tenant.id, bot_id)
        audit(session, tenant.actor, "bot.delete", target_id=bot.id)
        return BotDeleted(id=bot.id)

    return await in_short_transaction(request, remove)


async def _retrieve(
    request: Request, tenant: TenantScope, bot_id: str, text: str, conversation_id: str | None
) -> tuple[support.BotContext, support.Retrieval]:
    ctx = await in_short_transaction(
        request, support.load_context, tenant.id, bot_id, conversation_id
    )
    found = await run_in_threadpool(support.retrieve, ctx, text, support.shared_embedder())
    return ctx, found


@router.post("/{bot_id}/search", response_model=SearchResult)
async def search(bot_id: str, body: SearchRequest, request: Request, tenant: TenantNow):
    """The passages a message would cite and whether it would escalate (no model call, not
    billed): for checking a knowledge base, and what ``moeplane eval support`` measures."""
    _, found = await _retrieve(request, tenant, bot_id, body.query, body.conversation_id)
    return SearchResult(
        passages=found.citations,
        confidence=found.confidence,
        escalate=found.escalation_reason is not None,
        escalation_reason=found.escalation_reason,
    )


class _Turn:
    """One message's bookkeeping: ids chosen up front (the first chunk carries them)."""

    def __init__(self, request: Request, tenant: TenantScope, ctx, body: MessageCreate):
        self.request, self.tenant, self.ctx, self.body = request, tenant, ctx, body
        self.conversation_id = body.conversation_id or new_id("conv")
        self.message_id = new_id("msg")

    async def save(self, reply: support.Reply) -> MessagePublic:
        def write(session) -> MessagePublic:  # type: ignore[no-untyped-def]
            message = support.record_turn(
                session,
                self.tenant.id,
                self.ctx.bot_id,
                self.conversation_id,
                self.body.message,
                reply,
                new_conversation=self.body.conversation_id is None,
                message_id=self.message_id,
            )
            return MessagePublic.of(message)

        return await in_short_transaction(self.request, write)

    def head(self, found: support.Retrieval) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "object": "support.message.chunk",
            "conversation_id": self.conversation_id,
            "citations": found.citations,
            "escalate": found.escalation_reason is not None,
            "escalation_reason": found.escalation_reason,
            "confidence": found.confidence,
        }


@router.post("/{bot_id}/messages", response_model=MessagePublic)
async def send_message(bot_id: str, body: MessageCreate, request: Request, tenant: TenantNow):
    """Answer with citations; ``stream: true`` sends SSE chunks (the first carries the
    conversation id and citations), then ``[DONE]``."""
    ctx, found = await _retrieve(request, tenant, bot_id, body.message, body.conversation_id)
    turn = _Turn(request, tenant, ctx, body)
    reason = found.escalation_reason
    if reason is not None:
        reply = support.Reply(HANDOFF[reason], found.citations, reason, found.confidence)
        saved = await turn.save(reply)
        if not body.stream:
            return saved
        usage = saved.usage.model_dump()
        frames = [turn.head(found) | {"delta": reply.content, "finish_reason": "stop"}]
        frames += [{"id": turn.message_id, "object": "support.message.chunk", "usage": usage}]
        return StreamingResponse(
            _replay(frames), media_type="text/event-stream"
        )  # nothing to wait for: one chunk, usage, done
    messages = build_messages(ctx.system_prompt, found.passages, ctx.history, body.message)
    target, prompt_ids, call = await reserve_prompt(
        request, tenant, ctx.model, lambda g, t: g.encode_chat(t, messages), body.max_tokens
    )
    payload = {
        "request_id": new_id("req"),
        "tenant_id": tenant.id,
        "prompt_ids": prompt_ids,
        "max_tokens": body.max_tokens,
        "sampling": {"temperature": body.temperature, "top_p": 1.0, "seed": None},
        "stop": [],
    }
    first, chunks = await open_generation(request, target, payload, call)
    if body.stream:
        return StreamingResponse(
            _stream(turn, found, first, chunks, call), media_type="text/event-stream"
        )
    text, last = await collect(first, chunks, call)
    return await turn.save(_reply(text, last, found))


def _reply(text: str, last: dict[str, Any], found: support.Retrieval) -> support.Reply:
    return support.Reply(
        content=text,
        citations=found.citations,
        escalation_reason=None,
        confidence=found.confidence,
        prompt_tokens=last["prompt_tokens"],
        completion_tokens=last["completion_tokens"],
    )


async def _replay(frames: list[dict[str, Any]]):
    for frame in frames:
        yield sse(frame)
    yield sse("[DONE]")


async def _stream(turn: _Turn, found: support.Retrieval, first, chunks, call):
    """Chat-completions-style SSE; the turn is stored once the generation finished."""
    parts: list[str] = []
    last: dict[str, Any] = first

    def frame(chunk: dict[str, Any], is_first: bool, usage: bool = False) -> dict[str, Any]:
        nonlocal last
        last = chunk
        if usage:
            tokens = {k: chunk[k] for k in ("prompt_tokens", "completion_tokens")}
            tokens["total_tokens"] = sum(tokens.values())
            return {"id": turn.message_id, "object": "support.message.chunk", "usage": tokens}
        parts.append(chunk["text"])
        base = turn.head(found) if is_first else {"id": turn.message_id}
        if not is_first:
            base["object"] = "support.message.chunk"
        return base | {"delta": chunk["text"], "finish_reason": chunk["finish_reason"]}

    finished = False
    async for data in stream_sse(first, chunks, call, frame, include_usage=True):
        finished = finished or data == sse("[DONE]")
        if finished:  # store before [DONE], so a client that reads on sees the turn
            await turn.save(_reply("".join(parts), last, found))
        yield data
