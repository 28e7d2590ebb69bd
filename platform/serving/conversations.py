"""Support-bot conversations: storing a turn, reading conversations back.

A turn is the customer's message and the bot's reply, stored together in one short transaction
once the reply is known: complete, a hand-off, or what a stream had sent when the customer left
(``finish_reason`` ``abandoned``). Every read goes through `moeplane.store.scoping`; a
conversation belongs to one bot, and asking for it under another bot is a 404 like any other
tenant's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from moeplane.errors import NotFound
from moeplane.store.ids import new_id
from moeplane.store.models import Bot, Conversation, Message, utcnow
from moeplane.store.scoping import get_owned, page, scoped

__all__ = [
    "Reply",
    "get_conversation",
    "list_conversations",
    "messages_of",
    "read_conversation",
    "record_turn",
]


def _bot(db: Session, tenant_id: str, bot_id: str) -> Bot:
    return get_owned(db, Bot, tenant_id, bot_id, label="bot", param="bot_id")


def get_conversation(
    db: Session, tenant_id: str, bot_id: str, conversation_id: str
) -> Conversation:
    """One of the tenant's conversations with this bot (any other is a 404)."""
    conversation = get_owned(
        db, Conversation, tenant_id, conversation_id, label="conversation", param="conversation_id"
    )
    if conversation.bot_id != bot_id:
        raise NotFound(f"No conversation with id '{conversation_id}'", param="conversation_id")
    return conversation


def messages_of(db: Session, tenant_id: str, conversation_id: str) -> list[Message]:
    """The conversation's messages in the order they were written."""
    stmt = (
        scoped(Message, tenant_id)
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.created_at, Message.id)
    )
    return list(db.scalars(stmt))


def list_conversations(
    db: Session, tenant_id: str, bot_id: str, *, limit: int, after: str | None
) -> tuple[list[Conversation], bool]:
    """The bot's conversations, newest first (another tenant's bot is a 404)."""
    bot = _bot(db, tenant_id, bot_id)
    stmt = scoped(Conversation, tenant_id).where(Conversation.bot_id == bot.id)
    return page(db, stmt, Conversation.id, limit=limit, after=after)


def read_conversation(
    db: Session, tenant_id: str, bot_id: str, conversation_id: str
) -> tuple[Conversation, list[Message]]:
    bot = _bot(db, tenant_id, bot_id)
    conversation = get_conversation(db, tenant_id, bot.id, conversation_id)
    return conversation, messages_of(db, tenant_id, conversation.id)


@dataclass
class Reply:
    content: str
    citations: list[dict[str, Any]]
    escalation_reason: str | None
    confidence: float | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    embedding_tokens: int = 0  # the retrieval query's, billed whatever the reply
    finish_reason: str = "stop"  # stop | length | abandoned


def record_turn(
    db: Session,
    tenant_id: str,
    bot_id: str,
    conversation_id: str,
    message: str,
    reply: Reply,
    *,
    new_conversation: bool,
    message_id: str,
) -> Message:
    """Store the customer's message and the bot's reply, opening the conversation if new
    (its id is chosen before the answer streams, so the first chunk can carry it)."""
    if new_conversation:
        conversation = Conversation(id=conversation_id, tenant_id=tenant_id, bot_id=bot_id)
        db.add(conversation)
    else:
        conversation = get_conversation(db, tenant_id, bot_id, conversation_id)
        conversation.updated_at = utcnow()  # the last turn's time, for whoever lists them
    if reply.escalation_reason:
        conversation.escalated = True
    db.flush()
    # the reply's id was chosen before the question's row is written (the stream carries it),
    # so ids do not order a turn: timestamps do, the reply a microsecond after the question
    asked_at = utcnow()
    db.add(
        Message(
            id=new_id("msg"),
            tenant_id=tenant_id,
            conversation_id=conversation.id,
            role="user",
            content=message,
            created_at=asked_at,
        )
    )
    assistant = Message(
        created_at=asked_at + timedelta(microseconds=1),
        id=message_id,
        tenant_id=tenant_id,
        conversation_id=conversation.id,
        role="assistant",
        content=reply.content,
        citations=reply.citations,
        escalate=reply.escalation_reason is not None,
        escalation_reason=reply.escalation_reason,
        confidence=reply.confidence,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
        embedding_tokens=reply.embedding_tokens,
        finish_reason=reply.finish_reason,
    )
    db.add(assistant)
    db.flush()
    return assistant
