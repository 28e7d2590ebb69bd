"""Usage counters: atomic upserts per (tenant, kind, UTC day)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from moeplane.store.models import UsageCounter, utcnow

__all__ = ["month_totals", "record_usage", "usage_rows"]


def _day(at: datetime | None = None) -> str:
    return (at or utcnow()).astimezone(UTC).strftime("%Y-%m-%d")


def record_usage(
    session: Session, tenant_id: str, kind: str, amount: int, *, at: datetime | None = None
) -> None:
    """Add ``amount`` to the tenant's counter for ``kind`` today, atomically on both databases."""
    if amount == 0:
        return
    values = {"tenant_id": tenant_id, "kind": kind, "period": _day(at), "amount": amount}
    insert = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(UsageCounter).values(**values, updated_at=utcnow())
    stmt = stmt.on_conflict_do_update(
        index_elements=["tenant_id", "kind", "period"],
        set_={"amount": UsageCounter.amount + stmt.excluded.amount, "updated_at": utcnow()},
    )
    session.execute(stmt)


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
