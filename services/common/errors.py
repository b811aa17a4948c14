"""Domain errors: what a use case can refuse, in words that know nothing of gRPC.

Raised by domain and service code; turned into canonical gRPC status codes with
``google.rpc`` details in exactly one place, :mod:`services.common.status`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from services.common.ids import id_problem


@dataclass(frozen=True)
class FieldViolation:
    """One bad input field: ``field`` is a proto path such as ``movie.cast_ids[2]``."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error a use case raises on purpose.

    ``reason`` is an UPPER_SNAKE machine-readable cause (``google.rpc.ErrorInfo.reason``);
    ``metadata`` adds string facts a client may act on.
    """

    reason: str = "ERROR"

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = dict(metadata or {})


def summarize(violations: Sequence[FieldViolation]) -> str:
    """Field violations in one line: ``field: description; ...``."""
    return "; ".join(f"{v.field}: {v.description}" for v in violations)


class InvalidArgument(DomainError):
    """The request is malformed; ``violations`` says which fields and why."""

    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        violations: list[FieldViolation],
        message: str | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        super().__init__(message or f"invalid request: {summarize(violations)}", reason=reason)
        self.violations = list(violations)


class NotFound(DomainError):
    """The named resource does not exist (or the caller may not know that it does)."""

    reason = "NOT_FOUND"

    def __init__(self, resource_type: str, resource_id: str) -> None:
        super().__init__(
            f"{resource_type} {resource_id!r} not found",
            metadata={"resource_type": resource_type, "resource_id": resource_id},
        )
        self.resource_type = resource_type
        self.resource_id = resource_id


class AlreadyExists(DomainError):
    """A resource with the same unique key exists already."""

    reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    """The resource is not in a state that allows the operation."""

    reason = "FAILED_PRECONDITION"


class Unauthenticated(DomainError):
    """No valid credentials: missing, malformed, expired or wrongly signed token."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    """Valid credentials without the right to do this."""

    reason = "PERMISSION_DENIED"


class Unavailable(DomainError):
    """A dependency (database, peer service) cannot be reached; retrying later may work."""

    reason = "UNAVAILABLE"


class ResourceExhausted(DomainError):
    """Too much of something is in use right now (e.g. expensive checks); retry shortly.
    ``retry_after`` (seconds), when known, reaches the client as ``google.rpc.RetryInfo``."""

    reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after = retry_after


class DeadlineExceeded(DomainError):
    """The caller's deadline ran out while waiting for a dependency."""

    reason = "DEADLINE_EXCEEDED"


@dataclass
class Violations:
    """Collects field violations while checking a request, then raises them all at once."""

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.items.append(FieldViolation(field_path, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)


def require_id(value: str, field: str) -> None:
    """Refuse an id field that is empty or cannot be an id (see :func:`ids.id_problem`)."""
    problem = id_problem(value)
    if problem is not None:
        raise InvalidArgument([FieldViolation(field, problem)])


def require_text(value: str, field: str) -> None:
    """Refuse a required string field that is empty or blank, naming it."""
    violations = Violations()
    if not value.strip():
        violations.add(field, "is required")
    violations.raise_if_any()
