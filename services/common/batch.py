"""Batch reads (AIP-231 style): checked ids in, found resources out in request order."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from services.common.errors import Violations
from services.common.ids import id_problem

Resource = TypeVar("Resource")


def check_batch_ids(ids: Sequence[str], limit: int, field: str = "ids") -> None:
    """Refuse more than ``limit`` ids, or one that cannot be an id, naming its position."""
    violations = Violations()
    if len(ids) > limit:
        violations.add(field, f"at most {limit} ids per call")
    for index, value in enumerate(ids):
        problem = id_problem(value)
        if problem is not None:
            violations.add(f"{field}[{index}]", problem)
    violations.raise_if_any()


def in_request_order(
    ids: Sequence[str], fetch: Callable[[Sequence[str]], Mapping[str, Resource]]
) -> list[Resource]:
    """The resources that exist among ``ids``, each once, in the order first asked for.

    Ids that do not exist are left out, so the caller can name them.
    """
    if not ids:
        return []
    found = fetch(ids)
    return [found[i] for i in dict.fromkeys(ids) if i in found]
