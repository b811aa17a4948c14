"""Payment providers: the small interface the order service charges through, and the
built-in test provider.

A real provider (Stripe, Adyen, ...) plugs in behind :class:`PaymentProvider` and is
chosen by ``CINEMA_PAYMENT_PROVIDER``. Its ``charge`` must honour ``idempotency_key``: the
same key charges at most once and answers the first result again. The order service
builds the key from the order id and the PayOrder ``request_id``, so a client retry after
a lost answer (or after the database failed to record a charge) never charges twice.

Test tokens of :class:`TestPaymentProvider` (``CINEMA_PAYMENT_PROVIDER=test``):

=========================  ===========================================
``tok_visa``               succeeds
``tok_mastercard``         succeeds
``tok_chargeDeclined``     declined, reason ``card_declined``
``tok_insufficientFunds``  declined, reason ``insufficient_funds``
``tok_expiredCard``        declined, reason ``expired_card``
anything else              INVALID_ARGUMENT on ``payment_token``
=========================  ===========================================
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from services.common.errors import FieldViolation, InvalidArgument
from services.common.money import Money
from services.order.domain import PaymentOutcome


@dataclass(frozen=True)
class ChargeResult:
    """The provider's answer to one charge: taken or declined (with why), and its reference."""

    outcome: PaymentOutcome
    decline_reason: str
    provider_reference: str


class PaymentProvider(Protocol):
    """Takes money for an order."""

    def charge(self, amount: Money, token: str, idempotency_key: str) -> ChargeResult:
        """Charge ``amount`` to the means of payment ``token`` stands for.

        A decline is a result, not an error. A token the provider does not accept raises
        InvalidArgument; an unreachable provider raises Unavailable (nothing was charged,
        or the same ``idempotency_key`` will answer the first result on a retry).
        """
        ...


_TEST_TOKENS: dict[str, tuple[PaymentOutcome, str]] = {
    "tok_visa": (PaymentOutcome.SUCCEEDED, ""),
    "tok_mastercard": (PaymentOutcome.SUCCEEDED, ""),
    "tok_chargeDeclined": (PaymentOutcome.DECLINED, "card_declined"),
    "tok_insufficientFunds": (PaymentOutcome.DECLINED, "insufficient_funds"),
    "tok_expiredCard": (PaymentOutcome.DECLINED, "expired_card"),
}
TEST_TOKENS = frozenset(_TEST_TOKENS)


class TestPaymentProvider:
    """A provider that moves no money: the outcome is decided by the token (see above).

    The reference is derived from the idempotency key, so a replayed charge answers the
    same reference, as a real provider does, without any state in this process.
    """

    # Tell pytest this is not a test class despite its name.
    __test__ = False

    def charge(self, amount: Money, token: str, idempotency_key: str) -> ChargeResult:
        """The outcome the test token stands for; unknown tokens are refused."""
        if token not in _TEST_TOKENS:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "payment_token",
                        "unknown test token; use one of " + ", ".join(sorted(_TEST_TOKENS)),
                    )
                ],
                reason="PAYMENT_TOKEN_INVALID",
            )
        outcome, decline_reason = _TEST_TOKENS[token]
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
        return ChargeResult(outcome, decline_reason, f"test_ch_{digest}")


def payment_provider(name: str) -> PaymentProvider:
    """The provider called ``name`` (``Settings.payment_provider``)."""
    if name == "test":
        return TestPaymentProvider()
    raise ValueError(f"unknown payment provider {name!r}")
