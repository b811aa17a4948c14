"""Alembic environment of the cast service (run by services.common.migrations)."""

from services.cast.models import Base
from services.common.migrations import run_env

run_env(Base.metadata)
