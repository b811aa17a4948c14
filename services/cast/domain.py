"""Cast members and the rules about them. No gRPC, no SQL."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from services.common.errors import Violations

NAME_MAX = 200
NATIONALITY_MAX = 100
UPDATABLE_FIELDS = frozenset({"name", "nationality"})
BATCH_MAX = 1000


@dataclass(frozen=True)
class Cast:
    """A person who appears in movies."""

    id: str
    name: str
    nationality: str | None
    create_time: dt.datetime
    update_time: dt.datetime


@dataclass(frozen=True)
class CastFields:
    """The client-settable fields of a cast member, as sent (before validation)."""

    name: str
    nationality: str | None


def check_fields(
    fields: CastFields, prefix: str, violations: Violations, only: frozenset[str] = UPDATABLE_FIELDS
) -> CastFields:
    """Validated, normalised (trimmed) fields; problems go to ``violations``."""
    name = fields.name.strip()
    if "name" in only:
        if not name:
            violations.add(f"{prefix}.name", "is required")
        elif len(name) > NAME_MAX:
            violations.add(f"{prefix}.name", f"must be at most {NAME_MAX} characters")
    nationality = fields.nationality.strip() if fields.nationality is not None else None
    if "nationality" in only and nationality is not None and len(nationality) > NATIONALITY_MAX:
        violations.add(f"{prefix}.nationality", f"must be at most {NATIONALITY_MAX} characters")
    return CastFields(name=name, nationality=nationality or None)
