"""Alembic environment of the order service (run by services.common.migrations)."""

from services.common.migrations import run_env
from services.order.models import Base

run_env(Base.metadata)
