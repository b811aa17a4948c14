"""gRPC servicer of cinema.v1.OrderService: proto -> domain -> proto, nothing else.

Use cases are blocking (SQLAlchemy, peer calls, the payment provider), so each runs in
the worker threads.
"""

from __future__ import annotations

import grpc

from cinema.v1 import money_pb2, order_pb2, order_pb2_grpc
from services.common.errors import FieldViolation, InvalidArgument
from services.common.interceptors import current_request
from services.common.money import Money
from services.common.wire import timestamp
from services.order.domain import ItemRequest, Order, OrderStatus, Payment, PaymentOutcome
from services.order.service import OrderService

_STATUS_TO_PROTO = {
    OrderStatus.PENDING: order_pb2.ORDER_STATUS_PENDING,
    OrderStatus.PAID: order_pb2.ORDER_STATUS_PAID,
    OrderStatus.PAYMENT_FAILED: order_pb2.ORDER_STATUS_PAYMENT_FAILED,
    OrderStatus.CANCELLED: order_pb2.ORDER_STATUS_CANCELLED,
}
_STATUS_FROM_PROTO = {value: key for key, value in _STATUS_TO_PROTO.items()}
_OUTCOME_TO_PROTO = {
    PaymentOutcome.SUCCEEDED: order_pb2.PAYMENT_OUTCOME_SUCCEEDED,
    PaymentOutcome.DECLINED: order_pb2.PAYMENT_OUTCOME_DECLINED,
}


def _money(value: Money) -> money_pb2.Money:
    return money_pb2.Money(currency_code=value.currency_code, amount_minor=value.amount_minor)


def _payment_to_proto(payment: Payment) -> order_pb2.Payment:
    return order_pb2.Payment(
        id=payment.id,
        amount=_money(payment.amount),
        outcome=_OUTCOME_TO_PROTO[payment.outcome],
        decline_reason=payment.decline_reason,
        provider_reference=payment.provider_reference,
        create_time=timestamp(payment.create_time),
        request_id=payment.request_id,
    )


def order_to_proto(order: Order) -> order_pb2.Order:
    """The wire form of an order (request hashes stay inside)."""
    return order_pb2.Order(
        id=order.id,
        user_id=order.user_id,
        items=[
            order_pb2.OrderItem(
                movie_id=line.movie_id,
                quantity=line.quantity,
                title=line.title,
                unit_price=_money(line.unit_price),
                line_total=_money(line.line_total),
            )
            for line in order.lines
        ],
        total=_money(order.total),
        status=_STATUS_TO_PROTO[order.status],
        payments=[_payment_to_proto(p) for p in order.payments],
        create_time=timestamp(order.create_time),
        update_time=timestamp(order.update_time),
    )


def _status_filter(value: int) -> OrderStatus | None:
    """The status to filter by; None when unset. Proto enums are open, so an unknown
    number can arrive and is refused rather than ignored."""
    if value == order_pb2.ORDER_STATUS_UNSPECIFIED:
        return None
    if value not in _STATUS_FROM_PROTO:
        raise InvalidArgument([FieldViolation("status", f"unknown order status {value}")])
    return _STATUS_FROM_PROTO[value]  # type: ignore[index]


class OrderServicer(order_pb2_grpc.OrderServiceServicer):
    def __init__(self, service: OrderService) -> None:
        self._service = service

    def CreateOrder(
        self, request: order_pb2.CreateOrderRequest, context: grpc.ServicerContext
    ) -> order_pb2.Order:
        items = [ItemRequest(i.movie_id, i.quantity) for i in request.order.items]
        order = self._service.create_order(items, request.request_id, current_request())
        return order_to_proto(order)

    def GetOrder(
        self, request: order_pb2.GetOrderRequest, context: grpc.ServicerContext
    ) -> order_pb2.Order:
        order = self._service.get_order(request.id, current_request())
        return order_to_proto(order)

    def ListOrders(
        self, request: order_pb2.ListOrdersRequest, context: grpc.ServicerContext
    ) -> order_pb2.ListOrdersResponse:
        page = self._service.list_orders(
            request.page_size,
            request.page_token,
            user_id=request.user_id,
            status=_status_filter(request.status),
            context=current_request(),
        )
        return order_pb2.ListOrdersResponse(
            orders=[order_to_proto(o) for o in page.items], next_page_token=page.next_page_token
        )

    def PayOrder(
        self, request: order_pb2.PayOrderRequest, context: grpc.ServicerContext
    ) -> order_pb2.Order:
        order = self._service.pay_order(
            request.id,
            request.payment_token,
            request.request_id,
            current_request(),
        )
        return order_to_proto(order)

    def CancelOrder(
        self, request: order_pb2.CancelOrderRequest, context: grpc.ServicerContext
    ) -> order_pb2.Order:
        order = self._service.cancel_order(request.id, current_request())
        return order_to_proto(order)
