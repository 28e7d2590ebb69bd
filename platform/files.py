"""Tenant files: streamed to storage, validated while streaming, recorded only when whole.

Every purpose is validated line by line as it streams (``moeplane.datasets.validator_for``:
fine-tune chat, catalog products, events, knowledge), with the rules its users apply again at
use time. A failed upload (too large, a bad line, a dropped connection) leaves neither a row nor
bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from moeplane.datasets import SUPPORTED_PURPOSES, StreamingValidator, validator_for
from moeplane.errors import InvalidRequest, PayloadTooLarge, QuotaExceeded
from moeplane.storage import Storage
from moeplane.store.db import on_commit
from moeplane.store.ids import new_id
from moeplane.store.models import File
from moeplane.store.scoping import get_owned
from moeplane.store.tenants import lock_quota

__all__ = ["delete_file", "get_file", "upload_file"]

MAX_FILENAME = 255


def _validated(chunks: Iterable[bytes], validator: StreamingValidator) -> Iterator[bytes]:
    for chunk in chunks:
        validator.feed(chunk)
        yield chunk


def upload_file(
    db: Session,
    storage: Storage,
    *,
    tenant_id: str,
    filename: str,
    purpose: str,
    chunks: Iterable[bytes],
    max_bytes: int,
) -> File:
    """Stream ``chunks`` to storage (validating them as they pass), then record the file."""
    if purpose not in SUPPORTED_PURPOSES:
        raise InvalidRequest(
            f"purpose must be one of {', '.join(SUPPORTED_PURPOSES)} (got '{purpose}')",
            param="purpose",
        )
    if not filename or len(filename) > MAX_FILENAME or "/" in filename or "\\" in filename:
        raise InvalidRequest("filename must be 1-255 characters without slashes", param="file")
    file_id = new_id("file")
    key = f"tenants/{tenant_id}/files/{file_id}"
    validator = validator_for(purpose)(filename)
    written = storage.write_stream(key, _validated(chunks, validator), max_bytes=max_bytes)
    try:
        stats = validator.finish()
        quota = lock_quota(db, tenant_id)
        used = db.scalar(
            select(func.coalesce(func.sum(File.bytes), 0)).where(File.tenant_id == tenant_id)
        )
        if used + written.bytes > quota.storage_bytes:
            raise QuotaExceeded(
                f"Storage quota reached: {used + written.bytes} of {quota.storage_bytes} bytes",
                param="file",
            )
        record = File(
            id=file_id,
            tenant_id=tenant_id,
            filename=filename,
            purpose=purpose,
            bytes=written.bytes,
            sha256=written.sha256,
            storage_key=key,
            stats=stats.to_dict(),
        )
        db.add(record)
        db.flush()
    except BaseException:
        storage.delete(key)
        raise
    return record


def get_file(db: Session, tenant_id: str, file_id: str, *, param: str = "file_id") -> File:
    return get_owned(db, File, tenant_id, file_id, label="file", param=param)


def delete_file(db: Session, storage: Storage, tenant_id: str, file_id: str) -> File:
    """Delete the row, and the bytes once that is committed (a crash in between leaves an
    orphan, never a row without bytes; orphans under tenants/*/files/ are safe to sweep)."""
    record = get_file(db, tenant_id, file_id)
    db.delete(record)
    db.flush()
    on_commit(db, lambda: storage.delete(record.storage_key))
    return record


def check_upload_size(content_length: int | None, max_bytes: int) -> None:
    """Refuse early when the client announces more than the limit (plus multipart overhead)."""
    if content_length is not None and content_length > max_bytes + 64 * 1024:
        raise PayloadTooLarge(
            f"The file is larger than this tenant's limit of {max_bytes} bytes", param="file"
        )
