"""add registrations (a registration waits here for its mailed link)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 23:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "registrations",
        sa.Column("token_hash", sa.String(length=64), primary_key=True),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("email_key", sa.String(length=254), nullable=False),
        sa.Column("display_name", sa.String(length=100), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=True),
        sa.Column("request_key", sa.String(length=240), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
    )
    op.create_index("ix_registrations_expire_time", "registrations", ["expire_time"])
    op.create_index("uq_registrations_request_key", "registrations", ["request_key"], unique=True)


def downgrade() -> None:
    op.drop_table("registrations")
