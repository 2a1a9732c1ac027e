"""Placing an order and confirming its payment."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from mall.addresses import service as addresses_service
from mall.audit import service as audit_service
from mall.catalog import service as catalog_service
from mall.config import get_settings
from mall.coupons import service as coupons_service
from mall.errors import MallError
from mall.kit import clock
from mall.members.models import Member
from mall.orders import holders
from mall.orders.cart import _cart, _price, spread
from mall.orders.common import (
    ADDRESS_REQUIRED,
    COUPON_NOT_APPLICABLE,
    NOT_PAYABLE,
    OUT_OF_STOCK,
    PAY_UNAVAILABLE,
    PAYMENT_EXPIRED,
    PAYMENT_MISMATCH,
    PAYMENT_UNKNOWN,
    TRADE_PREFIX,
    _new_number,
    _points_key,
    _ref,
    _wallet_key,
    line_money,
    order_money,
    out_trade_no,
    own_order,
)
from mall.orders.models import (
    CANCELLED,
    CLOSED,
    PAID,
    PENDING_PAYMENT,
    Order,
    OrderLine,
    OrderRefund,
)
from mall.orders.refunds import send_cash_refund
from mall.orders.schemas import (
    OrderIn,
)
from mall.points import service as points_service
from mall.wallet import service as wallet_service
from mall.wechat import pay as wechat_pay

log = logging.getLogger("mall.orders")


# --- placing an order ---------------------------------------------------------------


async def place_order(member: Member, data: OrderIn, idempotency_key: str | None) -> Order:
    """Create the order in one transaction (see the module doc), then the WeChat Pay
    order if cash is due. The same `idempotency_key` returns the same order."""
    request_key = f"{member.id}:{idempotency_key}" if idempotency_key else None
    if request_key is not None:
        found = await Order.get_or_none(request_key=request_key)
        if found is not None:
            return found
    address: dict[str, str] | None = None
    if data.delivery != "pickup":
        if data.address_id is None:
            raise ADDRESS_REQUIRED()
        address = (await addresses_service.snapshot(member.id, data.address_id)).model_dump()
    cart = await _cart([(i.sku_id, i.quantity) for i in data.items], data.delivery)
    breakdown = await _price(
        member,
        cart,
        coupon_id=data.coupon_id,
        points=data.points,
        delivery=data.delivery,
        use_wallet=data.use_wallet,
        placing=True,
    )
    if data.coupon_id is not None and breakdown.coupon_error:
        verdict = next((v for v in breakdown.coupons if v.coupon_id == data.coupon_id), None)
        raise COUPON_NOT_APPLICABLE(
            why=(verdict.message if verdict else None) or breakdown.coupon_error,
            reason=breakdown.coupon_error,
        )
    gift_specs: dict[int, tuple[int, dict[str, str]]] = {}
    for line in breakdown.lines:
        if line.is_gift:
            try:
                sku = await catalog_service.get_sku(line.sku_id)
            except MallError:
                raise OUT_OF_STOCK(name=line.name) from None
            gift_specs[line.sku_id] = (sku.product_id, dict(sku.specs or {}))

    now = clock.now()
    minutes = get_settings().order_payment_minutes
    try:
        async with in_transaction():
            order = await Order.create(
                number=_new_number(),
                member_id=member.id,
                request_key=request_key,
                status=PENDING_PAYMENT,
                delivery=data.delivery,
                address=address,
                **order_money(breakdown),
                pay_deadline=now + timedelta(minutes=minutes) if breakdown.cash_fen else None,
            )
            points_shares = spread(breakdown.points_used, [ln.points_fen for ln in breakdown.lines])
            stock: dict[int, int] = defaultdict(int)
            names: dict[int, str] = {}
            for line, points_used in zip(breakdown.lines, points_shares, strict=True):
                product_id, specs = (
                    gift_specs[line.sku_id]
                    if line.is_gift
                    else (line.product_id, cart.specs.get(line.sku_id, {}))
                )
                await OrderLine.create(
                    order_id=order.id,
                    sku_id=line.sku_id,
                    product_id=product_id,
                    name=line.name[:64],
                    specs=specs,
                    quantity=line.quantity,
                    is_gift=line.is_gift,
                    **line_money(line),
                    points_used=points_used,
                )
                stock[line.sku_id] += line.quantity
                names.setdefault(line.sku_id, line.name)
            for sku_id in sorted(stock):
                if not await catalog_service.reserve_stock(sku_id, stock[sku_id]):
                    raise OUT_OF_STOCK(name=names[sku_id])
            if order.coupon_id is not None:
                await coupons_service.lock(order.coupon_id, member.id, _ref(order))
            if order.points_used > 0:
                held = await points_service.hold(
                    member.id,
                    order.points_used,
                    idempotency_key=_points_key(order),
                    reason="order",
                    reference=_ref(order),
                    expires_at=_hold_deadline(order),
                )
                order.points_hold_id = held.id
            if order.wallet_fen > 0:
                paid = await wallet_service.pay(
                    member.id,
                    order.wallet_fen,
                    idempotency_key=_wallet_key(order),
                    reference=_ref(order),
                )
                order.wallet_principal_fen = int(paid.principal_fen)
                order.wallet_bonus_fen = int(paid.bonus_fen)
            await order.save(
                update_fields=["points_hold_id", "wallet_principal_fen", "wallet_bonus_fen"]
            )
            if order.cash_fen == 0:
                await _mark_paid(order, transaction_id=None)
    except IntegrityError:
        if request_key is not None:
            found = await Order.get_or_none(request_key=request_key)
            if found is not None:
                return found  # the same checkout, placed by a concurrent retry
        raise
    if order.status == PENDING_PAYMENT:
        await _create_prepay(order, member.openid)
    return order


def _hold_deadline(order: Order) -> datetime | None:
    """The points hold outlives the order's own close (deadline, then the forced close),
    so the points job never voids a hold a payment may still capture; None (the points
    default) for an order paid in full at checkout."""
    if order.pay_deadline is None:
        return None
    settings = get_settings()
    return order.pay_deadline + timedelta(
        seconds=settings.order_close_force_after_seconds + settings.points_hold_timeout_seconds
    )


async def _mark_paid(order: Order, *, transaction_id: str | None) -> bool:
    """pending_payment -> paid (compare-and-set); the points hold is captured and the
    coupon used. Call inside a transaction. False if the order was not pending."""
    now = clock.now()
    moved = await Order.filter(id=order.id, status=PENDING_PAYMENT).update(
        status=PAID, paid_at=now, transaction_id=transaction_id, pay_error="", updated_at=now
    )
    if not moved:
        return False
    if order.points_hold_id is not None:
        await points_service.capture(
            order.points_hold_id, idempotency_key=f"{_points_key(order)}:capture"
        )
    if order.coupon_id is not None:
        await coupons_service.use(order.coupon_id, _ref(order))
    await holders.on_paid(order)
    order.status, order.paid_at, order.transaction_id = PAID, now, transaction_id
    return True


def _description(order: Order, first_name: str, count: int) -> str:
    text = first_name if count <= 1 else f"{first_name} 等{count}件"
    return text[:120] or f"订单 {order.number}"


async def _create_prepay(order: Order, openid: str) -> None:
    """Create the WeChat Pay order for the cash part and keep its wx.requestPayment
    parameters; on failure keep the error code and leave the order waiting."""
    lines = await OrderLine.filter(order_id=order.id).order_by("id")
    first = lines[0].name if lines else ""
    try:
        params = await wechat_pay.create_jsapi_payment(
            out_trade_no=out_trade_no(order),
            description=_description(order, first, sum(ln.quantity for ln in lines)),
            amount_fen=order.cash_fen,
            openid=openid,
            expires_at=order.pay_deadline,  # type: ignore[arg-type]  # set when placed
            attach="",
        )
    except Exception as exc:  # any failure leaves the order payable later
        code = exc.code if isinstance(exc, MallError) else type(exc).__name__
        log.warning("wechat pay order failed order=%s error=%s", order.number, code)
        order.pay_error = code[:64]
        await Order.filter(id=order.id, status=PENDING_PAYMENT).update(pay_error=order.pay_error)
        return
    now = clock.now()
    order.prepay, order.prepay_at, order.pay_error = dict(params), now, ""
    await Order.filter(id=order.id).update(prepay=order.prepay, prepay_at=now, pay_error="")


async def pay_order(member: Member, order_id: int) -> Order:
    """The wx.requestPayment parameters of an unpaid order, creating the WeChat Pay order
    again if the first attempt failed."""
    order = await own_order(member.id, order_id)
    if order.status != PENDING_PAYMENT:
        raise NOT_PAYABLE(status=order.status)
    if order.pay_deadline is not None and clock.now() >= order.pay_deadline:
        raise PAYMENT_EXPIRED()
    if order.prepay is None:
        await _create_prepay(order, member.openid)
        if order.prepay is None:
            raise PAY_UNAVAILABLE()
    return order


# --- payment confirmed ----------------------------------------------------------------


def _merchant_ok(result: Any) -> bool:
    mchid = str(getattr(get_settings(), "wechatpay_mchid", "") or "")
    appid = wechat_pay.pay_appid()
    if mchid and getattr(result, "mchid", mchid) != mchid:
        return False
    return not (appid and getattr(result, "appid", appid) != appid)


async def on_order_paid(result: Any) -> None:
    """A verified WeChat Pay result for "O<number>" (`PAYMENT_HANDLERS["O"]`, also the
    query job's path). Idempotent. The amount and merchant must match the order, else it
    raises (WeChat retries; on-call sees the log). A payment for an order that closed
    meanwhile is refunded in full."""
    trade_no = str(result.out_trade_no)
    order = None
    if trade_no.startswith(TRADE_PREFIX):
        order = await Order.get_or_none(number=trade_no[len(TRADE_PREFIX) :])
    if order is None:
        log.error("payment for unknown order out_trade_no=%s", trade_no)
        raise PAYMENT_UNKNOWN(out_trade_no=trade_no)
    if result.trade_state != "SUCCESS":
        return
    if int(result.amount_total_fen) != order.cash_fen or not _merchant_ok(result):
        log.error(
            "payment mismatch order=%s paid=%s due=%s mchid=%s appid=%s",
            order.number,
            result.amount_total_fen,
            order.cash_fen,
            getattr(result, "mchid", ""),
            getattr(result, "appid", ""),
        )
        raise PAYMENT_MISMATCH(number=order.number)
    async with in_transaction():
        if await _mark_paid(order, transaction_id=str(result.transaction_id)):
            return
    order = await Order.get(id=order.id)
    if order.transaction_id == str(result.transaction_id):
        return  # a retried notification
    if order.status in (CLOSED, CANCELLED) and order.paid_at is None:
        await _refund_late_payment(order, result)
        return
    log.error(
        "second payment for order=%s transaction=%s (kept %s)",
        order.number,
        result.transaction_id,
        order.transaction_id,
    )


async def _refund_late_payment(order: Order, result: Any) -> None:
    """Money arrived after the order closed (stock, coupon and points are already back):
    send it all back."""
    try:
        async with in_transaction():
            refund = await OrderRefund.create(
                order_id=order.id,
                out_refund_no=f"R{order.number}L",
                kind="late_payment",
                request_key=f"late:{order.id}",
                money_fen=int(result.amount_total_fen),
                cash_fen=int(result.amount_total_fen),
                restocked=False,
                reason="paid after the order closed",
                cash_status="pending",
            )
            await Order.filter(id=order.id, transaction_id__isnull=True).update(
                transaction_id=str(result.transaction_id)
            )
            await audit_service.record(
                None,
                "order.late_payment_refund",
                f"order:{order.id}",
                transaction_id=str(result.transaction_id),
                cash_fen=refund.cash_fen,
                source=order.source,
            )
    except IntegrityError:
        return  # already being refunded
    log.warning("order %s paid after it closed; refunding %s fen", order.number, refund.cash_fen)
    await send_cash_refund(refund.id)
