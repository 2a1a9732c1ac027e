"""Flash-sale winners: the stream consumer that turns wins into `SeckillOrder`s (once
per reservation id), payment, and the expiry of unpaid wins.

A win is persisted in one transaction: the database's own guard (`sold < stock`), the
points spend for points-priced items, the order. A win the database refuses (member
short of points, or a unit Redis should not have handed out) becomes a released order
and its unit goes back to Redis, once (`stock.give_back_unit`)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from mall.config import get_settings
from mall.errors import ErrorCode, MallError
from mall.i18n import _
from mall.kit import clock, jobs
from mall.kit import stock as kit
from mall.members import service as members_service
from mall.points import service as points_service
from mall.redis import get_redis
from mall.seckill import stock
from mall.seckill.models import OrderStatus, SeckillItem, SeckillOrder
from mall.seckill.stock import key

log = logging.getLogger("mall.seckill")

RESERVATION_NOT_FOUND = ErrorCode("RESERVATION_NOT_FOUND", 404, _("Reservation not found"))
SECKILL_ORDER_NOT_PAYABLE = ErrorCode(
    "SECKILL_ORDER_NOT_PAYABLE", 409, _("This reservation is {status} and cannot be paid")
)

LOST_NOT_ENOUGH_POINTS = "not_enough_points"
LOST_OVERSELL_GUARD = "oversell_guard"  # the database refused a unit Redis handed out


class _MemberGone(Exception):
    pass


class _Lost(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _persist(
    item_id: int, reservation_id: str, member_id: int, points: int, cash: int, won_at: datetime
) -> SeckillOrder:
    """Turn one win into an order, once. Points-priced wins spend the points in the same
    transaction; a member short of points gets a released order instead."""
    existing = await SeckillOrder.get_or_none(reservation_id=reservation_id)
    if existing is not None:
        return existing
    common: dict[str, Any] = {
        "reservation_id": reservation_id,
        "item_id": item_id,
        "member_id": member_id,
        "points_price": points,
        "cash_price_fen": cash,
        "won_at": won_at,
    }
    try:
        async with in_transaction():
            taken = await SeckillItem.filter(id=item_id, sold__lt=F("stock")).update(
                sold=F("sold") + 1
            )
            if not taken:
                raise _Lost(LOST_OVERSELL_GUARD)
            if points > 0:
                try:
                    await points_service.spend(
                        member_id,
                        points,
                        idempotency_key=f"seckill:{reservation_id}",
                        reason="seckill",
                        reference=f"seckill:{reservation_id}",
                    )
                except MallError as exc:
                    if exc.code != points_service.NOT_ENOUGH_POINTS.code:
                        raise
                    raise _Lost(LOST_NOT_ENOUGH_POINTS) from None
            if cash > 0:
                deadline = clock.now() + timedelta(seconds=get_settings().seckill_payment_seconds)
                return await SeckillOrder.create(
                    **common, status=OrderStatus.PENDING_PAYMENT, pay_deadline=deadline
                )
            return await SeckillOrder.create(**common, status=OrderStatus.CONFIRMED)
    except _Lost as lost:
        reason = lost.reason
    except IntegrityError:
        found = await SeckillOrder.get_or_none(reservation_id=reservation_id)
        if found is not None:
            return found
        try:
            await members_service.get_member(member_id)
        except MallError:
            raise _MemberGone() from None
        raise
    try:
        return await SeckillOrder.create(
            **common,
            status=OrderStatus.RELEASED,
            release_reason=reason,
            # the guard's unit never existed: nothing to give back
            stock_returned=reason == LOST_OVERSELL_GUARD,
        )
    except IntegrityError:
        return await SeckillOrder.get(reservation_id=reservation_id)


async def give_back(order: SeckillOrder) -> None:
    """Hand a released/expired order's unit back to the Redis stock (once per reservation)."""
    await stock.give_back_unit(order.item_id, order.reservation_id, order.member_id)
    await SeckillOrder.filter(id=order.id, stock_returned=False).update(stock_returned=True)
    order.stock_returned = True


# --- the stream consumer ------------------------------------------------------------


async def _handle_entry(item_id: int, fields: dict[str, str]) -> None:
    """Persist one stream entry (the caller acknowledges it after)."""
    if not fields:  # deleted from the stream while pending: nothing left to persist
        return
    try:
        order = await _persist(
            item_id,
            fields["rid"],
            int(fields["member"]),
            int(fields.get("points") or 0),
            int(fields.get("cash") or 0),
            datetime.fromtimestamp(int(fields["ts"]) / 1000, tz=UTC),
        )
    except _MemberGone:
        log.warning("seckill item %s: winner %s no longer exists", item_id, fields["member"])
        await stock.give_back_unit(item_id, fields["rid"], int(fields["member"]))
        return
    if order.status == OrderStatus.RELEASED and not order.stock_returned:
        await give_back(order)
    elif order.release_reason == LOST_OVERSELL_GUARD:
        log.error(
            "seckill item %s: Redis handed out a unit the database does not have "
            "(reservation %s); stock set to 0",
            item_id,
            order.reservation_id,
        )
        await get_redis().set(key(item_id, "stock"), 0, xx=True)


async def persist_batch(item_id: int, entries: list[kit.Entry]) -> list[str]:
    """The consumer's batch: each entry persisted on its own; an entry that fails is left
    pending (claimed again after the idle time; the reconciler shows it)."""
    done: list[str] = []
    for entry_id, fields in entries:
        try:
            await _handle_entry(item_id, fields)
        except Exception as exc:
            if jobs.unreachable(exc):
                raise  # Redis is down: end the pass, the runner backs off quietly
            log.exception("seckill item %s: entry %s not persisted", item_id, entry_id)
            continue
        done.append(entry_id)
    return done


CONSUMER = kit.StreamConsumer(
    stock.WINS,
    persist_batch,
    claim_idle_ms=lambda: get_settings().seckill_claim_idle_seconds * 1000,
    name="seckill item",
)


async def read_entries(
    item_id: int, consumer: str, *, count: int, claim_idle_ms: int
) -> list[kit.Entry]:
    """Entries for `consumer` (claimed idle ones first, then new ones); pending until
    the consumer acknowledges them."""
    return await stock.WINS.read(item_id, consumer, count=count, claim_idle_ms=claim_idle_ms)


async def process_pending_once(
    consumer: str = "local", *, count: int = 200, claim_idle_ms: int | None = None
) -> int:
    """One pass over every warm item's stream; returns how many entries were handled.
    Entries pending longer than `claim_idle_ms` on another (dead) consumer are claimed."""
    return await CONSUMER.process_once(consumer, count=count, claim_idle_ms=claim_idle_ms)


async def drain(consumer: str = "local", *, claim_idle_ms: int | None = None) -> int:
    """Run passes until the streams are empty (tests, drills)."""
    return await CONSUMER.drain(consumer, claim_idle_ms=claim_idle_ms)


# --- payment and expiry -------------------------------------------------------------


async def mark_paid(reservation_id: str) -> SeckillOrder:
    """Payment arrived (called by the payment flow): pending_payment -> paid, once."""
    changed = await SeckillOrder.filter(
        reservation_id=reservation_id, status=OrderStatus.PENDING_PAYMENT
    ).update(status=OrderStatus.PAID)
    order = await SeckillOrder.get_or_none(reservation_id=reservation_id)
    if order is None:
        raise RESERVATION_NOT_FOUND()
    if not changed and order.status != OrderStatus.PAID:
        raise SECKILL_ORDER_NOT_PAYABLE(status=order.status.value)
    return order


async def expire_unpaid(limit: int = 500) -> int:
    """Job: unpaid cash wins past their deadline go back to stock (a compare-and-set on
    the status, so a payment arriving at the same moment wins or loses cleanly). Also
    finishes give-backs a crash left undone."""
    due = await SeckillOrder.filter(
        status=OrderStatus.PENDING_PAYMENT, pay_deadline__lte=clock.now()
    ).limit(limit)
    expired = 0
    for order in due:
        async with in_transaction():
            changed = await SeckillOrder.filter(
                id=order.id, status=OrderStatus.PENDING_PAYMENT
            ).update(status=OrderStatus.EXPIRED, release_reason="unpaid")
            if changed:
                await SeckillItem.filter(id=order.item_id, sold__gt=0).update(sold=F("sold") - 1)
                if order.points_price > 0:
                    await points_service.reverse(
                        f"seckill:{order.reservation_id}",
                        idempotency_key=f"seckill:{order.reservation_id}:unpaid",
                        reason="seckill_unpaid",
                    )
        if changed:
            await give_back(order)
            expired += 1
    for order in await SeckillOrder.filter(status__in=stock.RETURNS, stock_returned=False).limit(
        limit
    ):
        await give_back(order)
    return expired
