"""merge the recommendations (0004) and support (0005) branches into one head

Revision ID: 0006
Revises: 0004, 0005
Create Date: 2026-11-29 04:40:00
"""

from collections.abc import Sequence

revision: str = "0006"
down_revision: str | Sequence[str] | None = ("0004", "0005")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Nothing to change: the two branches touch different tables."""


def downgrade() -> None:
    """Nothing to change."""
