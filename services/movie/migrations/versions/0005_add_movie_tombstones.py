"""add the movie service's tombstones (ids its consumer learnt were deleted elsewhere)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 18:15:00.000000
"""

from collections.abc import Sequence

from alembic import op

from services.common import tombstones

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    tombstones.create_v1(op)


def downgrade() -> None:
    tombstones.drop_v1(op)
