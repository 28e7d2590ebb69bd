"""The customer-support bot: ``/v1/support/bots`` and their messages.

An answer is retrieval (in this process: `moeplane.serving.support`) and then, unless the bot
escalates, a generation on the bot's chat deployment through the same metered path as
``/v1/chat/completions`` (`moeplane.api.metered`): tpm reservation, monthly budget, 503s,
engine-side billing, SSE. Escalations are answered with a hand-off message without calling the
model. The retrieval query is embedded in this process, so its tokens are reserved and billed
here (`reserve_in_process`, `bill_in_process`), for messages and searches alike. A turn is
stored exactly once: when the answer is complete, or, when a streaming client leaves, with
what it was sent (finish reason ``abandoned``). Routes are async and use short transactions, so
no database transaction (nor SQLite's write lock) is held while passages are embedded or the
model generates.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from moeplane.api.deps import Pagination, TenantNow, TenantScope, in_short_transaction
from moeplane.api.metered import (
    bill_in_process,
    collect,
    open_generation,
    reserve_in_process,
    reserve_prompt,
    sse,
    stream_sse,
)
from moeplane.api.schemas.common import ListPage
from moeplane.api.schemas.support import (
    BotCreate,
    BotDeleted,
    BotPublic,
    BotUpdate,
    ConversationDetail,
    ConversationPublic,
    MessageCreate,
    MessagePublic,
    SearchRequest,
    SearchResult,
    SearchUsage,
    SupportUsage,
)
from moeplane.serving import conversations, support
from moeplane.serving.conversations import Reply
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
) -> tuple[support.BotContext, support.Retrieval, int]:
    """The bot's context and what retrieval found for ``text``, and the embedding tokens it
    cost: counted with the embedder's tokenizer, reserved (monthly budget, tpm: 429 when
    short) before embedding, billed once embedded."""
    embedder = support.shared_embedder()

    def measure(session) -> tuple[support.BotContext, int]:  # type: ignore[no-untyped-def]
        ctx = support.load_context(session, tenant.id, bot_id, conversation_id)
        return ctx, sum(embedder.count_tokens(support.query_texts(ctx, text)))

    ctx, call = await reserve_in_process(request, tenant, measure)
    try:
        found = await run_in_threadpool(support.retrieve, ctx, text, embedder)
    except BaseException:
        call.settle(0)
        raise
    await bill_in_process(request, tenant, call, call.reserved)
    return ctx, found, call.reserved


@router.post("/{bot_id}/search", response_model=SearchResult)
async def search(bot_id: str, body: SearchRequest, request: Request, tenant: TenantNow):
    """The passages a message would cite and whether it would escalate, without calling the
    model: for checking a knowledge base, and what ``moeplane eval support`` measures. The
    query's embedding is billed (``usage``)."""
    _, found, tokens = await _retrieve(request, tenant, bot_id, body.query, body.conversation_id)
    return SearchResult(
        passages=found.citations,
        confidence=found.confidence,
        escalate=found.escalation_reason is not None,
        escalation_reason=found.escalation_reason,
        usage=SearchUsage(embedding_tokens=tokens, total_tokens=tokens),
    )


@router.get("/{bot_id}/conversations", response_model=ListPage[ConversationPublic])
async def list_conversations(
    bot_id: str, request: Request, tenant: TenantNow, pagination: Pagination
):
    """The bot's conversations, newest first."""

    def read(session) -> ListPage[ConversationPublic]:  # type: ignore[no-untyped-def]
        rows, has_more = conversations.list_conversations(
            session, tenant.id, bot_id, limit=pagination.limit, after=pagination.after
        )
        return ListPage(data=[ConversationPublic.of(c) for c in rows], has_more=has_more)

    return await in_short_transaction(request, read)


@router.get("/{bot_id}/conversations/{conversation_id}", response_model=ConversationDetail)
async def get_conversation(bot_id: str, conversation_id: str, request: Request, tenant: TenantNow):
    """One conversation with its messages, oldest first (customer and bot turns)."""

    def read(session) -> ConversationDetail:  # type: ignore[no-untyped-def]
        found = conversations.read_conversation(session, tenant.id, bot_id, conversation_id)
        return ConversationDetail.with_messages(*found)

    return await in_short_transaction(request, read)


class _Turn:
    """One message's bookkeeping: ids chosen up front (the first chunk carries them), the
    retrieval's embedding tokens, and whether the turn is stored (once, whatever ends it)."""

    def __init__(
        self, request: Request, tenant: TenantScope, ctx, body: MessageCreate, embedded: int
    ):
        self.request, self.tenant, self.ctx, self.body = request, tenant, ctx, body
        self.embedding_tokens = embedded
        self.conversation_id = body.conversation_id or new_id("conv")
        self.message_id = new_id("msg")
        self.saved = False

    async def save(self, reply: Reply) -> MessagePublic:
        """Store the turn; shielded, so a client leaving mid-write cannot leave it half-done
        (or done and not marked as such)."""
        assert not self.saved, "a turn is stored once"
        self.saved = True

        def write(session) -> MessagePublic:  # type: ignore[no-untyped-def]
            message = conversations.record_turn(
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

        with anyio.CancelScope(shield=True):
            return await in_short_transaction(self.request, write)

    def reply(
        self, text: str, last: dict[str, Any], found: support.Retrieval, finish_reason: str
    ) -> Reply:
        """The model's answer (``last``: the final chunk seen, with the token counts)."""
        return Reply(
            content=text,
            citations=found.citations,
            escalation_reason=None,
            confidence=found.confidence,
            prompt_tokens=last["prompt_tokens"],
            completion_tokens=last["completion_tokens"],
            embedding_tokens=self.embedding_tokens,
            finish_reason=finish_reason,
        )

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
    ctx, found, embedded = await _retrieve(
        request, tenant, bot_id, body.message, body.conversation_id
    )
    turn = _Turn(request, tenant, ctx, body, embedded)
    reason = found.escalation_reason
    if reason is not None:
        reply = Reply(
            HANDOFF[reason], found.citations, reason, found.confidence, embedding_tokens=embedded
        )
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
    return await turn.save(turn.reply(text, last, found, last["finish_reason"]))


async def _replay(frames: list[dict[str, Any]]):
    for frame in frames:
        yield sse(frame)
    yield sse("[DONE]")


_DONE = sse("[DONE]")


async def _stream(turn: _Turn, found: support.Retrieval, first, chunks, call):
    """Chat-completions-style SSE. The turn is stored once: before ``[DONE]`` when the
    generation finished, or with what was sent (finish reason ``abandoned``) when the client
    leaves mid-stream: Starlette cancels this generator, or closes it, at the point it waits.
    A replica failing mid-stream is reported in-band and stores nothing, as the 503 of a
    non-streamed message does."""
    parts: list[str] = []
    last: dict[str, Any] = first

    def frame(chunk: dict[str, Any], is_first: bool, usage: bool = False) -> dict[str, Any]:
        nonlocal last
        last = chunk
        if usage:
            tokens = SupportUsage.of(
                chunk["prompt_tokens"], chunk["completion_tokens"], turn.embedding_tokens
            )
            return {
                "id": turn.message_id,
                "object": "support.message.chunk",
                "usage": tokens.model_dump(),
            }
        parts.append(chunk["text"])
        base = turn.head(found) if is_first else {"id": turn.message_id}
        if not is_first:
            base["object"] = "support.message.chunk"
        return base | {"delta": chunk["text"], "finish_reason": chunk["finish_reason"]}

    ended = False
    try:
        frames = stream_sse(first, chunks, call, frame, include_usage=True)
        async with aclosing(frames):  # on abandonment: settle and stop the replica first
            async for data in frames:
                if data == _DONE:  # store before [DONE], so a client that reads on sees the turn
                    await turn.save(turn.reply("".join(parts), last, found, last["finish_reason"]))
                yield data
        ended = True
    finally:
        if not ended and not turn.saved:
            await turn.save(turn.reply("".join(parts), last, found, "abandoned"))
