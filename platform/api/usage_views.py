"""Usage listings shared by the tenant and the operator routes."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from sqlalchemy.orm import Session

from moeplane.api.schemas.usage import UsageList, UsagePublic
from moeplane.errors import InvalidRequest
from moeplane.store.usage import usage_rows

__all__ = ["usage_list"]


def usage_list(
    db: Session,
    tenant_id: str | None,
    *,
    kind: str | None,
    start: date | None,
    end: date | None,
) -> UsageList:
    if start and end and start > end:
        raise InvalidRequest("start must not be after end", param="start")
    rows = usage_rows(db, tenant_id, kind=kind, start=start, end=end)
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        totals[row.kind] += row.amount
    return UsageList(data=[UsagePublic.of(r) for r in rows], totals=dict(totals))
