"""Update masks (AIP-134): which fields an Update changes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from services.common.errors import FieldViolation, InvalidArgument


def resolve_update_mask(
    paths: Sequence[str], *, allowed: Iterable[str], populated: Iterable[str]
) -> frozenset[str]:
    """The fields to change.

    An empty mask means every populated field (AIP-134), so a JSON PATCH of
    ``{"title": "x"}`` changes the title alone. Unknown paths, ``*`` and output-only
    fields are refused with a field violation on ``update_mask``.
    """
    allowed_set = frozenset(allowed)
    if not paths:
        chosen = frozenset(populated) & allowed_set
        if not chosen:
            raise InvalidArgument(
                [FieldViolation("update_mask", "nothing to update: name the fields to change")]
            )
        return chosen
    unknown = [p for p in paths if p not in allowed_set]
    if unknown:
        raise InvalidArgument(
            [
                FieldViolation(
                    "update_mask",
                    f"unknown or read-only field {p!r}; allowed: {', '.join(sorted(allowed_set))}",
                )
                for p in unknown
            ]
        )
    return frozenset(paths)
