"""add order event tables (outbox, inbox) and the index of order lines by movie

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 15:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

from services.common.events import tables

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    tables.create_v1(op)
    op.create_index("ix_order_items_movie_id", "order_items", ["movie_id"])


def downgrade() -> None:
    op.drop_index("ix_order_items_movie_id", table_name="order_items")
    tables.drop_v1(op)
