"""Checkout composes catalog, coupons, points, pricing, the wallet and WeChat Pay.

Placing an order is one database transaction: the order and its lines (a price snapshot),
SKU stock taken by conditional updates, the coupon locked, the points held and the wallet
part paid. If any step fails, nothing of it stays. The WeChat Pay order is created only
after the commit; if that call fails the order still waits for payment and the shopper
retries with `POST /orders/{id}/pay`.

Resource order inside every transaction, to avoid deadlocks: order row, SKUs (by id),
coupon, member (points), wallet.

The wallet (`mall.wallet.service`) and WeChat Pay (`mall.wechat.pay`) are plain
neighbours; this domain's payment handlers (`PAYMENTS`) are registered with WeChat Pay by
the composition root (`mall.app`)."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from tortoise.queryset import QuerySet

from mall.catalog import service as catalog_service  # noqa: F401 (tests reach it here)
from mall.kit import clock
from mall.kit.masking import mask_phone
from mall.kit.pagination import cursor_page
from mall.orders.cart import cart_lines as cart_lines
from mall.orders.cart import preview as preview
from mall.orders.cart import pricing_rules as pricing_rules
from mall.orders.cart import spread as spread
from mall.orders.checkout import on_order_paid as on_order_paid
from mall.orders.checkout import pay_order as pay_order
from mall.orders.checkout import place_order as place_order
from mall.orders.common import ADDRESS_REQUIRED as ADDRESS_REQUIRED
from mall.orders.common import COUPON_NOT_APPLICABLE as COUPON_NOT_APPLICABLE
from mall.orders.common import DELIVERY_UNAVAILABLE as DELIVERY_UNAVAILABLE
from mall.orders.common import ITEM_UNAVAILABLE as ITEM_UNAVAILABLE
from mall.orders.common import NOT_CANCELLABLE as NOT_CANCELLABLE
from mall.orders.common import NOT_COMPLETABLE as NOT_COMPLETABLE
from mall.orders.common import NOT_PAYABLE as NOT_PAYABLE
from mall.orders.common import NOT_REFUNDABLE as NOT_REFUNDABLE
from mall.orders.common import NOT_SHIPPABLE as NOT_SHIPPABLE
from mall.orders.common import NOTHING_TO_REFUND as NOTHING_TO_REFUND
from mall.orders.common import ORDER_CHANGED as ORDER_CHANGED
from mall.orders.common import ORDER_NOT_FOUND as ORDER_NOT_FOUND
from mall.orders.common import OUT_OF_STOCK as OUT_OF_STOCK
from mall.orders.common import PAY_UNAVAILABLE as PAY_UNAVAILABLE
from mall.orders.common import PAYMENT_EXPIRED as PAYMENT_EXPIRED
from mall.orders.common import PAYMENT_MISMATCH as PAYMENT_MISMATCH
from mall.orders.common import PAYMENT_UNKNOWN as PAYMENT_UNKNOWN
from mall.orders.common import REFUND_LINE_UNKNOWN as REFUND_LINE_UNKNOWN
from mall.orders.common import REFUND_NOT_ABNORMAL as REFUND_NOT_ABNORMAL
from mall.orders.common import REFUND_NOT_FOUND as REFUND_NOT_FOUND
from mall.orders.common import REFUND_RETRY_REFUSED as REFUND_RETRY_REFUSED
from mall.orders.common import REFUND_TOO_MANY as REFUND_TOO_MANY
from mall.orders.common import TRACKING_REQUIRED as TRACKING_REQUIRED
from mall.orders.common import TRADE_PREFIX as TRADE_PREFIX
from mall.orders.common import get_order as get_order
from mall.orders.common import out_trade_no as out_trade_no
from mall.orders.common import own_order as own_order
from mall.orders.held import HeldUnit as HeldUnit
from mall.orders.held import place_held_order as place_held_order
from mall.orders.holders import BLINDBOX as BLINDBOX
from mall.orders.holders import POINTSMALL as POINTSMALL
from mall.orders.holders import SECKILL as SECKILL
from mall.orders.holders import SOURCES as SOURCES
from mall.orders.lifecycle import _referral_event as _referral_event
from mall.orders.lifecycle import cancel as cancel
from mall.orders.lifecycle import close_overdue as close_overdue
from mall.orders.lifecycle import complete as complete
from mall.orders.lifecycle import complete_delivered as complete_delivered
from mall.orders.lifecycle import refund as refund
from mall.orders.lifecycle import retry_cash_refunds as retry_cash_refunds
from mall.orders.lifecycle import ship as ship
from mall.orders.models import CANCELLED as CANCELLED
from mall.orders.models import CLOSED as CLOSED
from mall.orders.models import PENDING_PAYMENT as PENDING_PAYMENT
from mall.orders.models import REFUNDED as REFUNDED
from mall.orders.models import Order as Order
from mall.orders.models import (
    OrderLine,
    OrderRefund,
)
from mall.orders.refunds import LineRefund as LineRefund
from mall.orders.refunds import RefundPlan as RefundPlan
from mall.orders.refunds import abnormal_refunds as abnormal_refunds
from mall.orders.refunds import members_of_refunds as members_of_refunds
from mall.orders.refunds import on_order_refund as on_order_refund
from mall.orders.refunds import plan_refund as plan_refund
from mall.orders.refunds import resolve_abnormal_refund as resolve_abnormal_refund
from mall.orders.refunds import send_cash_refund as send_cash_refund
from mall.orders.refunds import wechat_refund_no as wechat_refund_no
from mall.orders.schemas import (
    AdminOrderOut,
    CheckoutBreakdown,
    OrderLineOut,
    OrderOut,
    OrderSummary,
    PaymentParams,
    RefundOut,
)
from mall.orders.schemas import OrderIn as OrderIn
from mall.wechat import pay as wechat_pay

# --- reading ------------------------------------------------------------------------


async def order_out(order: Order, *, admin: bool = False) -> OrderOut:
    lines = await OrderLine.filter(order_id=order.id).order_by("id")
    refunds = await OrderRefund.filter(order_id=order.id).order_by("id")
    payment = None
    if order.status == PENDING_PAYMENT and order.prepay:
        payment = PaymentParams.model_validate(order.prepay)
    data: dict[str, Any] = {
        name: getattr(order, name)
        for name in OrderOut.model_fields
        if name not in ("lines", "breakdown", "payment", "payment_error", "refunds", "address")
    }
    data |= {
        "address": order.address,
        "lines": [OrderLineOut.model_validate(ln) for ln in lines],
        "breakdown": CheckoutBreakdown.model_validate(order.breakdown),
        "payment": payment,
        "payment_error": (order.pay_error or None) if order.status == PENDING_PAYMENT else None,
        "refunds": [RefundOut.model_validate(r) for r in refunds],
    }
    if admin:
        data |= {
            "member_id": order.member_id,
            "transaction_id": order.transaction_id,
            "refunded_cash_fen": order.refunded_cash_fen,
            "refunded_wallet_fen": order.refunded_wallet_fen,
        }
        return AdminOrderOut.model_validate(data)
    return OrderOut.model_validate(data)


async def summaries(orders: list[Order]) -> list[OrderSummary]:
    lines: dict[int, list[OrderLine]] = defaultdict(list)
    if orders:
        for line in await OrderLine.filter(order_id__in=[o.id for o in orders]).order_by("id"):
            lines[line.order_id].append(line)
    return [
        OrderSummary(
            id=o.id,
            number=o.number,
            status=o.status,
            delivery=o.delivery,
            amount_due_fen=o.amount_due_fen,
            cash_fen=o.cash_fen,
            wallet_fen=o.wallet_fen,
            points_used=o.points_used,
            item_count=sum(ln.quantity for ln in lines[o.id]),
            first_item_name=lines[o.id][0].name if lines[o.id] else "",
            pay_deadline=o.pay_deadline,
            created_at=o.created_at,
        )
        for o in orders
    ]


async def list_orders(
    member_id: int, status: str | None, cursor: str | None, size: int
) -> tuple[list[OrderSummary], str | None]:
    query = Order.filter(member_id=member_id)
    if status:
        query = query.filter(status=status)
    rows, next_cursor = await cursor_page(query, cursor, size)
    return await summaries(rows), next_cursor


async def search_orders(
    *,
    status: str | None = None,
    member_id: int | None = None,
    number: str | None = None,
    tracking_no: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    size: int = 50,
) -> tuple[list[OrderSummary], str | None]:
    query = _search_query(
        status=status,
        member_id=member_id,
        number=number,
        tracking_no=tracking_no,
        since=since,
        until=until,
    )
    rows, next_cursor = await cursor_page(query, cursor, size)
    return await summaries(rows), next_cursor


def _search_query(
    *,
    status: str | None,
    member_id: int | None,
    number: str | None,
    tracking_no: str | None,
    since: datetime | None,
    until: datetime | None,
) -> QuerySet[Order]:
    query = Order.all()
    if status:
        query = query.filter(status=status)
    if member_id is not None:
        query = query.filter(member_id=member_id)
    if number:
        query = query.filter(number__startswith=number.strip().removeprefix(TRADE_PREFIX))
    if tracking_no:
        query = query.filter(tracking_no=tracking_no.strip())
    if since is not None:
        query = query.filter(created_at__gte=clock.as_utc(since))
    if until is not None:
        query = query.filter(created_at__lt=clock.as_utc(until))
    return query


_CSV_HEADER = (
    "order_id",
    "number",
    "created_at",
    "paid_at",
    "status",
    "member_id",
    "items",
    "list_total_fen",
    "member_total_fen",
    "coupon_fen",
    "points_used",
    "points_fen",
    "shipping_fen",
    "amount_due_fen",
    "wallet_fen",
    "cash_fen",
    "refunded_fen",
    "delivery",
    "consignee",
    "phone",
    "region",
    "shipping_company",
    "tracking_no",
)


def _cell(value: str) -> str:
    # a spreadsheet must not run a product or consignee name as a formula
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


async def export_csv(
    *,
    status: str | None = None,
    member_id: int | None = None,
    number: str | None = None,
    tracking_no: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AsyncIterator[str]:
    """Orders as CSV (UTF-8 with BOM so Excel reads it), newest first, streamed in pages.
    The consignee's phone is always masked: a file leaves the console's audit trail."""
    query = _search_query(
        status=status,
        member_id=member_id,
        number=number,
        tracking_no=tracking_no,
        since=since,
        until=until,
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(_CSV_HEADER)
    yield "\ufeff" + buffer.getvalue()
    last_id: int | None = None
    while True:
        page = query.filter(id__lt=last_id) if last_id is not None else query
        rows = await page.order_by("-id").limit(500)
        if not rows:
            return
        items: dict[int, list[str]] = defaultdict(list)
        for line in await OrderLine.filter(order_id__in=[o.id for o in rows]).order_by("id"):
            items[line.order_id].append(f"{line.name} x{line.quantity}")
        buffer.seek(0)
        buffer.truncate()
        for o in rows:
            address = o.address or {}
            writer.writerow(
                (
                    o.id,
                    o.number,
                    o.created_at.isoformat(),
                    o.paid_at.isoformat() if o.paid_at else "",
                    o.status,
                    o.member_id,
                    _cell("; ".join(items[o.id])),
                    o.list_total_fen,
                    o.member_total_fen,
                    o.coupon_fen,
                    o.points_used,
                    o.points_fen,
                    o.shipping_fen,
                    o.amount_due_fen,
                    o.wallet_fen,
                    o.cash_fen,
                    o.refunded_fen,
                    o.delivery,
                    _cell(str(address.get("name", ""))),
                    mask_phone(str(address.get("phone") or "")),
                    _cell(str(address.get("region", ""))),
                    _cell(o.shipping_company),
                    _cell(o.tracking_no),
                )
            )
        yield buffer.getvalue()
        last_id = rows[-1].id


# --- reconciliation ------------------------------------------------------------------


async def order_problems(limit: int = 10_000) -> tuple[int, list[str]]:
    """(orders checked, problems): each order's money adds up, lines add up, and its
    give-back counters equal the sum of its refunds."""
    problems: list[str] = []
    orders = await Order.all().order_by("-id").limit(limit)
    lines: dict[int, list[OrderLine]] = defaultdict(list)
    refunds: dict[int, list[OrderRefund]] = defaultdict(list)
    ids = [o.id for o in orders]
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for line in await OrderLine.filter(order_id__in=chunk):
            lines[line.order_id].append(line)
        for r in await OrderRefund.filter(order_id__in=chunk).exclude(kind="late_payment"):
            refunds[r.order_id].append(r)
    for o in orders:
        own = lines[o.id]
        if o.goods_fen - o.points_fen + o.shipping_fen != o.amount_due_fen:
            problems.append(f"order {o.number}: goods - points + shipping != amount due")
        if o.wallet_fen + o.cash_fen != o.amount_due_fen:
            problems.append(f"order {o.number}: wallet + cash != amount due")
        if sum(ln.due_fen for ln in own) != o.goods_fen - o.points_fen:
            problems.append(f"order {o.number}: lines due != goods - points")
        if sum(ln.points_used for ln in own) != o.points_used:
            problems.append(f"order {o.number}: lines points != order points")
        back = refunds[o.id]
        for name, total in (
            ("refunded_fen", sum(r.money_fen for r in back)),
            ("refunded_cash_fen", sum(r.cash_fen for r in back)),
            ("refunded_wallet_fen", sum(r.wallet_fen for r in back)),
            ("refunded_points", sum(r.points for r in back)),
        ):
            if getattr(o, name) != total:
                problems.append(f"order {o.number}: {name} {getattr(o, name)} != refunds {total}")
        if o.refunded_fen > o.amount_due_fen or o.refunded_cash_fen > o.cash_fen:
            problems.append(f"order {o.number}: refunded more than paid")
        if o.status in (CANCELLED, CLOSED, REFUNDED) and o.refunded_points != o.points_used:
            problems.append(f"order {o.number}: {o.status} but points not all back")
        if o.status in (CANCELLED, REFUNDED) and o.paid_at is not None:
            if o.refunded_fen != o.amount_due_fen:
                problems.append(f"order {o.number}: {o.status} but money not all back")
    return len(orders), problems


# registered with WeChat Pay by the composition root (mall.app)
PAYMENTS = wechat_pay.Handlers(TRADE_PREFIX, on_order_paid, on_order_refund)
