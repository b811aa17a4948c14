"""refresh tokens remember the call that exchanged them and the token they replaced

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 07:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("refresh_tokens") as table:
        table.add_column(sa.Column("use_call", sa.String(length=200), nullable=True))
        table.add_column(sa.Column("parent_hash", sa.String(length=64), nullable=True))
    op.create_index("ix_refresh_tokens_parent_hash", "refresh_tokens", ["parent_hash"])


def downgrade() -> None:
    op.drop_index("ix_refresh_tokens_parent_hash", table_name="refresh_tokens")
    with op.batch_alter_table("refresh_tokens") as table:
        table.drop_column("parent_hash")
        table.drop_column("use_call")
