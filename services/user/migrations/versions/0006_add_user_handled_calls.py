"""add the user service's handled_calls (updates, deletes and cancels Envoy may repeat)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 18:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

from services.common import handled_calls

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    handled_calls.create_v1(op)


def downgrade() -> None:
    handled_calls.drop_v1(op)
