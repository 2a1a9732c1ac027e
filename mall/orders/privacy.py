"""What the orders domain holds about a member (see `mall.members.privacy`).

Orders are accounting records and stay, with their lines and refunds. An account with
an order still under way (unpaid, paid, shipped) or a cash refund not yet through is not
deleted. On deletion each order's address snapshot loses the person (name, phone, street)."""

from __future__ import annotations

from mall.addresses.privacy import anonymised_snapshot
from mall.errors import MallError
from mall.members.privacy import PAYMENT_IN_PROGRESS, UNFINISHED_ORDERS, Section
from mall.orders.models import PAID, PENDING_PAYMENT, SHIPPED, Order, OrderLine, OrderRefund

SECTIONS = [
    Section("orders", Order, exclude=("request_key", "prepay")),
    Section("order_lines", OrderLine, member_field="order__member_id"),
    Section(
        "order_refunds",
        OrderRefund,
        member_field="order__member_id",
        exclude=("request_key", "staff_id"),
    ),
]

UNFINISHED = (PENDING_PAYMENT, PAID, SHIPPED)
# cash on its way back to the member (failed: ops must look, the money is still owed)
_CASH_IN_FLIGHT = ("pending", "processing", "failed", "abnormal")


async def blockers(member_id: int) -> list[MallError]:
    found: list[MallError] = []
    unfinished = await Order.filter(member_id=member_id, status__in=UNFINISHED).count()
    if unfinished:
        found.append(UNFINISHED_ORDERS(count=unfinished))
    if await OrderRefund.filter(
        order__member_id=member_id, cash_status__in=_CASH_IN_FLIGHT
    ).exists():
        found.append(PAYMENT_IN_PROGRESS())
    return found


async def erase(member_id: int) -> dict[str, int]:
    changed = 0
    for order_id, address in await Order.filter(
        member_id=member_id, address__isnull=False
    ).values_list("id", "address"):
        cleaned = anonymised_snapshot(address)
        if cleaned != address:
            await Order.filter(id=order_id).update(address=cleaned)
            changed += 1
    return {"order_addresses_anonymised": changed}
