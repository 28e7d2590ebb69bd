"""The customer-support bot: bots over knowledge bases, retrieval, conversations.

A bot is a knowledge base (the tenant's files of purpose ``knowledge``), a chat model (one of
the tenant's ``llm`` deployments), a system prompt and an escalation threshold. Creating or
re-pointing a bot indexes its files: parsed into passages (`moeplane.support.knowledge`), each
embedded with all-MiniLM-L6-v2 in this process (a knowledge base of a few thousand passages
embeds in seconds on a CPU) and stored with its vector. Answering a message embeds the
question (with the previous turn, for follow-ups), ranks the passages (dense + keyword,
`moeplane.support.retrieval`), and either escalates or asks the chat deployment through the
same gateway path as ``/v1/chat/completions`` (the route does that part). Conversations are
stored and read back by `moeplane.serving.conversations`.

Database work is split into short functions called in short transactions: nothing here holds a
transaction while a model runs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from moeplane.errors import InvalidRequest, NotFound
from moeplane.files import get_file
from moeplane.modeling.embeddings import EmbeddingModel
from moeplane.serving.conversations import get_conversation, messages_of
from moeplane.storage import Storage
from moeplane.store.ids import new_id
from moeplane.store.models import (
    Bot,
    Conversation,
    Deployment,
    KnowledgePassage,
    Message,
)
from moeplane.store.scoping import get_owned, scoped
from moeplane.support import (
    KeywordIndex,
    Passage,
    RetrievalConfig,
    Turn,
    escalation_reason,
    parse_knowledge,
    query_terms,
    rank,
)

__all__ = [
    "BotChange",
    "BotContext",
    "BotSpec",
    "KnowledgeFile",
    "Retrieval",
    "check_chat_model",
    "delete_bot",
    "embed_passages",
    "knowledge_files",
    "load_context",
    "query_texts",
    "retrieve",
    "shared_embedder",
    "write_bot",
]

DEFAULT_THRESHOLD = 0.2  # top hybrid score below which a question goes to a person
MAX_KNOWLEDGE_FILES = 20
MAX_PASSAGES = 5000
TOP_K = 3  # passages in the prompt and in the citations


@functools.cache
def shared_embedder() -> EmbeddingModel:
    """One all-MiniLM-L6-v2 per process (loads in ~1 s; ~90 MB)."""
    return EmbeddingModel()


@dataclass
class BotSpec:
    name: str
    model: str
    file_ids: list[str]
    system_prompt: str = ""
    escalation_threshold: float = DEFAULT_THRESHOLD


@dataclass
class BotChange:
    """A PATCH: None = unchanged. New files re-index the bot."""

    name: str | None = None
    model: str | None = None
    file_ids: list[str] | None = None
    system_prompt: str | None = None
    escalation_threshold: float | None = None


@dataclass(frozen=True)
class KnowledgeFile:
    id: str
    filename: str
    storage_key: str


def check_chat_model(db: Session, tenant_id: str, model: str) -> None:
    """The bot's model must name one of the tenant's chat deployments (by name, id or model)."""
    rows = db.scalars(scoped(Deployment, tenant_id).where(Deployment.kind == "llm")).all()
    if not any(model in (d.name, d.id, d.model) for d in rows):
        raise NotFound(
            f"No chat deployment serves '{model}': create one with POST /v1/deployments",
            param="model",
            code="model_not_deployed",
        )


def knowledge_files(db: Session, tenant_id: str, file_ids: list[str]) -> list[KnowledgeFile]:
    """The tenant's files, each of purpose ``knowledge`` (another tenant's file is a 404)."""
    if not file_ids:
        raise InvalidRequest("a bot needs at least one knowledge file", param="files")
    if len(file_ids) > MAX_KNOWLEDGE_FILES or len(set(file_ids)) != len(file_ids):
        raise InvalidRequest(
            f"give 1-{MAX_KNOWLEDGE_FILES} distinct knowledge files", param="files"
        )
    out = []
    for file_id in file_ids:
        record = get_file(db, tenant_id, file_id, param="files")
        if record.purpose != "knowledge":
            raise InvalidRequest(
                f"{file_id} has purpose '{record.purpose}'; upload it with purpose 'knowledge'",
                param="files",
            )
        out.append(KnowledgeFile(record.id, record.filename, record.storage_key))
    return out


@dataclass
class IndexedPassages:
    file_ids: list[str]
    passages: list[Passage]
    vectors: np.ndarray  # (passages, dim) float32, unit rows
    sources: list[str] = field(default_factory=list)  # file id per passage


def embed_passages(
    storage: Storage, files: list[KnowledgeFile], embedder: EmbeddingModel
) -> IndexedPassages:
    """Parse every file into passages and embed them (no database: call outside a transaction)."""
    passages: list[Passage] = []
    sources: list[str] = []
    for f in files:
        parsed = parse_knowledge(f.filename, storage.read_bytes(f.storage_key))
        passages += parsed
        sources += [f.id] * len(parsed)
    if len(passages) > MAX_PASSAGES:
        raise InvalidRequest(
            f"the knowledge base has {len(passages)} passages; at most {MAX_PASSAGES}",
            param="files",
        )
    vectors = embedder.encode([p.document() for p in passages])
    return IndexedPassages([f.id for f in files], passages, vectors, sources)


def write_bot(
    db: Session,
    tenant_id: str,
    bot: Bot | None,
    spec: BotSpec | BotChange,
    index: IndexedPassages | None,
) -> Bot:
    """Create (``bot`` None) or update a bot; ``index`` replaces its passages when given."""
    if bot is None:
        bot = Bot(id=new_id("bot"), tenant_id=tenant_id)
        db.add(bot)
    for name in ("name", "model", "system_prompt", "escalation_threshold"):
        value = getattr(spec, name)
        if value is not None:
            setattr(bot, name, value)
    if index is not None:
        db.execute(delete(KnowledgePassage).where(KnowledgePassage.bot_id == bot.id))
        bot.knowledge_file_ids = index.file_ids
        bot.passage_count = len(index.passages)
        bot.status, bot.status_reason = "ready", None
        db.flush()
        for ordinal, (passage, vector, source) in enumerate(
            zip(index.passages, index.vectors, index.sources, strict=True)
        ):
            db.add(
                KnowledgePassage(
                    id=new_id("psg"),
                    tenant_id=tenant_id,
                    bot_id=bot.id,
                    file_id=source,
                    ordinal=ordinal,
                    ref=passage.ref[:200],
                    title=passage.title[:500],
                    text=passage.text,
                    embedding=np.asarray(vector, dtype="<f4").tobytes(),
                )
            )
    db.flush()
    return bot


# -- answering -----------------------------------------------------------------------------


@dataclass
class BotContext:
    """What answering one message needs, read in one short transaction."""

    bot_id: str
    model: str
    system_prompt: str
    threshold: float
    conversation_id: str | None
    history: list[Turn]
    passage_ids: list[str]
    refs: list[str]
    titles: list[str]
    texts: list[str]
    vectors: np.ndarray  # (passages, dim)


def load_context(
    db: Session, tenant_id: str, bot_id: str, conversation_id: str | None
) -> BotContext:
    bot = get_owned(db, Bot, tenant_id, bot_id, label="bot", param="bot_id")
    history: list[Turn] = []
    if conversation_id is not None:
        get_conversation(db, tenant_id, bot.id, conversation_id)
        history = [Turn(m.role, m.content) for m in messages_of(db, tenant_id, conversation_id)]
    rows = db.scalars(
        scoped(KnowledgePassage, tenant_id)
        .where(KnowledgePassage.bot_id == bot.id)
        .order_by(KnowledgePassage.ordinal)
    ).all()
    vectors = (
        np.stack([np.frombuffer(p.embedding, dtype="<f4") for p in rows])
        if rows
        else np.zeros((0, 1), dtype=np.float32)
    )  # (passages, dim)
    return BotContext(
        bot_id=bot.id,
        model=bot.model,
        system_prompt=bot.system_prompt,
        threshold=bot.escalation_threshold,
        conversation_id=conversation_id,
        history=history,
        passage_ids=[p.id for p in rows],
        refs=[p.ref for p in rows],
        titles=[p.title for p in rows],
        texts=[p.text for p in rows],
        vectors=vectors,
    )


@dataclass
class Retrieval:
    citations: list[dict[str, Any]]  # best first: passage_id, ref, title, score
    passages: list[tuple[str, str]]  # (title, text) for the prompt, same order
    confidence: float | None
    escalation_reason: str | None


def _previous_user_turn(history: list[Turn]) -> str | None:
    return next((t.content for t in reversed(history) if t.role == "user"), None)


def query_texts(ctx: BotContext, message: str) -> list[str]:
    """What `retrieve` embeds for ``message``: it, and the previous user turn if any (what the
    tenant is billed for, counted with the embedder's tokenizer)."""
    previous = _previous_user_turn(ctx.history)
    return [message] + ([previous] if previous else [])


def retrieve(
    ctx: BotContext,
    message: str,
    embedder: EmbeddingModel,
    config: RetrievalConfig = RetrievalConfig(),
) -> Retrieval:
    """Rank the bot's passages for ``message`` (steered by the previous user turn, so
    follow-ups such as "how much is it?" find what the conversation is about)."""
    texts = query_texts(ctx, message)
    previous = texts[1] if len(texts) > 1 else None
    vectors = embedder.encode(texts)  # (1 or 2, dim)
    query = vectors[0] + (config.history_weight * vectors[1] if previous else 0)
    query = query / max(float(np.linalg.norm(query)), 1e-9)
    index = KeywordIndex([f"{t}\n{x}" for t, x in zip(ctx.titles, ctx.texts, strict=True)], config)
    terms = query_terms(message, previous, config.history_weight)
    hits = rank(query, terms, ctx.vectors, index, top_k=TOP_K)
    confidence = hits[0].score if hits else None
    citations = [
        {
            "passage_id": ctx.passage_ids[h.index],
            "ref": ctx.refs[h.index],
            "title": ctx.titles[h.index],
            "score": round(h.score, 4),
        }
        for h in hits
    ]
    return Retrieval(
        citations=citations,
        passages=[(ctx.titles[h.index], ctx.texts[h.index]) for h in hits],
        confidence=confidence,
        escalation_reason=escalation_reason(message, confidence, ctx.threshold),
    )


def delete_bot(db: Session, tenant_id: str, bot_id: str) -> Bot:
    """Delete a bot with its passages, conversations and messages (foreign-key cascades)."""
    bot = get_owned(db, Bot, tenant_id, bot_id, label="bot", param="bot_id")
    conversations = select(Conversation.id).where(Conversation.bot_id == bot.id)
    db.execute(delete(Message).where(Message.conversation_id.in_(conversations)))
    db.execute(delete(Conversation).where(Conversation.bot_id == bot.id))
    db.execute(delete(KnowledgePassage).where(KnowledgePassage.bot_id == bot.id))
    db.delete(bot)
    db.flush()
    return bot
