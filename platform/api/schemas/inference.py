"""Chat completions and completions in OpenAI's shapes (the official client works unchanged)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from moeplane.api.schemas.common import Input

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "StreamOptions",
]


class TextPart(Input):
    type: Literal["text"]
    text: str = Field(max_length=1_000_000)


class ChatMessage(Input):
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart] = Field(description="Text, or a list of text parts")
    name: str | None = Field(default=None, max_length=64)

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(Input):
    include_usage: bool = False


class _Sampling(Input):
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: str | list[str] | None = Field(default=None, description="Up to 4 stop sequences")
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1, description="Only 1 is supported")
    user: str | None = Field(default=None, max_length=256)
    presence_penalty: float = Field(default=0.0, ge=0.0, le=0.0, description="Only 0")
    frequency_penalty: float = Field(default=0.0, ge=0.0, le=0.0, description="Only 0")

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s or len(s) > 200 for s in stops):
            raise ValueError("stop sequences must be 1-200 characters")
        return value

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def sampling(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}


class ChatCompletionRequest(_Sampling):
    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32768)

    def limit(self) -> int:
        return self.max_completion_tokens or self.max_tokens or 256


class CompletionRequest(_Sampling):
    model: str = Field(min_length=1, max_length=200)
    prompt: str | list[str] = Field(description="A string (or a list holding one string)")
    max_tokens: int = Field(default=16, ge=1, le=32768)
    echo: bool = Field(default=False, description="Only false")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("send one prompt per request")
        return value

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported")
        return value

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
