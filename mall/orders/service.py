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
import logging
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from mall.addresses import service as addresses_service
from mall.audit import service as audit_service
from mall.audit.service import Actor
from mall.catalog import service as catalog_service
from mall.config import get_settings
from mall.coupons import service as coupons_service
from mall.errors import ErrorCode, MallError
from mall.i18n import _
from mall.kit import clock
from mall.kit.masking import mask_phone
from mall.kit.pagination import cursor_page
from mall.members.models import Member
from mall.orders.models import (
    CANCELLED,
    CLOSED,
    COMPLETED,
    PAID,
    PENDING_PAYMENT,
    REFUNDED,
    SHIPPED,
    Order,
    OrderLine,
    OrderRefund,
)
from mall.orders.schemas import (
    AdminOrderOut,
    CheckoutBreakdown,
    OrderIn,
    OrderLineOut,
    OrderOut,
    OrderSummary,
    PaymentParams,
    RefundOut,
)
from mall.points import service as points_service
from mall.pricing import CartLine, PricingInput, PricingRules, price_cart
from mall.referral import service as referral_service
from mall.wallet import service as wallet_service
from mall.wechat import pay as wechat_pay

log = logging.getLogger("mall.orders")

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


# --- pricing a cart ---------------------------------------------------------------


async def pricing_rules() -> PricingRules:
    """The rules document ops edit (`/api/admin/v1/rules`): its pricing section and the
    levels' rates, the same numbers `GET /api/v1/points` shows."""
    return (await points_service.get_rules()).pricing_rules()


async def _ancestors() -> dict[int, list[int]]:
    parents = {c.id: c.parent_id for c in await catalog_service.list_categories()}
    chains: dict[int, list[int]] = {}
    for category_id in parents:
        chain, current = [], category_id
        while current is not None and current not in chain:
            chain.append(current)
            current = parents.get(current)
        chains[category_id] = chain
    return chains


@dataclass
class _Cart:
    lines: list[CartLine]
    specs: dict[int, dict[str, str]] = field(default_factory=dict)


async def _cart(items: list[tuple[int, int]], delivery: str) -> _Cart:
    merged: dict[int, int] = {}
    for sku_id, quantity in items:
        merged[sku_id] = merged.get(sku_id, 0) + quantity
    chains = await _ancestors()
    cart = _Cart(lines=[])
    for sku_id, quantity in merged.items():
        sku = await catalog_service.get_sku(sku_id)
        product = await catalog_service.get_product(sku.product_id)
        if not product.on_shelf:
            raise ITEM_UNAVAILABLE(name=product.name)
        if product.delivery_modes and delivery not in product.delivery_modes:
            raise DELIVERY_UNAVAILABLE(name=product.name)
        cart.specs[sku.id] = dict(sku.specs or {})
        cart.lines.append(
            CartLine(
                sku_id=sku.id,
                product_id=product.id,
                category_ids=chains.get(product.category_id or 0, []),
                quantity=quantity,
                list_price_fen=sku.price,
                name=product.name,
            )
        )
    return cart


async def cart_lines(items: list[tuple[int, int]], delivery: str) -> list[CartLine]:
    """The cart as pricing sees it; SKUs named twice are merged."""
    return (await _cart(items, delivery)).lines


async def _price(
    member: Member,
    cart: _Cart,
    *,
    coupon_id: int | None,
    points: int,
    delivery: str,
    use_wallet: bool,
    placing: bool,
) -> CheckoutBreakdown:
    """The breakdown and how it is paid. When placing an order, the points asked for are
    priced as asked (the hold then fails if the balance is short) and a wallet that does
    not exist is an error; a preview caps points at the balance and only notes it."""
    await member.refresh_from_db(fields=["points_balance", "level"])
    priced = price_cart(
        PricingInput(
            lines=cart.lines,
            at=clock.now(),
            member_level=member.level,
            coupons=await coupons_service.offers_for(member.id, also=coupon_id),
            coupon_id=coupon_id,
            points_requested=points,
            points_available=points if placing else max(member.points_balance, 0),
            delivery=delivery,  # type: ignore[arg-type]
            rules=await pricing_rules(),
        )
    )
    out = CheckoutBreakdown.model_validate({**priced.model_dump(), "use_wallet": use_wallet})
    out.wallet_balance_fen = int((await wallet_service.get_balance(member.id)).total_fen)
    if use_wallet:
        out.wallet_fen = min(out.wallet_balance_fen or 0, out.amount_due_fen)
    out.cash_fen = out.amount_due_fen - out.wallet_fen
    return out


async def preview(
    member: Member,
    items: list[tuple[int, int]],
    *,
    coupon_id: int | None,
    points: int,
    delivery: str,
    use_wallet: bool = False,
) -> CheckoutBreakdown:
    """The full breakdown, line by line, with every coupon the member holds and why it
    does or does not apply, and what the wallet would pay. Nothing is reserved."""
    return await _price(
        member,
        await _cart(items, delivery),
        coupon_id=coupon_id,
        points=points,
        delivery=delivery,
        use_wallet=use_wallet,
        placing=False,
    )


def spread(total: int, weights: list[int]) -> list[int]:
    """Split `total` in proportion to `weights` (largest remainder; sums exactly)."""
    weight_sum = sum(weights)
    if total <= 0 or weight_sum <= 0:
        return [0] * len(weights)
    shares = [total * w // weight_sum for w in weights]
    by_remainder = sorted(
        range(len(weights)), key=lambda i: (-(total * weights[i] % weight_sum), i)
    )
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


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
                breakdown=breakdown.model_dump(mode="json"),
                list_total_fen=breakdown.list_total_fen,
                member_total_fen=breakdown.member_total_fen,
                coupon_id=breakdown.coupon_id,
                coupon_fen=breakdown.coupon_fen,
                goods_fen=breakdown.goods_after_coupon_fen,
                points_used=breakdown.points_used,
                points_fen=breakdown.points_fen,
                shipping_fen=breakdown.shipping_fen,
                amount_due_fen=breakdown.amount_due_fen,
                wallet_fen=breakdown.wallet_fen,
                cash_fen=breakdown.cash_fen,
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
                    unit_list_fen=line.unit_list_fen,
                    unit_member_fen=line.unit_member_fen,
                    list_total_fen=line.list_total_fen,
                    member_total_fen=line.member_total_fen,
                    coupon_fen=line.coupon_fen,
                    points_fen=line.points_fen,
                    points_used=points_used,
                    due_fen=line.due_fen,
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
    except IntegrityError:
        return  # already being refunded
    log.warning("order %s paid after it closed; refunding %s fen", order.number, refund.cash_fen)
    await send_cash_refund(refund.id)


# --- giving back ---------------------------------------------------------------------


async def _release_unpaid(
    order_id: int, *, to: str, reason: str, staff: Actor | None = None
) -> OrderRefund | None:
    """pending_payment -> cancelled | closed: stock, coupon (if still valid), points hold
    and the wallet part come back. None if the order was no longer pending."""
    now = clock.now()
    async with in_transaction():
        order = await Order.filter(id=order_id).select_for_update().first()
        if order is None:
            raise ORDER_NOT_FOUND()
        stamp = {"cancelled_at": now} if to == CANCELLED else {"closed_at": now}
        moved = await Order.filter(id=order.id, status=PENDING_PAYMENT).update(
            status=to,
            cancel_reason=reason[:128],
            refunded_fen=F("refunded_fen") + order.wallet_fen,
            refunded_wallet_fen=F("refunded_wallet_fen") + order.wallet_fen,
            refunded_points=F("refunded_points") + order.points_used,
            updated_at=now,
            **stamp,
        )
        if not moved:
            return None
        lines = await OrderLine.filter(order_id=order.id).order_by("id")
        stock: dict[int, int] = defaultdict(int)
        for line in lines:
            stock[line.sku_id] += line.quantity
        for sku_id in sorted(stock):
            await catalog_service.release_stock(sku_id, stock[sku_id])
        coupon_status = ""
        if order.coupon_id is not None:
            coupon_status = await coupons_service.release(order.coupon_id, _ref(order))
        if order.points_hold_id is not None:
            await points_service.void(
                order.points_hold_id, idempotency_key=f"{_points_key(order)}:void"
            )
        if order.wallet_fen > 0:
            await wallet_service.refund(
                _wallet_key(order),
                order.wallet_fen,
                idempotency_key=f"{_wallet_key(order)}:back",
                reason=f"order {to}",
            )
        refund = await OrderRefund.create(
            order_id=order.id,
            out_refund_no=f"R{order.number}C",
            kind="cancel" if to == CANCELLED else "close",
            lines=[{"line_id": ln.id, "quantity": ln.quantity} for ln in lines],
            money_fen=order.wallet_fen,
            wallet_fen=order.wallet_fen,
            points=order.points_used,
            coupon_status=coupon_status,
            reason=reason[:128],
            staff_id=staff.id if staff else None,
        )
        if staff is not None:
            await audit_service.record(
                staff, f"order.{refund.kind}", f"order:{order.id}", reason=reason
            )
    if order.cash_fen > 0 and wechat_pay.is_configured():
        try:
            await wechat_pay.close_payment(out_trade_no(order))
        except Exception as exc:  # best effort: the WeChat order expires anyway
            log.warning("closing wechat pay order %s failed: %r", order.number, exc)
    return refund


@dataclass
class LineRefund:
    line_id: int
    sku_id: int
    quantity: int
    due_fen: int
    points: int


@dataclass
class RefundPlan:
    lines: list[LineRefund]
    goods_fen: int
    shipping_fen: int
    money_fen: int
    cash_fen: int
    wallet_fen: int
    points: int
    earned_points_reversed: int
    everything: bool


def _upto(total: int, part: int, whole: int) -> int:
    """The share of `total` for `part` of `whole`, rounded down; all of it at the end, so
    successive partial shares always add up to `total` exactly."""
    if whole <= 0 or part >= whole:
        return total
    return total * part // whole


def plan_refund(order: Order, lines: list[OrderLine], wanted: dict[int, int] | None) -> RefundPlan:
    """What a refund of `wanted` {line id: quantity} (None: all that is left) gives back.

    Each line gives back its due and its points for the units refunded, shares rounded
    down until the last unit; shipping comes back with the last line. The money goes back
    to wallet and cash in the proportion they paid, and order-to-points earned on
    completion are reversed in proportion to the money refunded since."""
    by_id = {ln.id: ln for ln in lines}
    if wanted is None:
        wanted = {ln.id: ln.quantity - ln.refunded_quantity for ln in lines}
        wanted = {k: v for k, v in wanted.items() if v > 0}
        if not wanted:
            raise NOTHING_TO_REFUND()
    planned: list[LineRefund] = []
    for line_id, quantity in wanted.items():
        line = by_id.get(line_id)
        if line is None:
            raise REFUND_LINE_UNKNOWN(line_id=line_id)
        left = line.quantity - line.refunded_quantity
        if quantity > left:
            raise REFUND_TOO_MANY(left=left, line_id=line_id)
        after = line.refunded_quantity + quantity
        planned.append(
            LineRefund(
                line_id=line.id,
                sku_id=line.sku_id,
                quantity=quantity,
                due_fen=_upto(line.due_fen, after, line.quantity) - line.refunded_due_fen,
                points=_upto(line.points_used, after, line.quantity) - line.refunded_points,
            )
        )
    everything = all(ln.refunded_quantity + wanted.get(ln.id, 0) >= ln.quantity for ln in lines)
    goods = sum(p.due_fen for p in planned)
    shipping = order.shipping_fen if everything else 0
    money = goods + shipping
    money_after = order.refunded_fen + money
    cash = _upto(order.cash_fen, money_after, order.amount_due_fen) - order.refunded_cash_fen
    earned = 0
    if order.earned_points > 0 and order.earn_base_fen > 0:
        since = money_after - order.refunded_fen_at_completion
        earned = (
            _upto(order.earned_points, since, order.earn_base_fen) - order.earned_points_reversed
        )
    return RefundPlan(
        lines=planned,
        goods_fen=goods,
        shipping_fen=shipping,
        money_fen=money,
        cash_fen=cash,
        wallet_fen=money - cash,
        points=sum(p.points for p in planned),
        earned_points_reversed=max(earned, 0),
        everything=everything,
    )


async def _refund_paid(
    order_id: int,
    wanted: dict[int, int] | None,
    *,
    kind: str,
    allowed: tuple[str, ...],
    reason: str,
    restock: bool,
    request_key: str | None,
    staff: Actor | None = None,
    member_id: int | None = None,
) -> OrderRefund:
    """Refund (part of) a paid order in one transaction: lines, stock, coupon on a full
    refund, spent points, earned points pro rata, wallet; the cash is sent to WeChat Pay
    after the commit (retried by a job until WeChat answers)."""
    if request_key is not None:
        found = await OrderRefund.get_or_none(request_key=request_key)
        if found is not None:
            return found
    now = clock.now()
    try:
        async with in_transaction():
            order = await Order.filter(id=order_id).select_for_update().first()
            if order is None or (member_id is not None and order.member_id != member_id):
                raise ORDER_NOT_FOUND()
            if order.status not in allowed:
                error = NOT_CANCELLABLE if kind == "cancel" else NOT_REFUNDABLE
                raise error(status=order.status)
            lines = await OrderLine.filter(order_id=order.id).order_by("id")
            plan = plan_refund(order, lines, wanted)
            count = await OrderRefund.filter(order_id=order.id).count()
            refund = await OrderRefund.create(
                order_id=order.id,
                out_refund_no=f"R{order.number}{count + 1:02d}",
                kind=kind,
                request_key=request_key,
                lines=[{"line_id": p.line_id, "quantity": p.quantity} for p in plan.lines],
                goods_fen=plan.goods_fen,
                shipping_fen=plan.shipping_fen,
                money_fen=plan.money_fen,
                wallet_fen=plan.wallet_fen,
                cash_fen=plan.cash_fen,
                points=plan.points,
                restocked=restock,
                reason=reason[:128],
                staff_id=staff.id if staff else None,
                cash_status="pending" if plan.cash_fen > 0 else "none",
            )
            for p in plan.lines:
                line = next(ln for ln in lines if ln.id == p.line_id)
                moved = await OrderLine.filter(
                    id=line.id, refunded_quantity=line.refunded_quantity
                ).update(
                    refunded_quantity=line.refunded_quantity + p.quantity,
                    refunded_due_fen=line.refunded_due_fen + p.due_fen,
                    refunded_points=line.refunded_points + p.points,
                )
                if not moved:
                    raise ORDER_CHANGED()
            new_status = order.status
            if plan.everything:
                new_status = CANCELLED if kind == "cancel" else REFUNDED
            changes: dict[str, Any] = {
                "status": new_status,
                "refunded_fen": order.refunded_fen + plan.money_fen,
                "refunded_cash_fen": order.refunded_cash_fen + plan.cash_fen,
                "refunded_wallet_fen": order.refunded_wallet_fen + plan.wallet_fen,
                "refunded_points": order.refunded_points + plan.points,
                "earned_points_reversed": order.earned_points_reversed
                + plan.earned_points_reversed,
                "updated_at": now,
            }
            if kind == "cancel":
                changes |= {"cancelled_at": now, "cancel_reason": reason[:128]}
            moved = await Order.filter(
                id=order.id, status=order.status, refunded_fen=order.refunded_fen
            ).update(**changes)
            if not moved:
                raise ORDER_CHANGED()
            if restock:
                stock: dict[int, int] = defaultdict(int)
                for p in plan.lines:
                    stock[p.sku_id] += p.quantity
                for sku_id in sorted(stock):
                    await catalog_service.release_stock(sku_id, stock[sku_id])
            if plan.everything and order.coupon_id is not None:
                refund.coupon_status = await coupons_service.release(order.coupon_id, _ref(order))
            if plan.points > 0:
                await points_service.reverse(
                    _points_key(order),
                    idempotency_key=f"{_points_key(order)}:back:{refund.id}",
                    reason="order refund",
                    points=plan.points,
                )
            if plan.earned_points_reversed > 0:
                entry = await points_service.reverse(
                    _earn_key(order),
                    idempotency_key=f"{_earn_key(order)}:back:{refund.id}",
                    reason="order refund",
                    points=plan.earned_points_reversed,
                )
                # a claw-back never drives the balance below zero: record what it took
                refund.earned_points_reversed = -entry.delta
            if plan.wallet_fen > 0:
                await wallet_service.refund(
                    _wallet_key(order),
                    plan.wallet_fen,
                    idempotency_key=f"{_wallet_key(order)}:back:{refund.id}",
                    reason=f"order {kind}",
                )
            await refund.save(update_fields=["coupon_status", "earned_points_reversed"])
            if staff is not None:
                await audit_service.record(
                    staff,
                    f"order.{kind}",
                    f"order:{order.id}",
                    refund_id=refund.id,
                    lines=refund.lines,
                    money_fen=refund.money_fen,
                    cash_fen=refund.cash_fen,
                    wallet_fen=refund.wallet_fen,
                    points=refund.points,
                    restock=restock,
                    reason=reason,
                )
    except IntegrityError:
        if request_key is not None:
            found = await OrderRefund.get_or_none(request_key=request_key)
            if found is not None:
                return found
        raise
    if refund.cash_fen > 0:
        await send_cash_refund(refund.id)
        await refund.refresh_from_db()
    return refund


_CASH_STATUS = {"SUCCESS": "succeeded", "PROCESSING": "processing", "ABNORMAL": "abnormal"}


def wechat_refund_no(refund: OrderRefund) -> str:
    """The number WeChat Pay knows the cash refund's current attempt by."""
    if refund.cash_attempt == 0:
        return refund.out_refund_no
    return f"{refund.out_refund_no}-{refund.cash_attempt}"


async def _refund_of(wechat_no: str) -> OrderRefund | None:
    """The refund whose current attempt WeChat reports (None for a replaced attempt)."""
    found = await OrderRefund.get_or_none(out_refund_no=wechat_no)
    if found is not None:
        return found if found.cash_attempt == 0 else None
    base, _dash, attempt = wechat_no.rpartition("-")
    if not base or not attempt.isdigit():
        return None
    found = await OrderRefund.get_or_none(out_refund_no=base)
    return found if found is not None and found.cash_attempt == int(attempt) else None


async def _record_cash_result(refund: OrderRefund, result: Any) -> None:
    state = str(getattr(result, "status", "PROCESSING") or "PROCESSING").upper()
    status = _CASH_STATUS.get(state, "failed")
    if status in ("failed", "abnormal"):
        log.error("wechat refund %s ended %s; ops must resolve it", wechat_refund_no(refund), state)
    await OrderRefund.filter(
        id=refund.id, cash_attempt=refund.cash_attempt, cash_status__in=["pending", "processing"]
    ).update(
        cash_status=status,
        cash_refund_id=str(getattr(result, "refund_id", "") or "")[:64],
        cash_error="" if status in ("succeeded", "processing") else state,
        updated_at=clock.now(),
    )


async def send_cash_refund(refund_id: int) -> OrderRefund:
    """Ask WeChat Pay to refund the cash part (same number on every retry, so it is
    refunded once). Without WeChat Pay the refund stays pending. An ops retry of an
    abnormal refund that WeChat refuses goes back to abnormal."""
    refund = await OrderRefund.get(id=refund_id)
    if refund.cash_status not in ("pending", "processing") or refund.cash_fen <= 0:
        return refund
    order = await Order.get(id=refund.order_id)
    now = clock.now()
    try:
        result = None
        if refund.cash_status == "processing":
            result = await wechat_pay.query_refund(wechat_refund_no(refund))
        if result is None:
            result = await wechat_pay.refund(
                out_trade_no=out_trade_no(order),
                out_refund_no=wechat_refund_no(refund),
                refund_fen=refund.cash_fen,
                total_fen=order.cash_fen,
                reason=refund.reason[:80],
            )
    except Exception as exc:  # kept pending; the retry job sends it again
        code = exc.code if isinstance(exc, MallError) else repr(exc)
        log.warning("wechat refund %s failed: %s", wechat_refund_no(refund), code)
        changes: dict[str, Any] = {"cash_error": code[:255], "updated_at": now}
        if (
            isinstance(exc, MallError)
            and (exc.error in wechat_pay.FINAL_ERRORS or exc.error is wechat_pay.PAY_NOT_ENOUGH)
            and refund.cash_attempt > 0
        ):
            changes["cash_status"] = "abnormal"
            changes["cash_error"] = str(exc.params.get("wechat_code") or code)[:255]
        await OrderRefund.filter(id=refund.id, cash_status__in=["pending", "processing"]).update(
            **changes
        )
        return await OrderRefund.get(id=refund_id)
    await _record_cash_result(refund, result)
    return await OrderRefund.get(id=refund_id)


async def on_order_refund(result: Any) -> None:
    """A verified refund notification for an order (`REFUND_HANDLERS["O"]`)."""
    refund = await _refund_of(str(result.out_refund_no))
    if refund is None:
        log.info("refund notification %s: no current attempt; ignored", result.out_refund_no)
        return
    await _record_cash_result(refund, result)


async def resolve_abnormal_refund(
    refund_id: int, *, action: str, note: str, staff: Actor
) -> OrderRefund:
    """Ops settle a cash refund WeChat Pay reported ABNORMAL (the member's account
    refused it, e.g. a closed bank card). Audited, and idempotent: asking again for what
    was done answers the refund as it is.

    - `retry`: WeChat Pay is asked about the refund first (it may have gone through
      since); if it still did not, it is sent again to the original payment as a new
      attempt ("<out_refund_no>-<n>"). If WeChat Pay refuses (typically: the abnormal
      refund still holds the amount), it stays abnormal and ORDER_REFUND_RETRY_REFUSED
      says to pay it out another way.
    - `offline`: ops paid the member another way (bank transfer, cash); `note` says how.
    The order's own figures do not move: the money was refunded when the refund was
    made; only how it reached the member changes."""
    refund = await OrderRefund.get_or_none(id=refund_id)
    if refund is None:
        raise REFUND_NOT_FOUND()
    if refund.resolution == action and refund.cash_status != "abnormal":
        return refund
    if refund.cash_status != "abnormal":
        raise REFUND_NOT_ABNORMAL(status=refund.cash_status)
    now = clock.now()
    who = {"resolved_by": staff.id, "resolved_at": now, "updated_at": now}
    if action == "offline":
        async with in_transaction():
            moved = await OrderRefund.filter(id=refund.id, cash_status="abnormal").update(
                cash_status="offline", resolution="offline", resolution_note=note[:255], **who
            )
            if not moved:
                return await _resolved_meanwhile(refund.id, action)
            await audit_service.record(
                staff,
                "order.refund.offline",
                f"order:{refund.order_id}",
                refund_id=refund.id,
                out_refund_no=refund.out_refund_no,
                cash_fen=refund.cash_fen,
                note=note,
            )
        return await OrderRefund.get(id=refund.id)

    if not wechat_pay.is_configured():
        raise PAY_UNAVAILABLE()
    result = await wechat_pay.query_refund(wechat_refund_no(refund))
    state = str(getattr(result, "status", "") or "").upper()
    if state in ("SUCCESS", "PROCESSING"):
        async with in_transaction():
            moved = await OrderRefund.filter(id=refund.id, cash_status="abnormal").update(
                cash_status=_CASH_STATUS[state], cash_error="", resolution="retry", **who
            )
            if moved:
                await audit_service.record(
                    staff,
                    "order.refund.retry",
                    f"order:{refund.order_id}",
                    refund_id=refund.id,
                    out_refund_no=wechat_refund_no(refund),
                    wechat_status=state,
                )
        return await OrderRefund.get(id=refund.id)
    attempt = refund.cash_attempt + 1
    async with in_transaction():
        moved = await OrderRefund.filter(
            id=refund.id, cash_status="abnormal", cash_attempt=refund.cash_attempt
        ).update(
            cash_status="pending",
            cash_attempt=attempt,
            cash_error="",
            resolution="retry",
            resolution_note=note[:255],
            **who,
        )
        if not moved:
            return await _resolved_meanwhile(refund.id, action)
        await audit_service.record(
            staff,
            "order.refund.retry",
            f"order:{refund.order_id}",
            refund_id=refund.id,
            out_refund_no=f"{refund.out_refund_no}-{attempt}",
            previous=wechat_refund_no(refund),
            previous_status=state,
            cash_fen=refund.cash_fen,
        )
    refund = await send_cash_refund(refund.id)
    if refund.cash_status == "abnormal":
        raise REFUND_RETRY_REFUSED(wechat_code=refund.cash_error or "-")
    return refund


async def _resolved_meanwhile(refund_id: int, action: str) -> OrderRefund:
    fresh = await OrderRefund.get(id=refund_id)
    if fresh.resolution == action:
        return fresh
    raise REFUND_NOT_ABNORMAL(status=fresh.cash_status)


async def abnormal_refunds() -> list[OrderRefund]:
    """Cash refunds waiting for ops: WeChat Pay could not pay them out."""
    return await OrderRefund.filter(cash_status="abnormal").order_by("id")


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


async def cancel(
    order_id: int,
    *,
    reason: str = "",
    member_id: int | None = None,
    staff: Actor | None = None,
    request_key: str | None = None,
) -> Order:
    """Cancel before shipping: an unpaid order releases what it holds; a paid one is
    refunded in full (cash, wallet, points, coupon, stock)."""
    order = await (own_order(member_id, order_id) if member_id else get_order(order_id))
    if order.status == PENDING_PAYMENT:
        if await _release_unpaid(order.id, to=CANCELLED, reason=reason, staff=staff) is None:
            order = await get_order(order.id)
            if order.status != PAID:
                raise NOT_CANCELLABLE(status=order.status)
    if order.status == PAID:
        await _refund_paid(
            order.id,
            None,
            kind="cancel",
            allowed=(PAID,),
            reason=reason,
            restock=True,
            request_key=request_key,
            staff=staff,
            member_id=member_id,
        )
    elif order.status != PENDING_PAYMENT:
        raise NOT_CANCELLABLE(status=order.status)
    return await get_order(order.id)


async def refund(
    order_id: int,
    lines: list[tuple[int, int]] | None,
    *,
    reason: str = "",
    member_id: int | None = None,
    staff: Actor | None = None,
    restock: bool = True,
    request_key: str | None = None,
) -> OrderRefund:
    """Refund lines (or everything left). Shoppers refund themselves before shipping;
    ops refund shipped and completed orders too (after the goods came back)."""
    wanted: dict[int, int] | None = None
    if lines is not None:
        wanted = defaultdict(int)
        for line_id, quantity in lines:
            wanted[line_id] += quantity
        wanted = dict(wanted)
    allowed = (PAID,) if staff is None else (PAID, SHIPPED, COMPLETED)
    done = await _refund_paid(
        order_id,
        wanted,
        kind="refund",
        allowed=allowed,
        reason=reason,
        restock=restock,
        request_key=request_key,
        staff=staff,
        member_id=member_id,
    )
    order = await get_order(order_id)
    if order.status == COMPLETED or order.completed_at is not None:
        await _referral_event(
            referral_service.on_order_refunded,
            order_id,
            order.member_id,
            done.money_fen,
            refund_ref=done.id,
        )
    return done


async def ship(
    order_id: int, *, shipping_company: str, tracking_no: str, staff: Actor | None
) -> Order:
    order = await get_order(order_id)
    if order.delivery == "express" and not tracking_no:
        raise TRACKING_REQUIRED()
    now = clock.now()
    async with in_transaction():
        moved = await Order.filter(id=order.id, status=PAID).update(
            status=SHIPPED,
            shipping_company=shipping_company,
            tracking_no=tracking_no,
            shipped_at=now,
            updated_at=now,
        )
        if not moved:
            order = await get_order(order.id)
            raise NOT_SHIPPABLE(status=order.status)
        await audit_service.record(
            staff,
            "order.ship",
            f"order:{order.id}",
            shipping_company=shipping_company,
            tracking_no=tracking_no,
        )
    return await get_order(order.id)


async def complete(
    order_id: int, *, member_id: int | None = None, staff: Actor | None = None
) -> Order:
    """shipped (or, by ops, paid: e.g. picked up) -> completed; grants order-to-points and
    growth on what was paid (wallet + cash, less refunds so far)."""
    allowed = (SHIPPED,) if staff is None else (PAID, SHIPPED)
    now = clock.now()
    async with in_transaction():
        order = await Order.filter(id=order_id).select_for_update().first()
        if order is None or (member_id is not None and order.member_id != member_id):
            raise ORDER_NOT_FOUND()
        if order.status not in allowed:
            raise NOT_COMPLETABLE(status=order.status)
        base = order.amount_due_fen - order.refunded_fen
        earned = 0
        if base > 0:
            entry = await points_service.grant_for_order(
                order.member_id, base, idempotency_key=_earn_key(order), reference=_ref(order)
            )
            earned = entry.delta if entry is not None else 0
        moved = await Order.filter(
            id=order.id, status=order.status, refunded_fen=order.refunded_fen
        ).update(
            status=COMPLETED,
            completed_at=now,
            earn_base_fen=base,
            earned_points=earned,
            refunded_fen_at_completion=order.refunded_fen,
            updated_at=now,
        )
        if not moved:
            raise ORDER_CHANGED()
        if staff is not None:
            await audit_service.record(
                staff, "order.complete", f"order:{order.id}", earned_points=earned
            )
    await _referral_event(referral_service.on_order_completed, order.id, order.member_id, base)
    return await get_order(order.id)


async def _referral_event(
    event: Callable[..., Awaitable[object]], order_id: int, member_id: int, fen: int, **kw: Any
) -> None:
    """Promoter commission after the order's own commit; idempotent per order event, so a
    failure here is logged and a retry (or `mall check referral`) finds it."""
    try:
        await event(order_id, member_id, fen, **kw)
    except Exception:
        log.exception("referral %s failed for order %s", event.__name__, order_id)


# --- jobs ---------------------------------------------------------------------------


async def close_overdue(batch: int = 200) -> int:
    """Close orders unpaid at their deadline. WeChat Pay is asked first (a payment that
    made it is confirmed instead); if it cannot be asked, the order waits until
    `order_close_force_after_seconds` past its deadline, then closes anyway (a payment
    arriving later is refunded)."""
    now = clock.now()
    force_after = timedelta(seconds=get_settings().order_close_force_after_seconds)
    rows = (
        await Order.filter(status=PENDING_PAYMENT, pay_deadline__lte=now)
        .order_by("pay_deadline", "id")
        .limit(batch)
    )
    closed = 0
    ask = wechat_pay.is_configured()
    for order in rows:
        if ask and order.cash_fen > 0:
            try:
                result = await wechat_pay.query_payment(out_trade_no(order))
            except Exception as exc:
                deadline: datetime = order.pay_deadline  # type: ignore[assignment]
                if now < deadline + force_after:
                    log.warning("cannot ask wechat pay about %s: %r", order.number, exc)
                    continue
                result = None
            if result is not None and result.trade_state == "SUCCESS":
                try:
                    await on_order_paid(result)
                except MallError:
                    log.exception("order %s: payment found at close but refused", order.number)
                continue
        if await _release_unpaid(order.id, to=CLOSED, reason="unpaid at the deadline"):
            closed += 1
    return closed


async def complete_delivered(batch: int = 200) -> int:
    """Shipped orders complete themselves `order_auto_complete_days` after shipping."""
    due = clock.now() - timedelta(days=get_settings().order_auto_complete_days)
    ids = (
        await Order.filter(status=SHIPPED, shipped_at__lte=due)
        .order_by("shipped_at")
        .limit(batch)
        .values_list("id", flat=True)
    )
    done = 0
    for order_id in ids:
        try:
            await complete(int(order_id), staff=None, member_id=None)  # type: ignore[call-overload]
            done += 1
        except MallError as exc:
            log.info("auto-complete of order %s skipped: %s", order_id, exc.code)
    return done


async def retry_cash_refunds(batch: int = 100, older_than_seconds: int = 60) -> int:
    """Send again the WeChat refunds that failed to send or are still processing."""
    before = clock.now() - timedelta(seconds=older_than_seconds)
    ids = (
        await OrderRefund.filter(cash_status__in=["pending", "processing"], updated_at__lte=before)
        .order_by("id")
        .limit(batch)
        .values_list("id", flat=True)
    )
    for refund_id in ids:
        await send_cash_refund(int(refund_id))  # type: ignore[call-overload]
    return len(ids)


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
