"""The support bot's API shapes: bots, messages (answers with citations), search,
conversations read back."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from moeplane.api.schemas.common import Input, epoch
from moeplane.store.models import Bot, Conversation, Message

__all__ = [
    "BotCreate",
    "BotDeleted",
    "BotPublic",
    "BotUpdate",
    "Citation",
    "ConversationDetail",
    "ConversationPublic",
    "MessageCreate",
    "MessagePublic",
    "SearchRequest",
    "SearchResult",
    "SearchUsage",
    "SupportUsage",
]

_FILES = Field(min_length=1, max_length=20, description="File ids of purpose 'knowledge'")


class BotCreate(Input):
    name: str = Field(min_length=1, max_length=100)
    model: str = Field(
        min_length=1, max_length=200, description="One of your chat deployments (name or id)"
    )
    files: list[str] = _FILES
    system_prompt: str = Field(default="", max_length=8000)
    escalation_threshold: float = Field(
        default=0.2, ge=0.0, le=1.0, description="Escalate when retrieval confidence is below"
    )


class BotUpdate(Input):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    files: list[str] | None = Field(default=None, min_length=1, max_length=20)
    system_prompt: str | None = Field(default=None, max_length=8000)
    escalation_threshold: float | None = Field(default=None, ge=0.0, le=1.0)


class BotPublic(BaseModel):
    id: str
    object: Literal["support.bot"] = "support.bot"
    name: str
    model: str
    files: list[str]
    system_prompt: str
    escalation_threshold: float
    status: str = Field(description="indexing | ready | failed")
    status_reason: str | None
    passages: int
    created_at: int
    updated_at: int

    @classmethod
    def of(cls, bot: Bot) -> BotPublic:
        return cls(
            id=bot.id,
            name=bot.name,
            model=bot.model,
            files=list(bot.knowledge_file_ids),
            system_prompt=bot.system_prompt,
            escalation_threshold=bot.escalation_threshold,
            status=bot.status,
            status_reason=bot.status_reason,
            passages=bot.passage_count,
            created_at=epoch(bot.created_at) or 0,
            updated_at=epoch(bot.updated_at) or 0,
        )


class BotDeleted(BaseModel):
    id: str
    object: Literal["support.bot.deleted"] = "support.bot.deleted"
    deleted: bool = True


class MessageCreate(Input):
    conversation_id: str | None = Field(default=None, max_length=40)
    message: str = Field(min_length=1, max_length=8000)
    stream: bool = False
    max_tokens: int = Field(default=256, ge=1, le=4096)
    temperature: float = Field(default=0.3, ge=0.0, le=2.0)


class Citation(BaseModel):
    passage_id: str
    ref: str = Field(description="The FAQ entry's id, or the Markdown heading's slug")
    title: str
    score: float


class SupportUsage(BaseModel):
    prompt_tokens: int = Field(description="The chat model's prompt (0 for a hand-off)")
    completion_tokens: int
    embedding_tokens: int = Field(
        description="The retrieval query embedded with all-MiniLM-L6-v2 (billed as prompt_tokens)"
    )
    total_tokens: int = Field(description="All three: what the turn cost")

    @classmethod
    def of(cls, prompt: int, completion: int, embedding: int) -> SupportUsage:
        return cls(
            prompt_tokens=prompt,
            completion_tokens=completion,
            embedding_tokens=embedding,
            total_tokens=prompt + completion + embedding,
        )


class MessagePublic(BaseModel):
    """The bot's answer; in a conversation read back, also the customer's turns (role ``user``:
    no citations, usage 0, finish_reason null)."""

    id: str
    object: Literal["support.message"] = "support.message"
    conversation_id: str
    role: Literal["user", "assistant"] = "assistant"
    content: str
    citations: list[Citation]
    escalate: bool
    escalation_reason: str | None = Field(description="human_requested | low_confidence")
    confidence: float | None
    finish_reason: str | None = Field(
        description="stop | length | abandoned (the customer left mid-stream; content is what "
        "was generated until then); null for the customer's turns"
    )
    usage: SupportUsage
    created_at: int

    @classmethod
    def of(cls, message: Message) -> MessagePublic:
        return cls(
            id=message.id,
            conversation_id=message.conversation_id,
            role="user" if message.role == "user" else "assistant",
            content=message.content,
            citations=[Citation(**c) for c in message.citations],
            escalate=message.escalate,
            escalation_reason=message.escalation_reason,
            confidence=message.confidence,
            finish_reason=message.finish_reason,
            usage=SupportUsage.of(
                message.prompt_tokens, message.completion_tokens, message.embedding_tokens
            ),
            created_at=epoch(message.created_at) or 0,
        )


class ConversationPublic(BaseModel):
    id: str
    object: Literal["support.conversation"] = "support.conversation"
    bot_id: str
    escalated: bool = Field(description="A turn was handed to a person")
    created_at: int
    updated_at: int = Field(description="The last turn's time")

    @classmethod
    def of(cls, conversation: Conversation) -> ConversationPublic:
        return cls(
            id=conversation.id,
            bot_id=conversation.bot_id,
            escalated=conversation.escalated,
            created_at=epoch(conversation.created_at) or 0,
            updated_at=epoch(conversation.updated_at) or 0,
        )


class ConversationDetail(ConversationPublic):
    messages: list[MessagePublic] = Field(description="Oldest first, customer and bot turns")

    @classmethod
    def with_messages(
        cls, conversation: Conversation, messages: list[Message]
    ) -> ConversationDetail:
        return cls(
            **ConversationPublic.of(conversation).model_dump(),
            messages=[MessagePublic.of(m) for m in messages],
        )


class SearchRequest(Input):
    query: str = Field(min_length=1, max_length=8000)
    conversation_id: str | None = Field(default=None, max_length=40)


class SearchUsage(BaseModel):
    embedding_tokens: int = Field(description="The query embedded (billed as prompt_tokens)")
    total_tokens: int


class SearchResult(BaseModel):
    object: Literal["support.search"] = "support.search"
    passages: list[Citation]
    confidence: float | None
    escalate: bool
    escalation_reason: str | None
    usage: SearchUsage
