"""Test data made through the domain layer (the same functions the API uses)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from moeplane.store.db import Database
from moeplane.store.keys import issue_key
from moeplane.store.tenants import create_tenant

_counter = itertools.count(1)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def make_admin_key(db: Database) -> dict[str, str]:
    with db.session() as session:
        issued = issue_key(session, tenant_id=None, role="admin", name="test-admin")
    return bearer(issued.secret)


@dataclass
class TenantFixture:
    id: str
    key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.key)


def make_tenant(db: Database, name: str | None = None, **quota: int) -> TenantFixture:
    with db.session() as session:
        tenant = create_tenant(session, name=name or f"tenant-{next(_counter)}", quota=quota)
        issued = issue_key(session, tenant_id=tenant.id, role="tenant", name="test")
    return TenantFixture(id=tenant.id, key=issued.secret, key_id=issued.record.id)


def chat_line(question: str = "Where is my order?", answer: str = "It ships tomorrow.") -> str:
    import json

    return json.dumps(
        {
            "messages": [
                {"role": "system", "content": "You are a helpful support agent."},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
        }
    )


def chat_jsonl(n: int = 8) -> bytes:
    return (
        "\n".join(chat_line(f"Question {i}?", f"Answer {i}.") for i in range(n)) + "\n"
    ).encode()


def make_unchecked_file(
    db: Database, storage_uri: str, tenant_id: str, purpose: str, filename: str, content: bytes
) -> str:
    """A file recorded without the upload check, as files uploaded before uploads of its purpose
    were checked are: what use-time validation still has to catch."""
    from moeplane.storage import Storage
    from moeplane.store.ids import new_id
    from moeplane.store.models import File

    file_id = new_id("file")
    key = f"tenants/{tenant_id}/files/{file_id}"
    written = Storage(storage_uri).write_stream(key, [content])
    with db.session() as session:
        session.add(
            File(
                id=file_id,
                tenant_id=tenant_id,
                filename=filename,
                purpose=purpose,
                bytes=written.bytes,
                sha256=written.sha256,
                storage_key=key,
                stats={},
            )
        )
    return file_id
