"""add movie event tables (outbox, inbox)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 15:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

from services.common.events import tables

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    tables.create_v1(op)


def downgrade() -> None:
    tables.drop_v1(op)
