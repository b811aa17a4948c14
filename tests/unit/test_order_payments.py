"""The built-in test payment provider: documented tokens, stable references."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.money import Money
from services.order.domain import PaymentOutcome
from services.order.payments import TEST_TOKENS, TestPaymentProvider, payment_provider

AMOUNT = Money("USD", 1998)


@pytest.mark.parametrize(
    ("token", "outcome", "reason"),
    [
        ("tok_visa", PaymentOutcome.SUCCEEDED, ""),
        ("tok_mastercard", PaymentOutcome.SUCCEEDED, ""),
        ("tok_chargeDeclined", PaymentOutcome.DECLINED, "card_declined"),
        ("tok_insufficientFunds", PaymentOutcome.DECLINED, "insufficient_funds"),
        ("tok_expiredCard", PaymentOutcome.DECLINED, "expired_card"),
    ],
)
def test_documented_tokens(token: str, outcome: PaymentOutcome, reason: str) -> None:
    result = TestPaymentProvider().charge(AMOUNT, token, "o1:r1")
    assert result.outcome is outcome
    assert result.decline_reason == reason
    assert result.provider_reference.startswith("test_ch_")


@pytest.mark.parametrize("token", ["", "tok_unknown", "TOK_VISA", "4242424242424242"])
def test_other_tokens_are_invalid_arguments(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        TestPaymentProvider().charge(AMOUNT, token, "o1:r1")
    assert [v.field for v in caught.value.violations] == ["payment_token"]


def test_a_replayed_idempotency_key_answers_the_same_reference() -> None:
    provider = TestPaymentProvider()
    first = provider.charge(AMOUNT, "tok_visa", "o1:r1")
    assert provider.charge(AMOUNT, "tok_visa", "o1:r1") == first
    assert provider.charge(AMOUNT, "tok_visa", "o1:r2").provider_reference != (
        first.provider_reference
    )


def test_the_provider_is_chosen_by_name() -> None:
    assert isinstance(payment_provider("test"), TestPaymentProvider)
    assert "tok_visa" in TEST_TOKENS
    with pytest.raises(ValueError, match="unknown payment provider"):
        payment_provider("stripe")
