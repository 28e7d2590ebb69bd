"""Files (OpenAI shape)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from moeplane.api.schemas.common import epoch
from moeplane.store.models import File

__all__ = ["FileDeleted", "FilePublic"]


class FilePublic(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    sha256: str
    stats: dict[str, Any]

    @classmethod
    def of(cls, record: File) -> FilePublic:
        return cls(
            id=record.id,
            bytes=record.bytes,
            created_at=epoch(record.created_at),
            filename=record.filename,
            purpose=record.purpose,
            status=record.status,
            sha256=record.sha256,
            stats=record.stats,
        )


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
