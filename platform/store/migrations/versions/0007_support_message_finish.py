"""support messages: finish_reason (stop | length | abandoned) and embedding_tokens

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # answers stored before this revision keep finish_reason NULL: how they ended is unknown
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("finish_reason", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("embedding_tokens", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("embedding_tokens")
        batch_op.drop_column("finish_reason")
