"""add movie request key

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, so rows made before (and creates without a key) need no value; the unique
    # index admits any number of NULLs on PostgreSQL and SQLite alike. Both steps are plain
    # ALTER TABLE / CREATE INDEX on SQLite too: batch mode copies no table for them.
    with op.batch_alter_table("movies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_key", sa.String(length=240), nullable=True))
        batch_op.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))
        batch_op.create_index("uq_movies_request_key", ["request_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("movies", schema=None) as batch_op:
        batch_op.drop_index("uq_movies_request_key")
        batch_op.drop_column("request_hash")
        batch_op.drop_column("request_key")
