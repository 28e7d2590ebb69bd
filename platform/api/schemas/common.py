"""Shapes shared by every resource: list envelopes, errors, strict input models."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = ["ErrorBody", "ErrorResponse", "Input", "ListPage", "epoch"]

T = TypeVar("T")


class Input(BaseModel):
    """Base for request bodies: unknown fields are an error that names the field."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ListPage(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool = False


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


def epoch(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None
