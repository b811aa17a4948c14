"""add user event tables (outbox, inbox) and the library (owned_movies)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.common.events import tables

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    tables.create_v1(op)
    op.create_table(
        "owned_movies",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("movie_id", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("title_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("purchase_time", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("user_id", "movie_id", name="uq_owned_movies_user_id_movie_id"),
    )
    op.create_index("ix_owned_movies_user_id_id", "owned_movies", ["user_id", "id"])
    op.create_index("ix_owned_movies_movie_id", "owned_movies", ["movie_id"])


def downgrade() -> None:
    op.drop_table("owned_movies")
    tables.drop_v1(op)
