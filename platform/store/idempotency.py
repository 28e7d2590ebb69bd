"""Idempotency-Key records: the same key and body replay the first response; a different body
with the same key is a conflict. The record is written in the same transaction as the object it
creates, so a crash leaves neither behind and concurrent duplicates serialise on its unique key.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from moeplane.errors import Conflict
from moeplane.store.models import IdempotencyRecord, utcnow

__all__ = ["claim", "complete"]


def _existing(session: Session, scope: str, key: str) -> IdempotencyRecord | None:
    return session.scalars(
        select(IdempotencyRecord).where(
            IdempotencyRecord.scope == scope, IdempotencyRecord.key == key
        )
    ).first()


def claim(
    session: Session, *, scope: str, key: str, fingerprint: str, ttl_s: int
) -> IdempotencyRecord:
    """Return the finished record for a replay, or a new unfinished one to complete.

    A record is finished when ``status_code`` is set. Raises Conflict when the key was used
    with a different request.
    """
    if not key or len(key) > 255:
        raise Conflict("Idempotency-Key must be 1 to 255 characters", param="Idempotency-Key")
    session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.scope == scope,
            IdempotencyRecord.key == key,
            IdempotencyRecord.created_at < utcnow() - timedelta(seconds=ttl_s),
        )
    )
    for _ in range(2):
        found = _existing(session, scope, key)
        if found is not None:
            if found.fingerprint != fingerprint:
                raise Conflict(
                    "This Idempotency-Key was already used with a different request",
                    param="Idempotency-Key",
                    code="idempotency_key_reused",
                )
            return found
        record = IdempotencyRecord(scope=scope, key=key, fingerprint=fingerprint)
        try:
            with session.begin_nested():  # a savepoint: losing the race keeps our transaction
                session.add(record)
            return record
        except IntegrityError:
            continue  # a concurrent request holding the same key committed first: replay it
    raise Conflict("A request with this Idempotency-Key is in progress", param="Idempotency-Key")


def complete(record: IdempotencyRecord, status_code: int, response: dict[str, Any]) -> None:
    record.status_code = status_code
    record.response = response
