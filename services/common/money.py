"""Money: integer minor units and an ISO 4217 code. Never a float."""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.common.errors import Violations

_CURRENCY = re.compile(r"[A-Z]{3}")
# Ten billion minor units (USD 100 million) is far above any price; the cap keeps sums of
# many lines well inside a signed 64-bit integer.
MAX_AMOUNT_MINOR = 10_000_000_000


@dataclass(frozen=True)
class Money:
    """An amount in minor units (cents for USD) of one currency."""

    currency_code: str
    amount_minor: int

    def times(self, quantity: int) -> Money:
        return Money(self.currency_code, self.amount_minor * quantity)


def check_money(currency_code: str, amount_minor: int, field: str, violations: Violations) -> Money:
    """Validated money; problems go to ``violations`` under ``field``."""
    if not _CURRENCY.fullmatch(currency_code):
        violations.add(f"{field}.currency_code", "must be an ISO 4217 code such as USD")
    if amount_minor < 0:
        violations.add(f"{field}.amount_minor", "must not be negative")
    elif amount_minor > MAX_AMOUNT_MINOR:
        violations.add(f"{field}.amount_minor", f"must be at most {MAX_AMOUNT_MINOR}")
    return Money(currency_code, amount_minor)
