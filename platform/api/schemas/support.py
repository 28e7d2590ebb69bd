"""The support bot's API shapes: bots, messages (answers with citations), search."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from moeplane.api.schemas.common import Input, epoch
from moeplane.store.models import Bot, Message

__all__ = [
    "BotCreate",
    "BotDeleted",
    "BotPublic",
    "BotUpdate",
    "Citation",
    "MessageCreate",
    "MessagePublic",
    "SearchRequest",
    "SearchResult",
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
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class MessagePublic(BaseModel):
    id: str
    object: Literal["support.message"] = "support.message"
    conversation_id: str
    role: Literal["assistant"] = "assistant"
    content: str
    citations: list[Citation]
    escalate: bool
    escalation_reason: str | None = Field(description="human_requested | low_confidence")
    confidence: float | None
    usage: SupportUsage
    created_at: int

    @classmethod
    def of(cls, message: Message) -> MessagePublic:
        prompt, completion = message.prompt_tokens, message.completion_tokens
        return cls(
            id=message.id,
            conversation_id=message.conversation_id,
            content=message.content,
            citations=[Citation(**c) for c in message.citations],
            escalate=message.escalate,
            escalation_reason=message.escalation_reason,
            confidence=message.confidence,
            usage=SupportUsage(
                prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
            ),
            created_at=epoch(message.created_at) or 0,
        )


class SearchRequest(Input):
    query: str = Field(min_length=1, max_length=8000)
    conversation_id: str | None = Field(default=None, max_length=40)


class SearchResult(BaseModel):
    object: Literal["support.search"] = "support.search"
    passages: list[Citation]
    confidence: float | None
    escalate: bool
    escalation_reason: str | None
