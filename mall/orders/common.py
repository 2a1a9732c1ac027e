"""Error codes of the orders domain, defined once here (they register globally by code),
the order keys and the order lookups shared by the order modules.

Re-exported by mall.orders.service, which other domains and tests import."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from mall.errors import ErrorCode
from mall.i18n import _
from mall.kit import clock
from mall.orders.models import (
    Order,
)

if TYPE_CHECKING:
    from mall.orders.schemas import CheckoutBreakdown
    from mall.pricing.calc import PricedLine

ITEM_UNAVAILABLE = ErrorCode("ORDER_ITEM_UNAVAILABLE", 409, _("{name} is not on sale now"))
DELIVERY_UNAVAILABLE = ErrorCode(
    "ORDER_DELIVERY_UNAVAILABLE", 422, _("{name} cannot be delivered this way")
)
ORDER_NOT_FOUND = ErrorCode("ORDER_NOT_FOUND", 404, _("Order not found"))
ADDRESS_REQUIRED = ErrorCode(
    "ORDER_ADDRESS_REQUIRED", 422, _("Choose a delivery address for this order")
)
OUT_OF_STOCK = ErrorCode("ORDER_OUT_OF_STOCK", 409, _("{name} is sold out or too few are left"))
COUPON_NOT_APPLICABLE = ErrorCode(
    "ORDER_COUPON_NOT_USABLE", 409, _("The chosen coupon cannot be used on this order: {why}")
)
NOT_PAYABLE = ErrorCode("ORDER_NOT_PAYABLE", 409, _("This order is {status} and needs no payment"))
PAYMENT_EXPIRED = ErrorCode(
    "ORDER_PAYMENT_EXPIRED", 409, _("The time to pay for this order has run out")
)
PAY_UNAVAILABLE = ErrorCode(
    "ORDER_PAY_UNAVAILABLE", 503, _("WeChat Pay cannot be reached right now; please try again")
)
NOT_CANCELLABLE = ErrorCode(
    "ORDER_NOT_CANCELLABLE", 409, _("This order is {status} and can no longer be cancelled")
)
NOT_REFUNDABLE = ErrorCode(
    "ORDER_NOT_REFUNDABLE", 409, _("This order is {status}; it cannot be refunded this way")
)
REFUND_LINE_UNKNOWN = ErrorCode(
    "ORDER_REFUND_LINE_UNKNOWN", 422, _("Line {line_id} is not part of this order")
)
REFUND_TOO_MANY = ErrorCode(
    "ORDER_REFUND_TOO_MANY", 409, _("Only {left} of line {line_id} can still be refunded")
)
NOTHING_TO_REFUND = ErrorCode(
    "ORDER_NOTHING_TO_REFUND", 409, _("Nothing is left to refund on this order")
)
NOT_SHIPPABLE = ErrorCode("ORDER_NOT_SHIPPABLE", 409, _("This order is {status} and cannot ship"))
TRACKING_REQUIRED = ErrorCode(
    "ORDER_TRACKING_REQUIRED", 422, _("An express order needs a tracking number")
)
NOT_COMPLETABLE = ErrorCode(
    "ORDER_NOT_COMPLETABLE", 409, _("This order is {status} and cannot be completed")
)
ORDER_CHANGED = ErrorCode(
    "ORDER_CHANGED", 409, _("The order changed meanwhile; reload it and try again")
)
# raised to WeChat Pay's notification (answered 5xx so it retries) and logged for on-call
REFUND_NOT_FOUND = ErrorCode("ORDER_REFUND_NOT_FOUND", 404, _("Order refund not found"))
REFUND_NOT_ABNORMAL = ErrorCode(
    "ORDER_REFUND_NOT_ABNORMAL",
    409,
    _("Only a refund WeChat Pay could not pay out (abnormal) can be resolved this way"),
)
REFUND_RETRY_REFUSED = ErrorCode(
    "ORDER_REFUND_RETRY_REFUSED",
    409,
    _(
        "WeChat Pay would not pay this refund to the original account again "
        "({wechat_code}); pay it out another way and mark it paid offline"
    ),
)
PAYMENT_UNKNOWN = ErrorCode(
    "ORDER_PAYMENT_UNKNOWN", 500, _("No order matches the payment {out_trade_no}")
)
PAYMENT_MISMATCH = ErrorCode(
    "ORDER_PAYMENT_MISMATCH", 500, _("The payment does not match order {number}")
)
TRADE_PREFIX = "O"


def out_trade_no(order: Order) -> str:
    return f"{TRADE_PREFIX}{order.number}"


def _ref(order: Order) -> str:
    return f"order:{order.number}"


def _points_key(order: Order) -> str:
    return f"order:{order.number}:points"


def _wallet_key(order: Order) -> str:
    return f"order:{order.number}:wallet"


def _earn_key(order: Order) -> str:
    return f"order:{order.number}:earn"


def _new_number() -> str:
    """20 digits: Shanghai time to the second and 8 random digits."""
    return clock.local_now().strftime("%y%m%d%H%M%S") + f"{secrets.randbelow(10**8):08d}"


# --- member actions -------------------------------------------------------------------


async def own_order(member_id: int, order_id: int) -> Order:
    order = await Order.get_or_none(id=order_id, member_id=member_id)
    if order is None:
        raise ORDER_NOT_FOUND()
    return order


async def get_order(order_id: int) -> Order:
    order = await Order.get_or_none(id=order_id)
    if order is None:
        raise ORDER_NOT_FOUND()
    return order


def order_money(b: CheckoutBreakdown) -> dict[str, Any]:
    """An order's columns read from its breakdown (a copy of which it keeps), for a cart's
    checkout and a held unit's order alike."""
    return {
        "breakdown": b.model_dump(mode="json"),
        "list_total_fen": b.list_total_fen,
        "member_total_fen": b.member_total_fen,
        "coupon_id": b.coupon_id,
        "coupon_fen": b.coupon_fen,
        "goods_fen": b.goods_after_coupon_fen,
        "points_used": b.points_used,
        "points_fen": b.points_fen,
        "shipping_fen": b.shipping_fen,
        "amount_due_fen": b.amount_due_fen,
        "wallet_fen": b.wallet_fen,
        "cash_fen": b.cash_fen,
    }


def line_money(line: PricedLine) -> dict[str, Any]:
    """An order line's money columns, from its priced line."""
    return {
        "unit_list_fen": line.unit_list_fen,
        "unit_member_fen": line.unit_member_fen,
        "list_total_fen": line.list_total_fen,
        "member_total_fen": line.member_total_fen,
        "coupon_fen": line.coupon_fen,
        "points_fen": line.points_fen,
        "due_fen": line.due_fen,
    }
