"""``Idempotency-Key`` on creating POSTs: same key + same body = same response; else 409."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from moeplane.store.idempotency import claim, complete

__all__ = ["IdempotencyGuard"]


class IdempotencyGuard:
    def __init__(self, request: Request, db: Session, *, ttl_s: int):
        self.request = request
        self.db = db
        self.ttl_s = ttl_s
        self.key = request.headers.get("idempotency-key")

    def run(
        self,
        scope: str,
        body: BaseModel | None,
        create: Callable[[], BaseModel],
        *,
        status_code: int = 200,
        stored: Callable[[dict[str, Any]], dict[str, Any]] = lambda r: r,
    ) -> BaseModel | JSONResponse:
        """Run ``create`` once per (scope, key); replays return what was stored.

        ``stored`` lets a route keep secrets (a new API key) out of the stored copy.
        """
        if self.key is None:
            return create()
        payload = body.model_dump_json() if body is not None else ""
        digest = hashlib.sha256(
            f"{self.request.method} {self.request.url.path}\n{payload}".encode()
        ).hexdigest()
        record = claim(self.db, scope=scope, key=self.key, fingerprint=digest, ttl_s=self.ttl_s)
        if record.status_code:
            return JSONResponse(
                record.response,
                status_code=record.status_code,
                headers={"Idempotent-Replayed": "true"},
            )
        result = create()
        complete(record, status_code, stored(jsonable_encoder(result)))
        return result
