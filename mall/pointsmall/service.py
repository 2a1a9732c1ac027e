"""Points mall: items (ops), what members see, and redemptions after the fact
(cancel, ship, export). A hot domain reads as decision -> persistence -> ops:

- `stock.py`: the item's pool in Redis on the hot-stock kit (warm, settle, give-back,
  the reconciliation);
- `redeem.py`: the decision, one Lua call (`lua/reserve.lua`) that takes the units and
  appends the redemption to the item's stream; the member gets a pending reservation;
- `persist.py`: the stream consumer writing redemptions in batches (points spend,
  coupons, the row, the stock guard) or releasing those the database refuses;
- `cash.py` / `payment.py`: points + cash items (points held, the cash part paid as a
  mall order, released when unpaid);
- this module: items and their stock, member views, cancel and ship, the CSV export,
  and the names other domains and the routers use (re-exported below).

Stock adjustments follow the kit's rule: a decrease is taken in Redis first (refused
there while pending reservations hold the units), an increase reaches Redis after the
database commits."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from tortoise.expressions import F, Q
from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.coupons import service as coupons_service
from mall.errors import VALIDATION_ERROR, ErrorCode, MallError
from mall.i18n import _
from mall.kit import clock, masking
from mall.kit import stock as kit
from mall.kit.pagination import cursor_page
from mall.members.models import Member, Staff
from mall.points import service as points_service
from mall.pointsmall import cash, stock
from mall.pointsmall.cash import REDEMPTION_NOT_PAYABLE as REDEMPTION_NOT_PAYABLE
from mall.pointsmall.cash import REDEMPTION_NOT_READY as REDEMPTION_NOT_READY
from mall.pointsmall.cash import expire_unpaid as expire_unpaid
from mall.pointsmall.models import (
    PointsMallItem,
    PointsMallRedemption,
    PointsMallStockAdjustment,
)
from mall.pointsmall.redeem import ACTIVITY_FULL as ACTIVITY_FULL
from mall.pointsmall.redeem import ADDRESS_REQUIRED as ADDRESS_REQUIRED
from mall.pointsmall.redeem import ITEM_NOT_FOUND as ITEM_NOT_FOUND
from mall.pointsmall.redeem import ITEM_OFF_SHELF as ITEM_OFF_SHELF
from mall.pointsmall.redeem import LEVEL_TOO_LOW as LEVEL_TOO_LOW
from mall.pointsmall.redeem import ONE_PLACE_PER_ENTRY as ONE_PLACE_PER_ENTRY
from mall.pointsmall.redeem import OUT_OF_STOCK as OUT_OF_STOCK
from mall.pointsmall.redeem import POINTS_THRESHOLD_NOT_MET as POINTS_THRESHOLD_NOT_MET
from mall.pointsmall.redeem import REDEEM_LIMIT_REACHED as REDEEM_LIMIT_REACHED
from mall.pointsmall.redeem import REDEEM_PERIOD_LIMIT_REACHED as REDEEM_PERIOD_LIMIT_REACHED
from mall.pointsmall.redeem import REDEMPTION_NOT_FOUND as REDEMPTION_NOT_FOUND
from mall.pointsmall.redeem import Reservation as Reservation
from mall.pointsmall.redeem import forget_terms as forget_terms
from mall.pointsmall.redeem import get_item as get_item
from mall.pointsmall.redeem import is_on_shelf as is_on_shelf
from mall.pointsmall.redeem import redeem as redeem
from mall.pointsmall.redeem import reservation as reservation
from mall.pointsmall.schemas import ItemCreate, ItemOut, ItemPage, ItemPatch
from mall.pointsmall.stock import ItemBalance as ItemBalance
from mall.pointsmall.stock import ReconcileResult as ReconcileResult
from mall.pointsmall.stock import all_item_ids as all_item_ids
from mall.pointsmall.stock import item_balance as item_balance
from mall.pointsmall.stock import item_keys as item_keys
from mall.pointsmall.stock import period_key as period_key
from mall.pointsmall.stock import period_label as period_label
from mall.pointsmall.stock import reconcile as reconcile
from mall.pointsmall.stock import redis_stock as redis_stock
from mall.pointsmall.stock import warm as warm
from mall.validation import field_errors

log = logging.getLogger("mall.pointsmall")

# the hooks of the order paying a points + cash redemption (mall.orders.holders)
cash_paid = cash.paid
cash_released = cash.released
cash_give_back_if_due = cash.give_back_if_due
cash_refunded = cash.refunded

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
REDEMPTION_CANCEL_BY_ORDER = ErrorCode(
    "REDEMPTION_CANCEL_BY_ORDER",
    409,
    _("This redemption was paid partly in cash; cancel or refund its order {order_id} instead"),
)
ITEM_CASH_WITH_COUPON = ErrorCode(
    "ITEM_CASH_WITH_COUPON",
    422,
    _("A voucher that issues coupons cannot have a cash price; use points only"),
)
ITEM_COUPON_TEMPLATE_UNKNOWN = ErrorCode(
    "ITEM_COUPON_TEMPLATE_UNKNOWN", 422, _("Coupon template {template_id} does not exist")
)

MEMBER_CANCELLABLE = ("awaiting_shipment", "enrolled")
STAFF_CANCELLABLE = ("awaiting_shipment", "enrolled", "issued")


# --- items -------------------------------------------------------------------------


async def _check_coupon_template(template_id: int | None) -> None:
    if template_id is None:
        return
    try:
        await coupons_service.get_template(template_id)
    except MallError as exc:
        if exc.code == coupons_service.TEMPLATE_NOT_FOUND.code:
            raise ITEM_COUPON_TEMPLATE_UNKNOWN(template_id=template_id) from None
        raise


def _check_cash(cash_price_fen: int, coupon_template_id: int | None) -> None:
    """Coupons are granted in the consumer's transaction, not in a payment's: a points +
    cash voucher gets a voucher code instead."""
    if cash_price_fen and coupon_template_id is not None:
        raise ITEM_CASH_WITH_COUPON()


async def create_item(data: ItemCreate, staff: Staff) -> PointsMallItem:
    _check_cash(data.cash_price_fen, data.coupon_template_id)
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
    _check_cash(merged.cash_price_fen, merged.coupon_template_id)
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
    forget_terms(item.id)
    if item.limit_period != old_period:
        # period counters are keyed by period; reload them from the database
        await stock.rewarm(item)
    else:
        await warm(item)  # the terms the decision checks (window, price, limits)
    return item


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
    forget_terms(item.id)
    await warm(item)  # the decision reads the status from Redis
    return item


async def archive_item(item_id: int, staff: Staff) -> None:
    """Items with history are never deleted: archiving hides them from members and ops lists."""
    item = await get_item(item_id)
    async with in_transaction():
        await PointsMallItem.filter(id=item.id).update(status="archived")
        await audit_service.record(staff, "pointsmall.item.archive", f"pointsmall_item:{item.id}")
    item.status = "archived"
    forget_terms(item.id)
    await warm(item)


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
    update) and to Redis (never below zero), or to neither, by the kit's rule: a
    decrease in Redis first, an increase after the database commits."""
    db_key = f"{item_id}:{idempotency_key}" if idempotency_key else None
    if db_key:
        done = await PointsMallStockAdjustment.get_or_none(idempotency_key=db_key)
        if done is not None:
            return done
    item = await get_item(item_id)
    if item.status == "archived":
        raise ITEM_ARCHIVED()
    await warm(item)

    async def commit() -> PointsMallStockAdjustment:
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
        return adjustment

    # Redis refuses units held by pending redemptions
    return await kit.adjust(
        item_keys(item.id),
        delta,
        commit,
        refused=lambda left: STOCK_BELOW_ZERO(available=left),
        warm=lambda: warm(item),
    )


async def list_stock_adjustments(item_id: int) -> list[PointsMallStockAdjustment]:
    return await PointsMallStockAdjustment.filter(item_id=item_id).order_by("-id").limit(200)


# --- what members see -----------------------------------------------------------


def _shelf_query(now: datetime) -> Any:
    return PointsMallItem.filter(status="on").filter(
        Q(on_shelf_at__isnull=True) | Q(on_shelf_at__lte=now),
        Q(off_shelf_at__isnull=True) | Q(off_shelf_at__gt=now),
    )


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
        cash_price_fen=item.cash_price_fen,
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
    held = await stock.held_by(member.id, items)
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
    held = await stock.held_by(member.id, [item])
    return _item_out(
        item, member, balance, stocks.get(item.id, item.stock), held[item.id], clock.now()
    )


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
    if redemption.cash_fen and redemption.order_id is not None and redemption.status in allowed:
        # the order's refund gives the cash and the points back together
        raise REDEMPTION_CANCEL_BY_ORDER(order_id=redemption.order_id)
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
        await stock.give_back(keys, redemption)
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
