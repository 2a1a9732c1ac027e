"""Placing the order that pays for (or just ships) a unit another domain holds (a
flash-sale win, a blind-box prize): the
same order, breakdown, wallet part, WeChat Pay prepay and notification as any order, but
its one line takes no catalog stock and its deadline is the holder's.

The flash price is final: no member price, member day, coupon or points as cash, and no
shipping fee (the sale's terms). The points of a points + cash win were spent when it was
won; the order is for its cash part."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from mall.addresses import service as addresses_service
from mall.kit import clock
from mall.members.models import Member
from mall.orders.checkout import _create_prepay, _mark_paid
from mall.orders.common import (
    ADDRESS_REQUIRED,
    PAYMENT_EXPIRED,
    _new_number,
    _wallet_key,
    line_money,
    order_money,
)
from mall.orders.common import _ref as order_ref
from mall.orders.holders import source_ref
from mall.orders.models import PENDING_PAYMENT, Order, OrderLine
from mall.orders.schemas import CheckoutBreakdown
from mall.pricing.calc import Delivery, PricedLine, Step
from mall.wallet import service as wallet_service

# inside the order's transaction: hand the unit to this order id (raise if it cannot be)
Claim = Callable[[int], Awaitable[None]]


@dataclass(frozen=True)
class HeldUnit:
    source: str  # holders.SECKILL | holders.BLINDBOX
    ref: str  # the holder's id for it, e.g. the reservation id
    name: str
    product_id: int  # the catalog product, 0 for none
    price_fen: int  # the cash part (0: a prize, the order is paid when placed)
    pay_deadline: datetime | None
    claim: Claim


def _breakdown(
    unit: HeldUnit, delivery: Delivery, use_wallet: bool, wallet_balance: int
) -> CheckoutBreakdown:
    price = unit.price_fen
    wallet = min(wallet_balance, price) if use_wallet else 0
    return CheckoutBreakdown(
        at=clock.now(),
        member_day=False,
        price_basis="list",
        member_percents=[],
        lines=[
            PricedLine(
                sku_id=0,
                product_id=unit.product_id,
                name=unit.name[:64],
                quantity=1,
                unit_list_fen=price,
                unit_member_fen=price,
                list_total_fen=price,
                member_total_fen=price,
                member_saving_fen=0,
                due_fen=price,
            )
        ],
        list_total_fen=price,
        member_saving_fen=0,
        member_total_fen=price,
        goods_after_coupon_fen=price,
        delivery=delivery,
        shipping_fen=0,
        free_shipping=True,
        amount_due_fen=price,
        steps=[
            Step(code="list_total", amount_fen=price),
            Step(code="shipping", amount_fen=0),
            Step(code="amount_due", amount_fen=price),
        ],
        coupons=[],
        notes=[f"{unit.source.upper()}_PRICE"],
        use_wallet=use_wallet,
        wallet_balance_fen=wallet_balance,
        wallet_fen=wallet,
        cash_fen=price - wallet,
    )


async def place_held_order(
    member: Member,
    unit: HeldUnit,
    *,
    delivery: Delivery,
    address_id: int | None,
    use_wallet: bool,
) -> Order:
    """The order paying `unit`, once: a retry (or a second tap) returns the same order.
    The wallet part is paid at once; the cash part gets a WeChat Pay order whose
    `time_expire` is the holder's deadline."""
    ref = source_ref(unit.source, unit.ref)
    found = await Order.get_or_none(source_ref=ref)
    if found is not None:
        return found
    if unit.pay_deadline is not None and clock.now() >= unit.pay_deadline:
        raise PAYMENT_EXPIRED()
    address: dict[str, str] | None = None
    if delivery != "pickup":
        if address_id is None:
            raise ADDRESS_REQUIRED()
        address = (await addresses_service.snapshot(member.id, address_id)).model_dump()
    balance = int((await wallet_service.get_balance(member.id)).total_fen)
    breakdown = _breakdown(unit, delivery, use_wallet, balance)
    try:
        async with in_transaction():
            order = await Order.create(
                number=_new_number(),
                member_id=member.id,
                status=PENDING_PAYMENT,
                delivery=delivery,
                address=address,
                source=unit.source,
                source_ref=ref,
                **order_money(breakdown),
                pay_deadline=unit.pay_deadline if breakdown.cash_fen else None,
            )
            line = breakdown.lines[0]
            await OrderLine.create(
                order_id=order.id,
                sku_id=line.sku_id,
                product_id=line.product_id,
                name=line.name,
                specs={},
                quantity=line.quantity,
                **line_money(line),
            )
            await unit.claim(order.id)
            if order.wallet_fen > 0:
                paid = await wallet_service.pay(
                    member.id,
                    order.wallet_fen,
                    idempotency_key=_wallet_key(order),
                    reference=order_ref(order),
                )
                order.wallet_principal_fen = int(paid.principal_fen)
                order.wallet_bonus_fen = int(paid.bonus_fen)
                await order.save(update_fields=["wallet_principal_fen", "wallet_bonus_fen"])
            if order.cash_fen == 0:
                await _mark_paid(order, transaction_id=None)
    except IntegrityError:
        found = await Order.get_or_none(source_ref=ref)
        if found is not None:
            return found  # placed by a concurrent tap
        raise
    if order.status == PENDING_PAYMENT:
        await _create_prepay(order, member.openid)
    return order
