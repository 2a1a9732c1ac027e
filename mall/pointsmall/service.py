"""Points mall rules: items, redemption, cancellation, stock, and the Redis/database
reconciliation.

Redeem = one Lua call decides limits and stock and holds the units in a reservation
that expires; then one database transaction spends the points, writes the
redemption (unique reservation id) and decrements the database stock conditionally;
then a second Lua call confirms the reservation. If the transaction fails, the
reservation is given back at once; if the process dies in between, the reconciler
gives it back after it expires. The database is the record of truth.

A voucher item with a coupon template grants one coupon per unit inside that same
transaction, so a coupon failure (template sold out, inactive) spends nothing."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from tortoise.expressions import F, Q
from tortoise.functions import Sum
from tortoise.transactions import in_transaction

from mall.addresses import service as addresses_service
from mall.audit import service as audit_service
from mall.config import get_settings
from mall.coupons import service as coupons_service
from mall.errors import IDEMPOTENCY_IN_PROGRESS, VALIDATION_ERROR, ErrorCode, MallError
from mall.i18n import _
from mall.kit import clock, masking
from mall.kit.pagination import cursor_page
from mall.members.models import Member, Staff
from mall.points import service as points_service
from mall.pointsmall.models import (
    ACTIVE_STATUSES,
    PointsMallItem,
    PointsMallRedemption,
    PointsMallStockAdjustment,
)
from mall.pointsmall.schemas import ItemCreate, ItemOut, ItemPage, ItemPatch
from mall.redis import get_redis, script
from mall.validation import field_errors

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
REDEMPTION_NOT_FOUND = ErrorCode("REDEMPTION_NOT_FOUND", 404, _("The redemption was not found"))
REDEMPTION_NOT_CANCELLABLE = ErrorCode(
    "REDEMPTION_NOT_CANCELLABLE", 409, _("This redemption can no longer be cancelled")
)
REDEMPTION_COUPON_USED = ErrorCode(
    "REDEMPTION_COUPON_USED",
    409,
    _(
        "A coupon from this redemption has been used or is held by an unpaid order; "
        "the redemption can no longer be cancelled"
    ),
)
REDEMPTION_NOT_SHIPPABLE = ErrorCode(
    "REDEMPTION_NOT_SHIPPABLE", 409, _("Only gifts awaiting shipment can be marked shipped")
)
STOCK_BELOW_ZERO = ErrorCode(
    "STOCK_BELOW_ZERO", 409, _("Stock cannot go below zero: {available} units are left")
)
ITEM_ARCHIVED = ErrorCode("ITEM_ARCHIVED", 409, _("This item is archived and cannot change"))
ITEM_COUPON_TEMPLATE_UNKNOWN = ErrorCode(
    "ITEM_COUPON_TEMPLATE_UNKNOWN", 422, _("Coupon template {template_id} does not exist")
)

_PKG = "mall.pointsmall"
_STATUS_AFTER_REDEEM = {"gift": "awaiting_shipment", "voucher": "issued", "activity": "enrolled"}
MEMBER_CANCELLABLE = ("awaiting_shipment", "enrolled")
STAFF_CANCELLABLE = ("awaiting_shipment", "enrolled", "issued")
_VOUCHER_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I


# --- Redis keys --------------------------------------------------------------


def _tag(item_id: int) -> str:
    return f"{{pm:{item_id}}}"


def period_key(item_id: int, label: str) -> str:
    return f"{_tag(item_id)}:p:{label or '-'}"


def item_keys(item_id: int, label: str = "") -> list[str]:
    """stock, buyers, resv, resvinfo, ver, period counter: one hash tag, one slot."""
    t = _tag(item_id)
    return [
        f"{t}:stock",
        f"{t}:buyers",
        f"{t}:resv",
        f"{t}:resvinfo",
        f"{t}:ver",
        period_key(item_id, label),
    ]


def period_label(period: str, moment: datetime) -> str:
    """The business (Asia/Shanghai) period a moment falls in, e.g. m202405."""
    local = moment.astimezone(clock.SHANGHAI)
    if period == "day":
        return local.strftime("d%Y%m%d")
    if period == "week":
        year, week, _day = local.isocalendar()
        return f"w{year}{week:02d}"
    if period == "month":
        return local.strftime("m%Y%m")
    return ""


def _period_ttl(period: str, moment: datetime) -> int:
    """Seconds until the period ends, plus a day so late confirms still find it."""
    day = moment.astimezone(clock.SHANGHAI).date()
    if period == "week":
        _start, end = clock.local_week_bounds_utc(day)
    elif period == "month":
        _start, end = clock.local_month_bounds_utc(day)
    else:
        _start, end = clock.local_day_bounds_utc(day)
    return int((end - moment).total_seconds()) + 86400


def _parse_info(info: str) -> tuple[int, int, str]:
    member, qty, pkey = info.split("|", 2)
    return int(member), int(qty), pkey


# --- items ---------------------------------------------------------------------


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


async def warm(item: PointsMallItem) -> bool:
    """Load the item's stock and limit counters into Redis from the database, unless
    they are already there. True if it loaded."""
    label = period_label(item.limit_period, clock.now())
    active = PointsMallRedemption.filter(item_id=item.id, status__in=ACTIVE_STATUSES)
    buyers = await (
        active.group_by("member_id")
        .annotate(units=Sum("quantity"))
        .values_list("member_id", "units")
    )
    in_period: Sequence[Any] = []
    if label:
        in_period = await (
            active.filter(period_label=label)
            .group_by("member_id")
            .annotate(units=Sum("quantity"))
            .values_list("member_id", "units")
        )
    stock: list[Any] = await PointsMallItem.filter(id=item.id).values_list("stock", flat=True)
    args: list[Any] = [int(stock[0]) if stock else 0, _period_ttl(item.limit_period, clock.now())]
    args.append(len(buyers))
    for member_id, units in buyers:
        args += [member_id, int(units)]
    for member_id, units in in_period:
        args += [member_id, int(units)]
    loaded = await script(_PKG, "warm")(keys=item_keys(item.id, label), args=args)
    return bool(loaded)


async def redis_stock(item_ids: Sequence[int]) -> dict[int, int]:
    """Live stock of warm items (items not in Redis are left out)."""
    if not item_ids:
        return {}
    pipe = get_redis().pipeline(transaction=False)
    for item_id in item_ids:
        pipe.get(item_keys(item_id)[0])
    values = await pipe.execute()
    return {i: int(v) for i, v in zip(item_ids, values, strict=True) if v is not None}


async def _check_coupon_template(template_id: int | None) -> None:
    if template_id is None:
        return
    try:
        await coupons_service.get_template(template_id)
    except MallError as exc:
        if exc.code == coupons_service.TEMPLATE_NOT_FOUND.code:
            raise ITEM_COUPON_TEMPLATE_UNKNOWN(template_id=template_id) from None
        raise


async def create_item(data: ItemCreate, staff: Staff) -> PointsMallItem:
    await _check_coupon_template(data.coupon_template_id)
    fields = data.model_dump(exclude={"on_shelf", "total_stock"})
    async with in_transaction():
        item = await PointsMallItem.create(
            **fields,
            total_stock=data.total_stock,
            stock=data.total_stock,
            status="on" if data.on_shelf else "draft",
        )
        if data.total_stock:
            await PointsMallStockAdjustment.create(
                item_id=item.id,
                delta=data.total_stock,
                total_after=data.total_stock,
                reason="initial stock",
                staff_id=staff.id,
                staff_username=staff.username,
            )
        await audit_service.record(
            staff,
            "pointsmall.item.create",
            f"pointsmall_item:{item.id}",
            name=item.name,
            kind=item.kind,
            points_price=item.points_price,
            total_stock=item.total_stock,
            status=item.status,
        )
    await warm(item)
    return item


async def update_item(item_id: int, patch: ItemPatch, staff: Staff) -> PointsMallItem:
    changes = patch.model_dump(exclude_unset=True)
    item = await get_item(item_id)
    if item.status == "archived":
        raise ITEM_ARCHIVED()
    try:  # re-validate the combination (window order, a period limit needs a period)
        merged = ItemCreate.model_validate(
            {
                **{k: getattr(item, k) for k in ItemCreate.model_fields if hasattr(item, k)},
                "on_shelf": False,
                **changes,
            }
        )
    except ValidationError as exc:
        raise VALIDATION_ERROR(fields=field_errors(exc.errors(), prefix=("body",))) from None
    if "coupon_template_id" in changes:
        await _check_coupon_template(merged.coupon_template_id)
    old_period = item.limit_period
    async with in_transaction():
        for name in changes:
            setattr(item, name, getattr(merged, name))
        await item.save()
        await audit_service.record(
            staff,
            "pointsmall.item.update",
            f"pointsmall_item:{item.id}",
            **{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in changes.items()},
        )
    if item.limit_period != old_period:
        # period counters are keyed by period; reload them from the database
        await _rewarm(item)
    return item


async def _rewarm(item: PointsMallItem) -> None:
    await get_redis().delete(item_keys(item.id)[0])
    await warm(item)


async def set_shelf(item_id: int, on: bool, staff: Staff) -> PointsMallItem:
    item = await get_item(item_id)
    if item.status == "archived":
        raise ITEM_ARCHIVED()
    status = "on" if on else "off"
    async with in_transaction():
        await PointsMallItem.filter(id=item.id).update(status=status)
        await audit_service.record(
            staff, f"pointsmall.item.{'on' if on else 'off'}_shelf", f"pointsmall_item:{item.id}"
        )
    item.status = status
    if on:
        await warm(item)
    return item


async def archive_item(item_id: int, staff: Staff) -> None:
    """Items with history are never deleted: archiving hides them from members and ops lists."""
    item = await get_item(item_id)
    async with in_transaction():
        await PointsMallItem.filter(id=item.id).update(status="archived")
        await audit_service.record(staff, "pointsmall.item.archive", f"pointsmall_item:{item.id}")


async def list_items_admin(
    status: str | None, cursor: str | None, size: int
) -> tuple[list[PointsMallItem], str | None]:
    query = PointsMallItem.all()
    query = query.filter(status=status) if status else query.exclude(status="archived")
    return await cursor_page(query, cursor, size)


async def adjust_stock(
    item_id: int, delta: int, reason: str, staff: Staff, idempotency_key: str | None = None
) -> PointsMallStockAdjustment:
    """Add or take away units: an audited delta applied to the database (conditional
    update) and to Redis (a Lua that refuses to go below zero), or to neither."""
    db_key = f"{item_id}:{idempotency_key}" if idempotency_key else None
    if db_key:
        done = await PointsMallStockAdjustment.get_or_none(idempotency_key=db_key)
        if done is not None:
            return done
    item = await get_item(item_id)
    if item.status == "archived":
        raise ITEM_ARCHIVED()
    await warm(item)
    t = _tag(item.id)
    async with in_transaction():
        updated = await PointsMallItem.filter(id=item.id, stock__gte=max(-delta, 0)).update(
            stock=F("stock") + delta, total_stock=F("total_stock") + delta
        )
        fresh = await get_item(item.id)
        if not updated:
            raise STOCK_BELOW_ZERO(available=fresh.stock)
        adjustment = await PointsMallStockAdjustment.create(
            item_id=item.id,
            delta=delta,
            total_after=fresh.total_stock,
            reason=reason,
            staff_id=staff.id,
            staff_username=staff.username,
            idempotency_key=db_key,
        )
        await audit_service.record(
            staff,
            "pointsmall.stock.adjust",
            f"pointsmall_item:{item.id}",
            delta=delta,
            reason=reason,
            total_after=fresh.total_stock,
        )
        # Redis last: if it refuses (units held by pending redemptions), the database rolls back
        code, left = await script(_PKG, "adjust")(keys=[f"{t}:stock", f"{t}:ver"], args=[delta])
        if int(code) == 0:
            raise STOCK_BELOW_ZERO(available=int(left))
    return adjustment


async def list_stock_adjustments(item_id: int) -> list[PointsMallStockAdjustment]:
    return await PointsMallStockAdjustment.filter(item_id=item_id).order_by("-id").limit(200)


# --- what members see -----------------------------------------------------------


def _shelf_query(now: datetime) -> Any:
    return PointsMallItem.filter(status="on").filter(
        Q(on_shelf_at__isnull=True) | Q(on_shelf_at__lte=now),
        Q(off_shelf_at__isnull=True) | Q(off_shelf_at__gt=now),
    )


async def _held_by(member_id: int, items: Sequence[PointsMallItem]) -> dict[int, int]:
    pipe = get_redis().pipeline(transaction=False)
    for item in items:
        pipe.hget(item_keys(item.id)[1], str(member_id))
    values = await pipe.execute()
    return {item.id: int(v or 0) for item, v in zip(items, values, strict=True)}


def _item_out(
    item: PointsMallItem, member: Member, balance: int, stock_left: int, held: int, now: datetime
) -> ItemOut:
    level_allowed = member.level >= item.level_required
    affordable = balance >= max(item.points_price, item.min_points_balance)
    reason: str | None = None
    if not is_on_shelf(item, now):
        reason = ITEM_OFF_SHELF.code
    elif not level_allowed:
        reason = LEVEL_TOO_LOW.code
    elif item.limit_per_member and held >= item.limit_per_member:
        reason = REDEEM_LIMIT_REACHED.code
    elif stock_left <= 0:
        reason = ACTIVITY_FULL.code if item.kind == "activity" else OUT_OF_STOCK.code
    elif balance < item.min_points_balance:
        reason = POINTS_THRESHOLD_NOT_MET.code
    elif balance < item.points_price:
        reason = points_service.NOT_ENOUGH_POINTS.code
    return ItemOut(
        id=item.id,
        name=item.name,
        description=item.description,
        pictures=list(item.pictures),
        kind=item.kind,
        points_price=item.points_price,
        marked_value_fen=item.marked_value_fen,
        stock_left=max(stock_left, 0),
        limit_per_member=item.limit_per_member,
        limit_per_period=item.limit_per_period,
        limit_period=item.limit_period,
        level_required=item.level_required,
        min_points_balance=item.min_points_balance,
        coupon_template_id=item.coupon_template_id,
        on_shelf=is_on_shelf(item, now),
        off_shelf_at=item.off_shelf_at,
        affordable=affordable,
        level_allowed=level_allowed,
        unavailable_reason=reason,
    )


async def list_for_member(member: Member, cursor: str | None, size: int) -> ItemPage:
    """Items on the shelf: the ones this member can afford and whose level allows first,
    then the rest; each with its live remaining stock."""
    now = clock.now()
    items = await _shelf_query(now).order_by("-sort_order", "-id").limit(500)
    balance = await points_service.get_balance(member.id)
    stocks = await redis_stock([i.id for i in items])
    held = await _held_by(member.id, items)
    rows = [
        _item_out(i, member, balance, stocks.get(i.id, i.stock), held[i.id], now) for i in items
    ]
    rows.sort(key=lambda r: (not (r.affordable and r.level_allowed), r.stock_left <= 0))
    size = max(1, min(size, 100))
    try:
        offset = max(int(cursor), 0) if cursor else 0
    except ValueError:
        offset = 0
    page = rows[offset : offset + size]
    next_cursor = str(offset + size) if offset + size < len(rows) else None
    return ItemPage(items=page, next_cursor=next_cursor, points_balance=balance)


async def item_for_member(member: Member, item_id: int) -> ItemOut:
    item = await get_item(item_id)
    if item.status in ("draft", "archived"):
        raise ITEM_NOT_FOUND()
    balance = await points_service.get_balance(member.id)
    stocks = await redis_stock([item.id])
    held = await _held_by(member.id, [item])
    return _item_out(
        item, member, balance, stocks.get(item.id, item.stock), held[item.id], clock.now()
    )


# --- redeem ------------------------------------------------------------------------


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
        _period_ttl(item.limit_period, now),
        "1" if label else "0",
    ]
    reserve = script(_PKG, "reserve")
    for _attempt in range(3):
        code, _n = await reserve(keys=item_keys(item.id, label), args=args)
        code = int(code)
        if code == -1:
            await warm(item)
            continue
        if code == 1:
            return label
        if code == -2:
            raise REDEEM_LIMIT_REACHED(limit=item.limit_per_member)
        if code == -3:
            raise REDEEM_PERIOD_LIMIT_REACHED(limit=item.limit_per_period)
        if code == -4:
            raise ACTIVITY_FULL() if item.kind == "activity" else OUT_OF_STOCK()
        if code == -5:
            raise IDEMPOTENCY_IN_PROGRESS()
    raise OUT_OF_STOCK()  # the item could not be loaded; nothing was held


async def _settle(
    item_id: int, resv: str, label: str, member_id: int, coupon_wins: list[int]
) -> None:
    """After a failed database write: confirm if the row exists after all, else give back
    the reservation and the coupon template quantity the rolled-back grants took."""
    keys = item_keys(item_id, label)
    try:
        if await PointsMallRedemption.exists(reservation_id=resv):
            await script(_PKG, "confirm")(keys=keys, args=[resv])
        else:
            await script(_PKG, "release")(keys=keys, args=[resv])
            for template_id in coupon_wins:
                # grant() gives its Redis win back only if its own row fails; these rows
                # were written and then rolled back with ours. No public give-back yet.
                await coupons_service.return_grant(template_id, member_id)
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
    coupon_wins: list[int] = []
    try:
        redemption = await _write(
            item, member.id, quantity, cost, resv, label, address, coupon_wins
        )
    except BaseException:
        await asyncio.shield(_settle(item.id, resv, label, member.id, coupon_wins))
        raise
    if not await script(_PKG, "confirm")(keys=item_keys(item.id, label), args=[resv]):
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
    coupon_wins: list[int] | None = None,
) -> PointsMallRedemption:
    """`coupon_wins` collects the template of each coupon granted, for the give-back if
    the transaction does not commit."""
    coupon_wins = [] if coupon_wins is None else coupon_wins
    spend_key = f"pointsmall:redeem:{resv}"
    template_id = item.coupon_template_id if item.kind == "voucher" else None
    async with in_transaction():
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
                coupon_wins.append(template_id)
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


# --- after the redemption ---------------------------------------------------------


async def get_redemption(redemption_id: int, member_id: int | None = None) -> PointsMallRedemption:
    query = PointsMallRedemption.filter(id=redemption_id)
    if member_id is not None:
        query = query.filter(member_id=member_id)
    redemption = await query.first()
    if redemption is None:
        raise REDEMPTION_NOT_FOUND()
    return redemption


async def list_redemptions(
    *,
    member_id: int | None = None,
    item_id: int | None = None,
    status: str | None = None,
    cursor: str | None = None,
    size: int = 20,
) -> tuple[list[PointsMallRedemption], str | None]:
    query = PointsMallRedemption.all()
    if member_id is not None:
        query = query.filter(member_id=member_id)
    if item_id is not None:
        query = query.filter(item_id=item_id)
    if status:
        query = query.filter(status=status)
    return await cursor_page(query, cursor, size)


async def cancel(
    redemption_id: int,
    *,
    member_id: int | None = None,
    staff: Staff | None = None,
    reason: str = "",
) -> PointsMallRedemption:
    """Cancel before shipping: a reversing points entry, stock and limits back, and the
    coupons it issued voided in the same transaction (the member must not keep usable
    coupons with the points back). If one of them is used or held by an unpaid order,
    nothing changes (REDEMPTION_COUPON_USED). Cancelling an already cancelled
    redemption returns it unchanged."""
    redemption = await get_redemption(redemption_id, member_id)
    if redemption.status == "cancelled":
        return redemption
    allowed = STAFF_CANCELLABLE if staff is not None else MEMBER_CANCELLABLE
    if redemption.status not in allowed:
        raise REDEMPTION_NOT_CANCELLABLE()
    by = f"staff:{staff.username}" if staff is not None else "member"
    async with in_transaction():
        flipped = await PointsMallRedemption.filter(
            id=redemption.id, status=redemption.status
        ).update(
            status="cancelled", cancelled_at=clock.now(), cancelled_by=by, cancel_reason=reason
        )
        if not flipped:  # shipped or cancelled meanwhile
            fresh = await get_redemption(redemption.id)
            if fresh.status == "cancelled":
                return fresh
            raise REDEMPTION_NOT_CANCELLABLE()
        # member row (the reverse) before the item row, the same order as redeem
        await points_service.reverse(
            redemption.spend_key,
            idempotency_key=f"pointsmall:cancel:{redemption.id}",
            reason="pointsmall.cancel",
        )
        await PointsMallItem.filter(id=redemption.item_id).update(
            stock=F("stock") + redemption.quantity
        )
        for coupon_id in redemption.coupon_ids or []:
            try:
                await coupons_service.void(
                    coupon_id, reason=f"pointsmall redemption {redemption.id} cancelled"
                )
            except MallError as exc:
                if exc.error is coupons_service.COUPON_NOT_VOIDABLE:
                    raise REDEMPTION_COUPON_USED(**exc.params) from None
                raise
        if staff is not None:
            await audit_service.record(
                staff,
                "pointsmall.redemption.cancel",
                f"pointsmall_redemption:{redemption.id}",
                reason=reason,
                points=redemption.points_spent,
                voided_coupon_ids=list(redemption.coupon_ids or []),
            )
    keys = item_keys(redemption.item_id, redemption.period_label)
    try:
        await script(_PKG, "giveback")(keys=keys, args=[redemption.member_id, redemption.quantity])
    except Exception:
        log.exception("stock of cancelled redemption %s not returned to Redis", redemption.id)
    return await get_redemption(redemption.id)


async def ship(
    redemption_id: int, carrier: str, tracking_number: str, staff: Staff
) -> PointsMallRedemption:
    redemption = await get_redemption(redemption_id)
    if redemption.status == "shipped" and redemption.tracking_number == tracking_number:
        return redemption
    async with in_transaction():
        moved = await PointsMallRedemption.filter(
            id=redemption.id, status="awaiting_shipment"
        ).update(
            status="shipped",
            carrier=carrier,
            tracking_number=tracking_number,
            shipped_at=clock.now(),
        )
        if not moved:
            raise REDEMPTION_NOT_SHIPPABLE()
        await audit_service.record(
            staff,
            "pointsmall.redemption.ship",
            f"pointsmall_redemption:{redemption.id}",
            carrier=carrier,
            tracking_number=tracking_number,
        )
    return await get_redemption(redemption.id)


_CSV_HEADER = [
    "id",
    "created_at",
    "item_id",
    "item_name",
    "kind",
    "member_id",
    "quantity",
    "points_spent",
    "status",
    "voucher_code",
    "coupon_ids",
    "recipient",
    "phone",
    "region",
    "address",
    "carrier",
    "tracking_number",
    "shipped_at",
    "cancelled_at",
    "cancel_reason",
]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(clock.SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
    text = str(value)
    # a cell starting with = + - @ would run as a formula in a spreadsheet
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def export_csv(
    *,
    item_id: int | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AsyncIterator[str]:
    """Redemptions as CSV (UTF-8 with BOM, so Excel opens Chinese correctly), streamed."""
    query = PointsMallRedemption.all()
    if item_id is not None:
        query = query.filter(item_id=item_id)
    if status:
        query = query.filter(status=status)
    if since is not None:
        query = query.filter(created_at__gte=clock.as_utc(since))
    if until is not None:
        query = query.filter(created_at__lt=clock.as_utc(until))
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
        buffer.seek(0)
        buffer.truncate()
        for r in rows:
            address = r.address or {}
            writer.writerow(
                _cell(v)
                for v in (
                    r.id,
                    r.created_at,
                    r.item_id,
                    r.item_name,
                    r.kind,
                    r.member_id,
                    r.quantity,
                    r.points_spent,
                    r.status,
                    r.voucher_code,
                    " ".join(str(c) for c in r.coupon_ids or []),
                    address.get("name"),
                    masking.phone_out(address.get("phone")),
                    address.get("region"),
                    address.get("detail"),
                    r.carrier,
                    r.tracking_number,
                    r.shipped_at,
                    r.cancelled_at,
                    r.cancel_reason,
                )
            )
        yield buffer.getvalue()
        last_id = rows[-1].id


# --- reconciliation -------------------------------------------------------------------


@dataclass
class ItemBalance:
    """One stable reading of an item's Redis and database figures."""

    item_id: int
    warm: bool
    total: int = 0
    db_stock: int = 0
    redeemed: int = 0
    redis_stock: int = 0
    pending: int = 0
    pending_ids: list[str] = field(default_factory=list)
    ver: int = 0
    stable: bool = True

    @property
    def redis_agrees(self) -> bool:
        return self.redis_stock + self.redeemed + self.pending == self.total

    @property
    def db_agrees(self) -> bool:
        return self.total - self.db_stock == self.redeemed

    def describe(self) -> str:
        return (
            f"item {self.item_id}: redis stock {self.redis_stock} + redeemed {self.redeemed}"
            f" + pending {self.pending} vs total {self.total}; db stock {self.db_stock}"
        )


async def _reading(item_id: int) -> tuple[Any, ...]:
    t = _tag(item_id)
    snap = await script(_PKG, "snapshot")(
        keys=[f"{t}:stock", f"{t}:resv", f"{t}:resvinfo", f"{t}:ver"], args=[]
    )
    stock, ver = int(snap[0]), int(snap[1])
    infos = dict(zip(snap[2::2], snap[3::2], strict=True))
    row = await PointsMallItem.filter(id=item_id).values_list("total_stock", "stock")
    total, db_stock = (int(row[0][0]), int(row[0][1])) if row else (0, 0)
    redeemed_sum: Any = (
        await PointsMallRedemption.filter(item_id=item_id, status__in=ACTIVE_STATUSES)
        .annotate(units=Sum("quantity"))
        .first()
        .values_list("units", flat=True)
    )
    redeemed = int(redeemed_sum or 0)
    committed: set[str] = set()
    if infos:
        found: list[Any] = await PointsMallRedemption.filter(
            reservation_id__in=list(infos)
        ).values_list("reservation_id", flat=True)
        committed = {str(r) for r in found}
    pending_ids = sorted(r for r in infos if r not in committed)
    pending = sum(_parse_info(infos[r])[1] for r in pending_ids)
    return (stock, ver, total, db_stock, redeemed, pending, tuple(pending_ids))


async def item_balance(item_id: int, attempts: int = 5) -> ItemBalance:
    """Read twice until two readings agree, so a redemption landing between the Redis
    and the database reads is not taken for a mismatch."""
    previous = await _reading(item_id)
    stable = False
    for _attempt in range(attempts):
        current = await _reading(item_id)
        if current == previous:
            stable = True
            break
        previous = current
        await asyncio.sleep(0.05)
    stock, ver, total, db_stock, redeemed, pending, pending_ids = previous
    return ItemBalance(
        item_id=item_id,
        warm=stock >= 0,
        total=total,
        db_stock=db_stock,
        redeemed=redeemed,
        redis_stock=max(stock, 0),
        pending=pending,
        pending_ids=list(pending_ids),
        ver=ver,
        stable=stable,
    )


async def all_item_ids() -> list[int]:
    rows: list[Any] = await PointsMallItem.all().order_by("id").values_list("id", flat=True)
    return [int(r) for r in rows]


@dataclass
class ReconcileResult:
    returned: int = 0
    confirmed: int = 0
    repaired: list[int] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)


async def return_expired(item_id: int, now: datetime | None = None) -> tuple[int, int]:
    """Settle the item's reservations past their expiry: confirm those whose database
    row exists (the process died before confirming), give back the rest."""
    now_ms = int((now or clock.now()).timestamp() * 1000)
    redis = get_redis()
    t = _tag(item_id)
    expired: list[Any] = await redis.zrangebyscore(f"{t}:resv", "-inf", now_ms)
    returned = confirmed = 0
    for resv in expired:
        info: Any = await redis.hget(f"{t}:resvinfo", resv)
        pkey = _parse_info(info)[2] if info else ""
        keys = [*item_keys(item_id)[:5], pkey or period_key(item_id, "")]
        if await PointsMallRedemption.exists(reservation_id=resv):
            confirmed += int(await script(_PKG, "confirm")(keys=keys, args=[resv]))
        else:
            n = int(await script(_PKG, "release")(keys=keys, args=[resv]))
            returned += n
            if n:
                log.warning("returned expired reservation %s of item %s", resv, item_id)
    return returned, confirmed


async def reconcile(now: datetime | None = None) -> ReconcileResult:
    """The periodic job: return expired reservations, then repair Redis stock that has
    disagreed with the database in the same way on two runs in a row."""
    result = ReconcileResult()
    redis = get_redis()
    for item_id in await all_item_ids():
        returned, confirmed = await return_expired(item_id, now)
        result.returned += returned
        result.confirmed += confirmed
        balance = await item_balance(item_id)
        if not balance.warm or not balance.stable or balance.redis_agrees:
            continue
        result.mismatches.append(balance.describe())
        if not balance.db_agrees or balance.pending:
            continue  # the database disagrees with itself, or units are in flight: report only
        signature = f"{balance.ver}:{balance.redis_stock}:{balance.db_stock}"
        drift_key = f"pm:drift:{item_id}"
        if await redis.get(drift_key) == signature:
            t = _tag(item_id)
            fixed = await script(_PKG, "repair")(
                keys=[f"{t}:stock", f"{t}:resv", f"{t}:ver"], args=[balance.ver, balance.db_stock]
            )
            if fixed:
                log.warning("repaired Redis stock of item %s: %s", item_id, balance.describe())
                result.repaired.append(item_id)
                await redis.delete(drift_key)
        else:
            await redis.set(drift_key, signature, ex=3600)
    return result
