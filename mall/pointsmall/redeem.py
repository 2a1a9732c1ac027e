"""The points-mall decision: one redemption. One Lua call (`lua/reserve.lua`) decides
limits and stock and holds the units in a reservation that expires; then one database
transaction spends the points, writes the redemption (unique reservation id) and
decrements the database stock conditionally; then the reservation is confirmed. If the
transaction fails, the reservation is released at once; if the process dies in between,
the reconciler releases it after it expires. The database is the record of truth.

A voucher item with a coupon template grants one coupon per unit inside that same
transaction, so a coupon failure (template sold out, inactive) spends nothing."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import uuid
from datetime import datetime
from typing import Any

from tortoise.expressions import F

from mall.addresses import service as addresses_service
from mall.config import get_settings
from mall.coupons import service as coupons_service
from mall.errors import IDEMPOTENCY_IN_PROGRESS, ErrorCode
from mall.i18n import _
from mall.kit import clock, tx
from mall.kit import stock as kit
from mall.members.models import Member
from mall.points import service as points_service
from mall.pointsmall import stock
from mall.pointsmall.models import PointsMallItem, PointsMallRedemption
from mall.pointsmall.stock import item_keys, period_label, period_ttl

log = logging.getLogger("mall.pointsmall")

ITEM_NOT_FOUND = ErrorCode("ITEM_NOT_FOUND", 404, _("This points mall item was not found"))
ITEM_OFF_SHELF = ErrorCode("ITEM_OFF_SHELF", 409, _("This item is not on the shelf right now"))
OUT_OF_STOCK = ErrorCode("OUT_OF_STOCK", 409, _("This item is out of stock"))
REDEEM_LIMIT_REACHED = ErrorCode(
    "REDEEM_LIMIT_REACHED", 409, _("You can redeem this item at most {limit} times")
)
REDEEM_PERIOD_LIMIT_REACHED = ErrorCode(
    "REDEEM_PERIOD_LIMIT_REACHED",
    409,
    _("You have reached this item's redemption limit for now; try again next period"),
)
LEVEL_TOO_LOW = ErrorCode("LEVEL_TOO_LOW", 403, _("This item is for members of level {level} up"))
POINTS_THRESHOLD_NOT_MET = ErrorCode(
    "POINTS_THRESHOLD_NOT_MET",
    409,
    _("Joining needs a balance of at least {threshold} points; you have {balance}"),
)
ACTIVITY_FULL = ErrorCode("ACTIVITY_FULL", 409, _("This activity is full"))
ADDRESS_REQUIRED = ErrorCode(
    "ADDRESS_REQUIRED", 422, _("Please choose a delivery address for this gift")
)
ONE_PLACE_PER_ENTRY = ErrorCode(
    "ONE_PLACE_PER_ENTRY", 422, _("An activity entry is for one person; redeem one at a time")
)

_PKG = "mall.pointsmall"
_STATUS_AFTER_REDEEM = {"gift": "awaiting_shipment", "voucher": "issued", "activity": "enrolled"}
_VOUCHER_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I


def is_on_shelf(item: PointsMallItem, now: datetime | None = None) -> bool:
    now = now or clock.now()
    if item.status != "on":
        return False
    if item.on_shelf_at is not None and now < item.on_shelf_at:
        return False
    return item.off_shelf_at is None or now < item.off_shelf_at


async def get_item(item_id: int) -> PointsMallItem:
    item = await PointsMallItem.get_or_none(id=item_id)
    if item is None:
        raise ITEM_NOT_FOUND()
    return item


def reservation_id(member_id: int, item_id: int, idempotency_key: str | None) -> str:
    """Derived from the Idempotency-Key when there is one, so a retry that outlived the
    idempotency record still meets the unique reservation id in the database."""
    if idempotency_key:
        raw = f"{member_id}:{item_id}:{idempotency_key}".encode()
        return "k" + hashlib.sha256(raw).hexdigest()[:39]
    return "r" + uuid.uuid4().hex


def _voucher_code() -> str:
    raw = "".join(secrets.choice(_VOUCHER_ALPHABET) for _ in range(12))
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


async def _reserve(item: PointsMallItem, member_id: int, quantity: int, resv: str) -> str:
    """Run the reserve Lua (warming the item first if Redis does not have it);
    returns the period label it counted in."""
    now = clock.now()
    label = period_label(item.limit_period, now)
    ttl = get_settings().pointsmall_reservation_ttl_seconds
    expires_ms = int((now.timestamp() + ttl) * 1000)
    args: list[Any] = [
        member_id,
        quantity,
        item.limit_per_member,
        item.limit_per_period if label else 0,
        resv,
        expires_ms,
        period_ttl(item.limit_period, now),
        "1" if label else "0",
    ]
    keys = item_keys(item.id, label).reserve()
    reserve = kit.script(_PKG, "reserve")
    raw = await kit.decide(lambda: reserve(keys=keys, args=args), lambda: stock.warm(item))
    status = kit.parse(raw).status
    if status == kit.OK:
        return label
    if status == "limit":
        raise REDEEM_LIMIT_REACHED(limit=item.limit_per_member)
    if status == "period_limit":
        raise REDEEM_PERIOD_LIMIT_REACHED(limit=item.limit_per_period)
    if status == "sold_out":
        raise ACTIVITY_FULL() if item.kind == "activity" else OUT_OF_STOCK()
    if status == "dup":
        raise IDEMPOTENCY_IN_PROGRESS()
    raise OUT_OF_STOCK()  # the item could not be loaded; nothing was held


async def _settle(item_id: int, resv: str, label: str) -> None:
    """After a failed database write: confirm if the row exists after all, else give back
    the reservation. (Coupon grants give their own wins back when the write rolls back.)"""
    keys = item_keys(item_id, label)
    try:
        if await PointsMallRedemption.exists(reservation_id=resv):
            await stock.confirm(keys, resv)
        else:
            await stock.release(keys, resv)
    except Exception:
        log.exception(
            "could not settle reservation %s of item %s; the reconciler will", resv, item_id
        )


async def redeem(
    member: Member,
    item_id: int,
    quantity: int = 1,
    address_id: int | None = None,
    idempotency_key: str | None = None,
) -> PointsMallRedemption:
    item = await get_item(item_id)
    if item.status in ("draft", "archived"):
        raise ITEM_NOT_FOUND()
    resv = reservation_id(member.id, item.id, idempotency_key)
    if idempotency_key:
        done = await PointsMallRedemption.get_or_none(reservation_id=resv)
        if done is not None:
            return done
    if not is_on_shelf(item):
        raise ITEM_OFF_SHELF()
    if member.level < item.level_required:
        raise LEVEL_TOO_LOW(level=item.level_required)
    if item.kind == "activity" and quantity != 1:
        raise ONE_PLACE_PER_ENTRY()
    address: dict[str, Any] | None = None
    if item.kind == "gift":
        if address_id is None:
            raise ADDRESS_REQUIRED()
        address = (await addresses_service.snapshot(member.id, address_id)).model_dump()
    cost = item.points_price * quantity
    # Fail fast without touching stock; the spend below is the real guard.
    balance = await points_service.get_balance(member.id)
    if balance < item.min_points_balance:
        raise POINTS_THRESHOLD_NOT_MET(threshold=item.min_points_balance, balance=balance)
    if balance < cost:
        raise points_service.NOT_ENOUGH_POINTS(balance=balance, cost=cost)

    label = await _reserve(item, member.id, quantity, resv)
    try:
        redemption = await _write(item, member.id, quantity, cost, resv, label, address)
    except BaseException:
        await asyncio.shield(_settle(item.id, resv, label))
        raise
    if not await stock.confirm(item_keys(item.id, label), resv):
        # the reconciler gave it back before we got here: its stock check will say so
        log.warning("reservation %s of item %s confirmed after it was returned", resv, item.id)
    return redemption


async def _write(
    item: PointsMallItem,
    member_id: int,
    quantity: int,
    cost: int,
    resv: str,
    label: str,
    address: dict[str, Any] | None,
) -> PointsMallRedemption:
    spend_key = f"pointsmall:redeem:{resv}"
    template_id = item.coupon_template_id if item.kind == "voucher" else None
    # tx.transaction: the coupon grants below give their Redis wins back on its rollback
    async with tx.transaction():
        # Member row first, the hot item row last: short item locks, one lock order.
        entry = await points_service.spend(
            member_id,
            cost,
            idempotency_key=spend_key,
            reason="pointsmall.redeem",
            reference=f"pointsmall_item:{item.id}",
        )
        # The threshold is on the balance at the moment of the spend, which the ledger
        # entry states exactly; if it was not met the whole transaction rolls back.
        before = entry.balance_after + cost
        if item.min_points_balance and before < item.min_points_balance:
            raise POINTS_THRESHOLD_NOT_MET(threshold=item.min_points_balance, balance=before)
        coupon_ids: list[int] | None = None
        if template_id is not None:
            # each grant joins this transaction; COUPON_SOLD_OUT etc. roll it all back
            coupon_ids = []
            for i in range(quantity):
                coupon = await coupons_service.grant(
                    member_id, template_id, grant_key=f"pointsmall:{resv}:{i}", source="points_mall"
                )
                coupon_ids.append(coupon.id)
        redemption = await PointsMallRedemption.create(
            reservation_id=resv,
            item_id=item.id,
            member_id=member_id,
            item_name=item.name,
            kind=item.kind,
            quantity=quantity,
            points_spent=cost,
            status=_STATUS_AFTER_REDEEM[item.kind],
            spend_key=spend_key,
            period_label=label,
            voucher_code=_voucher_code() if item.kind == "voucher" and not template_id else None,
            coupon_ids=coupon_ids,
            address=address,
        )
        taken = await PointsMallItem.filter(id=item.id, stock__gte=quantity).update(
            stock=F("stock") - quantity
        )
        if not taken:
            raise ACTIVITY_FULL() if item.kind == "activity" else OUT_OF_STOCK()
    return redemption
