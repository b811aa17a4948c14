"""Alembic environment of the movie service (run by services.common.migrations)."""

from services.common.migrations import run_env
from services.movie.models import Base

run_env(Base.metadata)
