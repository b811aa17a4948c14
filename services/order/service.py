"""Use cases of the order service.

Each use case writes in one transaction (reads need none: each read of orders is
consistent on its own, see :mod:`services.order.repository`), and every call to a peer
service (who is buying, what the movies cost) happens before that transaction opens: a
peer that is down or too slow fails the call with UNAVAILABLE or DEADLINE_EXCEEDED and
nothing is written. A buy makes two peer calls, both in CreateOrder (one GetUser, one
BatchGetMovies); PayOrder charges the total stored at creation and calls no peer.

Decisions a client can observe:

* The buyer is the token's subject. When the user service no longer knows that account
  (deleted after the token was issued), CreateOrder is refused with PERMISSION_DENIED,
  reason ``BUYER_NOT_FOUND``: the token is genuine, but it no longer stands for a buyer.
  This is about who is calling, not about the state of an order, hence not
  FAILED_PRECONDITION. The verified token proves who is calling, not that the account
  still exists: tokens are not revocable (README, "Known limits"), so this GetUser is the
  one check that keeps a deleted account from placing new orders. It can go once the
  order service learns of revoked sessions or deleted accounts by itself.
* Someone else's order is NOT_FOUND for a non-admin in GetOrder, PayOrder and
  CancelOrder, exactly as if it did not exist, so order ids cannot be probed. An admin may
  read, pay and cancel any order (the operator role manages every order).
* ListOrders with another user's ``user_id`` is PERMISSION_DENIED for a non-admin: the
  filter is the caller's own input, so refusing it reveals nothing.
* Idempotency is kept by unique keys in the database (see :mod:`services.order.models`),
  so it holds across replicas and restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from services.common import handled_calls, pagination
from services.common.clock import Clock, utc_now
from services.common.context import Principal, RequestContext
from services.common.errors import (
    AlreadyExists,
    NotFound,
    PermissionDenied,
    Violations,
    require_id,
)
from services.common.ids import id_problem, new_id
from services.order import events
from services.order.domain import (
    PAYMENT_TOKEN_MAX,
    REASON_KEY_REUSED,
    CatalogueMovie,
    ItemRequest,
    Order,
    OrderStatus,
    Payment,
    cancel,
    check_order_request,
    check_payable,
    check_request_id,
    order_request_hash,
    payment_request_hash,
    price_order,
    record_payment,
)
from services.order.payments import PaymentProvider
from services.order.repository import DuplicateOrderRequest, OrderUnitOfWork

UnitOfWorkFactory = Callable[..., OrderUnitOfWork]

REASON_BUYER_NOT_FOUND = "BUYER_NOT_FOUND"
#: What an event (a deleted account or movie) cancels: orders not paid, not cancelled.
UNPAID = (OrderStatus.PENDING, OrderStatus.PAYMENT_FAILED)


class UserDirectory(Protocol):
    """The order service's view of the user service."""

    def exists(self, user_id: str, context: RequestContext) -> bool:
        """Whether the account ``user_id`` exists (asked on behalf of the caller)."""
        ...


class MovieCatalogue(Protocol):
    """The order service's view of the movie service."""

    def get_many(self, movie_ids: Sequence[str], context: RequestContext) -> list[CatalogueMovie]:
        """The movies that exist among ``movie_ids``, in ONE call."""
        ...


#: The tombstones' kinds (services/common/tombstones.py).
USER = "user"
MOVIE = "movie"


def _buyer_not_found(user_id: str) -> PermissionDenied:
    return PermissionDenied(
        "the account this token was issued to no longer exists",
        reason=REASON_BUYER_NOT_FOUND,
        metadata={"user_id": user_id},
    )


def _refuse_deleted(
    uow: OrderUnitOfWork,
    user_id: str,
    items: Sequence[ItemRequest],
    found: Sequence[CatalogueMovie],
) -> None:
    """Refuse, as the peers' answers would have, a buyer or a movie that the consumer
    learnt was deleted since the user and movie services were asked (in the order's
    transaction: services/common/tombstones.py)."""
    buried = uow.tombstones.buried({USER: [user_id], MOVIE: [movie.id for movie in found]})
    if (USER, user_id) in buried:
        raise _buyer_not_found(user_id)
    if buried:  # priced without them, the order names unknown movies: INVALID_ARGUMENT
        price_order(items, {m.id: m for m in found if (MOVIE, m.id) not in buried})


def _visible(order: Order | None, order_id: str, principal: Principal) -> Order:
    """The order, if the caller may see it; otherwise NOT_FOUND, never a hint it exists."""
    if order is None or (not principal.is_admin and order.user_id != principal.subject):
        raise NotFound("order", order_id)
    return order


def _key_reused(request_id: str, order_id: str, what: str) -> AlreadyExists:
    return AlreadyExists(
        f"request_id {request_id!r} was already used for {what}; "
        "use a new request_id for a different request",
        reason=REASON_KEY_REUSED,
        metadata={"request_id": request_id, "order_id": order_id},
    )


class OrderService:
    """Create, read, pay and cancel orders."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        users: UserDirectory,
        movies: MovieCatalogue,
        payments: PaymentProvider,
        clock: Clock = utc_now,
    ) -> None:
        self._uow = uow
        self._users = users
        self._movies = movies
        self._payments = payments
        self._clock = clock

    def _replay(self, order: Order, request_hash: str) -> Order:
        """The first order of a retried CreateOrder, or ALREADY_EXISTS if it asked otherwise."""
        if order.request_hash != request_hash:
            raise _key_reused(order.request_id, order.id, "an order with other items")
        return order

    def create_order(
        self, items: Sequence[ItemRequest], request_id: str, context: RequestContext
    ) -> Order:
        """A new PENDING order for the caller, priced from the catalogue; on a retry with
        the same ``request_id``, the first order.

        A retry is answered from the database before any peer is asked, so it succeeds
        even after the movies changed or were deleted. Concurrent first calls (on any
        replica) all price the order, but the unique key ``(user_id, request_id)`` lets
        one insert win; the others roll back and answer the winner's order.
        """
        principal = context.require_principal()
        violations = Violations()
        clean = check_order_request(items, request_id, violations)
        violations.raise_if_any()
        request_hash = order_request_hash(clean)
        with self._uow(read_only=True) as uow:
            existing = uow.orders.find_by_request(principal.subject, request_id)
        if existing is not None:
            return self._replay(existing, request_hash)

        if not self._users.exists(principal.subject, context):
            raise _buyer_not_found(principal.subject)
        found = self._movies.get_many([item.movie_id for item in clean], context)
        lines, total = price_order(clean, {movie.id: movie for movie in found})
        now = self._clock()
        order = Order(
            id=new_id(),
            user_id=principal.subject,
            request_id=request_id,
            request_hash=request_hash,
            lines=lines,
            total=total,
            status=OrderStatus.PENDING,
            payments=(),
            create_time=now,
            update_time=now,
        )
        try:
            with self._uow() as uow:
                _refuse_deleted(uow, principal.subject, clean, found)
                uow.orders.add(order)
                uow.commit()
        except DuplicateOrderRequest as lost:
            with self._uow(read_only=True) as uow:
                winner = uow.orders.find_by_request(principal.subject, request_id)
            if winner is None:
                raise RuntimeError("order insert failed on a key that does not exist") from lost
            return self._replay(winner, request_hash)
        return order

    def get_order(self, order_id: str, context: RequestContext) -> Order:
        """One order: the caller's own, or any for an admin."""
        principal = context.require_principal()
        require_id(order_id, "id")
        with self._uow(read_only=True) as uow:
            order = uow.orders.get(order_id)
        return _visible(order, order_id, principal)

    def list_orders(
        self,
        page_size: int,
        page_token: str,
        *,
        user_id: str,
        status: OrderStatus | None,
        context: RequestContext,
    ) -> pagination.Page[Order]:
        """A page of orders, newest first: the caller's own; an admin's choice of user, or all.

        Ids are UUIDv7 (time-ordered), so "newest first" is ``id DESC`` and the page token
        is the last id, bound to the filters (including the effective user).
        """
        principal = context.require_principal()
        user_filter = user_id.strip()
        if not principal.is_admin:
            if user_filter and user_filter != principal.subject:
                raise PermissionDenied("a user may list only their own orders")
            user_filter = principal.subject
        filters = {"user_id": user_filter, "status": status.value if status else ""}

        def fetch(before: str | None, limit: int) -> list[Order]:
            with self._uow(read_only=True) as uow:
                return uow.orders.list_page(
                    before, limit, user_id=user_filter or None, status=status
                )

        return pagination.keyset_page(page_size, page_token, filters, fetch)

    def pay_order(
        self, order_id: str, payment_token: str, request_id: str, context: RequestContext
    ) -> Order:
        """Charge the order's total and record the attempt; the order after it.

        Order of checks, all under the order's row lock: visible to the caller (else
        NOT_FOUND); an attempt with this ``request_id`` exists (answer the order as it
        is now, charging nothing; ALREADY_EXISTS if that attempt used another token);
        payable (else FAILED_PRECONDITION: ``ORDER_ALREADY_PAID`` or
        ``ORDER_NOT_PAYABLE``); then charge, record, transition, commit.

        Why the provider is called inside the transaction that holds the lock: the lock
        (``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) is what
        makes 20 concurrent PayOrder calls charge exactly once. The first caller charges
        and commits PAID; the others then read PAID and are refused without charging.
        That is simple and correct for a fast provider such as the built-in test one.
        The cost: a slow provider holds the lock for its latency (on SQLite, every write
        of this database waits), and a crash between charge and commit leaves a charge
        with no record here. The provider's idempotency key ``<order id>:<request id>``
        covers the latter: the client's retry with the same request id replays the
        provider's first answer instead of charging again.

        A real provider with seconds of latency wants two phases instead: record the
        attempt as PROCESSING and commit (releasing the lock; a second caller sees the
        attempt in flight and is refused), charge outside any transaction, then record
        the outcome in a second transaction, with a reconciler that settles attempts left
        PROCESSING by a crash by asking the provider about their idempotency key. That
        needs a PROCESSING outcome in the contract and the reconciler; until a slow
        provider exists the one-phase form is the right amount of machinery.
        """
        principal = context.require_principal()
        violations = Violations()
        if (problem := id_problem(order_id)) is not None:
            violations.add("id", problem)
        if not payment_token.strip():
            violations.add("payment_token", "is required")
        elif len(payment_token) > PAYMENT_TOKEN_MAX:
            violations.add("payment_token", f"must be at most {PAYMENT_TOKEN_MAX} characters")
        check_request_id(request_id, "request_id", violations)
        violations.raise_if_any()
        request_hash = payment_request_hash(payment_token)

        with self._uow() as uow:
            order = _visible(uow.orders.get(order_id, for_update=True), order_id, principal)
            earlier = order.payment_for_request(request_id)
            if earlier is not None:
                if earlier.request_hash != request_hash:
                    raise _key_reused(request_id, order.id, "a payment with another token")
                return order
            check_payable(order)
            result = self._payments.charge(
                order.total, payment_token, idempotency_key=f"{order.id}:{request_id}"
            )
            now = self._clock()
            payment = Payment(
                id=new_id(),
                request_id=request_id,
                request_hash=request_hash,
                amount=order.total,
                outcome=result.outcome,
                decline_reason=result.decline_reason,
                provider_reference=result.provider_reference,
                create_time=now,
            )
            after = record_payment(order, payment, now)
            uow.orders.add_payment(order.id, payment)
            uow.orders.save_status(after)
            if after.status is OrderStatus.PAID:
                uow.outbox.add(events.order_paid(after), now)
            uow.commit()
        return after

    def cancel_order(self, order_id: str, context: RequestContext) -> Order:
        """Cancel a PENDING or PAYMENT_FAILED order; FAILED_PRECONDITION otherwise. A repeat
        of the call (:mod:`services.common.handled_calls`) answers the order as it is now."""
        principal = context.require_principal()
        require_id(order_id, "id")
        call = handled_calls.call_of(context, "CancelOrder", {"id": order_id})

        def cancel_it() -> Order:
            with self._uow() as uow:
                handled_calls.claim(uow, call, self._clock())
                order = _visible(uow.orders.get(order_id, for_update=True), order_id, principal)
                cancelled = cancel(order, self._clock())
                uow.orders.save_status(cancelled)
                uow.outbox.add(
                    events.order_cancelled(cancelled, events.REQUESTED), cancelled.update_time
                )
                uow.commit()
            return cancelled

        return handled_calls.once(
            call, self._uow, cancel_it, lambda: self.get_order(order_id, context)
        )

    def forget_user(self, uow: OrderUnitOfWork, user_id: str) -> None:
        """A deleted account's unpaid orders are cancelled (event handler: runs in the
        handler's unit of work, which commits). The account is buried first, so an order
        that checked it before the delete cannot commit unseen after this scan
        (services/common/tombstones.py)."""
        uow.tombstones.bury(USER, user_id, self._clock())
        self.cancel_unpaid(uow, uow.orders.unpaid_of_user(user_id), events.USER_DELETED)

    def forget_movie(self, uow: OrderUnitOfWork, movie_id: str) -> None:
        """The unpaid orders of a deleted movie are cancelled; as :meth:`forget_user`."""
        uow.tombstones.bury(MOVIE, movie_id, self._clock())
        self.cancel_unpaid(uow, uow.orders.unpaid_with_movie(movie_id), events.MOVIE_DELETED)

    def cancel_unpaid(
        self, uow: OrderUnitOfWork, order_ids: Sequence[str], reason: events.Reason.ValueType
    ) -> None:
        """Cancel those of ``order_ids`` that are still unpaid, each with its OrderCancelled
        (event handler: runs in the handler's unit of work, which commits)."""
        for order_id in order_ids:
            order = uow.orders.get(order_id, for_update=True)
            if order is None or order.status not in UNPAID:
                continue  # paid or cancelled since it was found
            cancelled = cancel(order, self._clock())
            uow.orders.save_status(cancelled)
            uow.outbox.add(events.order_cancelled(cancelled, reason), cancelled.update_time)
