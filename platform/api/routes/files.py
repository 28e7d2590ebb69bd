"""Tenant files: multipart upload streamed to storage, validated line by line for every purpose
(a bad line is a 422 naming it, and nothing is kept)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.responses import StreamingResponse

from moeplane import files
from moeplane.api.deps import DbSession, Pagination, TenantCtx
from moeplane.api.schemas.common import ListPage
from moeplane.api.schemas.files import FileDeleted, FilePublic
from moeplane.store.audit import audit
from moeplane.store.models import File
from moeplane.store.scoping import page, scoped

router = APIRouter(prefix="/v1/files", tags=["files"])

CHUNK = 1024 * 1024


def _chunks(upload: UploadFile) -> Iterator[bytes]:
    while chunk := upload.file.read(CHUNK):
        yield chunk


@router.post("", response_model=FilePublic, status_code=201)
def upload(
    request: Request,
    tenant: TenantCtx,
    db: DbSession,
    file: Annotated[
        UploadFile,
        Form(
            description="JSONL for fine-tune (chat), catalog (products) and events; Markdown "
            "(.md) or a JSONL FAQ (.jsonl) for knowledge. Checked line by line while it uploads."
        ),
    ],
    purpose: Annotated[
        str, Form(max_length=32, description="fine-tune | knowledge | catalog | events")
    ],
):
    max_bytes = tenant.quota.max_file_bytes
    length = request.headers.get("content-length")
    files.check_upload_size(int(length) if length and length.isdigit() else None, max_bytes)
    record = files.upload_file(
        db,
        request.app.state.storage,
        tenant_id=tenant.id,
        filename=file.filename or "upload",
        purpose=purpose,
        chunks=_chunks(file),
        max_bytes=max_bytes,
    )
    audit(db, tenant.actor, "file.create", target_id=record.id)
    return FilePublic.of(record)


@router.get("", response_model=ListPage[FilePublic])
def list_files(
    tenant: TenantCtx,
    db: DbSession,
    pagination: Pagination,
    purpose: str | None = Query(default=None, max_length=32),
):
    stmt = scoped(File, tenant.id)
    if purpose:
        stmt = stmt.where(File.purpose == purpose)
    rows, has_more = page(db, stmt, File.id, limit=pagination.limit, after=pagination.after)
    return ListPage(data=[FilePublic.of(f) for f in rows], has_more=has_more)


@router.get("/{file_id}", response_model=FilePublic)
def get_file(file_id: str, tenant: TenantCtx, db: DbSession):
    return FilePublic.of(files.get_file(db, tenant.id, file_id))


@router.delete("/{file_id}", response_model=FileDeleted)
def delete_file(file_id: str, request: Request, tenant: TenantCtx, db: DbSession):
    record = files.delete_file(db, request.app.state.storage, tenant.id, file_id)
    audit(db, tenant.actor, "file.delete", target_id=record.id)
    return FileDeleted(id=record.id)


@router.get(
    "/{file_id}/content",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}},
)
def file_content(file_id: str, request: Request, tenant: TenantCtx, db: DbSession):
    record = files.get_file(db, tenant.id, file_id)
    reader = request.app.state.storage.open_read(record.storage_key)

    def stream() -> Iterator[bytes]:
        with reader:
            while chunk := reader.read(CHUNK):
                yield chunk

    return StreamingResponse(
        stream(),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{record.id}.jsonl"'},
    )
