"""Alembic environment of the user service (run by services.common.migrations)."""

from services.common.migrations import run_env
from services.user.models import Base

run_env(Base.metadata)
