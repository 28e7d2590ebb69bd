"""``POST /v1/embeddings`` in OpenAI's shape (the official client works unchanged)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from moeplane.api.schemas.common import Input

__all__ = ["EmbeddingItem", "EmbeddingList", "EmbeddingRequest", "EmbeddingUsage"]

_Text = Annotated[str, StringConstraints(min_length=1, max_length=100_000)]
_Texts = Annotated[list[_Text], Field(min_length=1, max_length=2048)]  # OpenAI's limits


class EmbeddingRequest(Input):
    model: str = Field(min_length=1, max_length=200, description="A deployment name or model id")
    input: _Text | _Texts = Field(description="A text, or up to 2048 texts")
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="base64: little-endian float32 bytes, as OpenAI sends"
    )
    dimensions: int | None = Field(
        default=None, ge=1, description="Must equal the model's dimension when given"
    )
    user: str | None = Field(default=None, max_length=256)

    model_config = Input.model_config | {"str_strip_whitespace": False}

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingUsage
