"""The one place where tenant-owned queries are filtered by tenant.

Routes never write ``.where(X.tenant_id == ...)`` themselves: they call :func:`scoped` or
:func:`get_owned`. Another tenant's object is indistinguishable from a missing one (404).
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from moeplane.errors import NotFound

__all__ = ["get_owned", "page", "scoped"]

M = TypeVar("M")


def scoped(model: type[M], tenant_id: str | None) -> Select[tuple[M]]:
    """``SELECT model`` limited to one tenant's rows; ``tenant_id=None`` is the operator's view."""
    stmt = select(model)
    if tenant_id is not None:
        stmt = stmt.where(model.tenant_id == tenant_id)  # type: ignore[attr-defined]
    return stmt


def get_owned(
    session: Session,
    model: type[M],
    tenant_id: str | None,
    object_id: str,
    *,
    label: str,
    param: str = "id",
    for_update: bool = False,
) -> M:
    """Fetch one tenant-owned row by id or raise NotFound (also for other tenants' rows)."""
    stmt = scoped(model, tenant_id).where(model.id == object_id)  # type: ignore[attr-defined]
    if for_update:
        stmt = stmt.with_for_update()
    row = session.scalars(stmt).first()
    if row is None:
        raise NotFound(f"No {label} with id '{object_id}'", param=param)
    return row


def page(
    session: Session, stmt: Select[Any], id_column: Any, *, limit: int, after: str | None
) -> tuple[list[Any], bool]:
    """Newest-first keyset pagination over time-ordered IDs: rows after the cursor, has_more."""
    if after is not None:
        stmt = stmt.where(id_column < after)
    rows = list(session.scalars(stmt.order_by(id_column.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit
