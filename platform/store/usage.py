"""Usage counters: atomic upserts per (tenant, kind, UTC day)."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from moeplane.store.models import UsageCounter, utcnow

__all__ = ["month_totals", "record_usage", "usage_rows"]


def _day(at: datetime | None = None) -> str:
    return (at or utcnow()).astimezone(UTC).strftime("%Y-%m-%d")


@functools.cache
def _upsert(dialect: str) -> Any:
    """``INSERT .. ON CONFLICT DO UPDATE amount = amount + new`` for one dialect, built once:
    it runs on every metered request, and building it took longer than running it."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    columns = ("tenant_id", "kind", "period", "amount", "updated_at")
    stmt = insert(UsageCounter).values({name: bindparam(name) for name in columns})
    return stmt.on_conflict_do_update(
        index_elements=["tenant_id", "kind", "period"],
        set_={
            "amount": UsageCounter.amount + stmt.excluded.amount,
            "updated_at": stmt.excluded.updated_at,
        },
    )


def record_usage(
    session: Session, tenant_id: str, kind: str, amount: int, *, at: datetime | None = None
) -> None:
    """Add ``amount`` to the tenant's counter for ``kind`` today, atomically on both databases."""
    if amount == 0:
        return
    values = {
        "tenant_id": tenant_id,
        "kind": kind,
        "period": _day(at),
        "amount": amount,
        "updated_at": utcnow(),
    }
    # Core, in the session's transaction: no ORM bulk-insert machinery for one row. Flush
    # first, as session.execute would (the tenant row may be new in this session).
    session.flush()
    session.connection().execute(_upsert(session.bind.dialect.name), values)


def usage_rows(
    session: Session,
    tenant_id: str | None,
    *,
    kind: str | None = None,
    start: date | None = None,
    end: date | None = None,
) -> list[UsageCounter]:
    """Daily counters, oldest first; ``tenant_id=None`` means every tenant (operators)."""
    stmt = select(UsageCounter)
    if tenant_id is not None:
        stmt = stmt.where(UsageCounter.tenant_id == tenant_id)
    if kind:
        stmt = stmt.where(UsageCounter.kind == kind)
    if start:
        stmt = stmt.where(UsageCounter.period >= start.isoformat())
    if end:
        stmt = stmt.where(UsageCounter.period <= end.isoformat())
    order = (UsageCounter.period, UsageCounter.tenant_id, UsageCounter.kind)
    return list(session.scalars(stmt.order_by(*order)))


def month_totals(session: Session, tenant_id: str, *, at: datetime | None = None) -> dict[str, int]:
    """This calendar month's totals by kind (what monthly budgets are checked against)."""
    month = _day(at)[:7]
    rows = session.execute(
        select(UsageCounter.kind, func.sum(UsageCounter.amount))
        .where(UsageCounter.tenant_id == tenant_id, UsageCounter.period.startswith(month))
        .group_by(UsageCounter.kind)
    )
    return {kind: int(total) for kind, total in rows}
