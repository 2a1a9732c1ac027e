"""Flash sales: sessions and items (ops), and what shoppers and ops read. A hot domain
reads as decision -> persistence -> ops:

- `stock.py`: the item's pool in Redis on the hot-stock kit (warm, give-back, live
  stock, the reconcile equation);
- `attempt.py`: the decision, one Lua call per attempt (`lua/attempt.lua`);
- `winners.py`: the stream consumer turning wins into orders, payment, expiry;
- this module: sessions, items and their stock, reads, and the names other domains and
  the routers use (the decision and persistence ones re-exported below).

The reconciler (`stock.reconcile`) proves, per item:

    redis stock + units held by orders + stream backlog + give-backs due == initial stock"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.audit.service import Actor
from mall.config import get_settings
from mall.errors import ErrorCode
from mall.i18n import _
from mall.kit import clock
from mall.kit import stock as kit
from mall.redis import get_redis
from mall.seckill import stock
from mall.seckill.attempt import ANSWER_MESSAGES as ANSWER_MESSAGES
from mall.seckill.attempt import Attempt as Attempt
from mall.seckill.attempt import answer_json as answer_json
from mall.seckill.attempt import attempt as attempt
from mall.seckill.attempt import item_of_reservation
from mall.seckill.models import (
    HOLDING,
    OrderStatus,
    SeckillItem,
    SeckillOrder,
    SeckillSession,
    SessionStatus,
)
from mall.seckill.schemas import (
    ItemIn,
    ItemOut,
    ItemPatch,
    ReservationOut,
    SaleRules,
    SessionIn,
    SessionOut,
    SessionPatch,
    SessionState,
)
from mall.seckill.stock import ACTIVE_ITEMS as ACTIVE_ITEMS
from mall.seckill.stock import GROUP as GROUP
from mall.seckill.stock import SECKILL_ITEM_NOT_FOUND as SECKILL_ITEM_NOT_FOUND
from mall.seckill.stock import ItemCheck as ItemCheck
from mall.seckill.stock import forget_local_state as forget_local_state
from mall.seckill.stock import key as key
from mall.seckill.stock import reconcile as reconcile
from mall.seckill.stock import stock_left as stock_left
from mall.seckill.winners import RESERVATION_NOT_FOUND
from mall.seckill.winners import SECKILL_ORDER_NOT_PAYABLE as SECKILL_ORDER_NOT_PAYABLE
from mall.seckill.winners import drain as drain
from mall.seckill.winners import expire_held as expire_held
from mall.seckill.winners import expire_unpaid as expire_unpaid
from mall.seckill.winners import give_back_if_due as give_back_if_due
from mall.seckill.winners import mark_paid as mark_paid
from mall.seckill.winners import process_pending_once as process_pending_once
from mall.seckill.winners import read_entries as read_entries
from mall.seckill.winners import refund_held as refund_held

log = logging.getLogger("mall.seckill")

SECKILL_SESSION_NOT_FOUND = ErrorCode(
    "SECKILL_SESSION_NOT_FOUND", 404, _("This flash sale does not exist")
)
SECKILL_WINDOW_INVALID = ErrorCode(
    "SECKILL_WINDOW_INVALID", 422, _("A flash sale must end after it starts")
)
SECKILL_SESSION_CLOSED = ErrorCode(
    "SECKILL_SESSION_CLOSED", 409, _("This flash sale is closed and can no longer be changed")
)
SECKILL_SESSION_HAS_WINNERS = ErrorCode(
    "SECKILL_SESSION_HAS_WINNERS",
    409,
    _("This flash sale already has winners; close it instead of deleting it"),
)
SECKILL_STOCK_BELOW_TAKEN = ErrorCode(
    "SECKILL_STOCK_BELOW_TAKEN",
    409,
    _("Stock cannot be lowered below the {taken} units already taken"),
)
SECKILL_STOCK_CHANGED = ErrorCode(
    "SECKILL_STOCK_CHANGED", 409, _("The stock was changed by someone else; reload and retry")
)


# --- warming --------------------------------------------------------------------------


async def warm_session(session_id: int, actor: Actor | None = None) -> list[int]:
    """Warm a session's items now (safe to repeat: stock already warm is kept)."""
    session = await get_session(session_id)
    items = await SeckillItem.filter(session_id=session.id).order_by("sort", "id")
    cold = [item.id for item in items if await stock.warm(item, session)]
    if actor is not None:
        await audit_service.record(
            actor,
            "seckill.session.warm",
            f"seckill_session:{session.id}",
            items=[i.id for i in items],
            cold=cold,
        )
    return [item.id for item in items]


async def warm_upcoming() -> int:
    """Job: warm every item of sessions starting within the warm-ahead horizon."""
    now = clock.now()
    horizon = now + timedelta(seconds=get_settings().seckill_warm_ahead_seconds)
    sessions = await SeckillSession.filter(
        status=SessionStatus.SCHEDULED, starts_at__lte=horizon, ends_at__gt=now
    )
    redis = get_redis()
    warmed = 0
    for session in sessions:
        for item in await SeckillItem.filter(session_id=session.id):
            if not await redis.exists(key(item.id, "meta")):
                await stock.warm(item, session)
                warmed += 1
    return warmed


# --- shopper reads ------------------------------------------------------------------


async def reservation(member_id: int, reservation_id: str) -> ReservationOut:
    """A member's own win: pending until the consumer persists it, then the order's status."""
    order = await SeckillOrder.get_or_none(reservation_id=reservation_id)
    if order is not None:
        if order.member_id != member_id:
            raise RESERVATION_NOT_FOUND()
        return ReservationOut(
            reservation_id=order.reservation_id,
            item_id=order.item_id,
            status=order.status.value,
            points_price=order.points_price,
            cash_price_fen=order.cash_price_fen,
            pay_deadline=order.pay_deadline,
            release_reason=order.release_reason or None,
            order_id=order.mall_order_id,
        )
    item_id = item_of_reservation(reservation_id)
    if item_id is None:
        raise RESERVATION_NOT_FOUND()
    owner = await get_redis().hget(key(item_id, "res"), reservation_id)
    if owner is None or int(owner) != member_id:
        raise RESERVATION_NOT_FOUND()
    return ReservationOut(reservation_id=reservation_id, item_id=item_id, status="pending")


def session_state(session: SeckillSession, now: datetime | None = None) -> SessionState:
    now = now or clock.now()
    if session.status == SessionStatus.CLOSED:
        return "closed"
    if now < session.starts_at:
        return "upcoming"
    if now >= session.ends_at:
        return "ended"
    return "live"


def rules_of(session: SeckillSession) -> SaleRules:
    return SaleRules(
        require_phone=session.require_phone,
        joined_before=session.joined_before,
        min_level=session.min_level,
        exclude_flagged=session.exclude_flagged,
        require_booking=session.require_booking,
    )


def item_out(item: SeckillItem, left: int) -> ItemOut:
    return ItemOut(
        id=item.id,
        title=item.title,
        product_id=item.product_id,
        image_url=item.image_url,
        points_price=item.points_price,
        cash_price_fen=item.cash_price_fen,
        stock=item.stock,
        stock_left=left,
        per_member_limit=item.per_member_limit,
    )


async def _sessions_out(sessions: list[SeckillSession]) -> list[SessionOut]:
    items = await SeckillItem.filter(session_id__in=[s.id for s in sessions]).order_by("sort", "id")
    left = await stock.stock_left(items)
    now = clock.now()
    return [
        SessionOut(
            id=s.id,
            name=s.name,
            starts_at=s.starts_at,
            ends_at=s.ends_at,
            state=session_state(s, now),
            rules=rules_of(s),
            items=[item_out(i, left[i.id]) for i in items if i.session_id == s.id],
        )
        for s in sessions
    ]


async def open_sessions() -> list[SessionOut]:
    """Current and upcoming sessions (not closed) with their items and live stock."""
    sessions = (
        await SeckillSession.filter(status=SessionStatus.SCHEDULED, ends_at__gt=clock.now())
        .order_by("starts_at", "id")
        .limit(50)
    )
    return await _sessions_out(list(sessions))


# --- ops ----------------------------------------------------------------------------


async def get_session(session_id: int) -> SeckillSession:
    session = await SeckillSession.get_or_none(id=session_id)
    if session is None:
        raise SECKILL_SESSION_NOT_FOUND()
    return session


async def get_item(item_id: int) -> SeckillItem:
    item = await SeckillItem.get_or_none(id=item_id).select_related("session")
    if item is None:
        raise SECKILL_ITEM_NOT_FOUND()
    return item


def _check_window(starts_at: datetime, ends_at: datetime) -> None:
    if ends_at <= starts_at:
        raise SECKILL_WINDOW_INVALID()


async def create_session(body: SessionIn, actor: Actor | None) -> SeckillSession:
    _check_window(body.starts_at, body.ends_at)
    async with in_transaction():
        session = await SeckillSession.create(
            name=body.name,
            starts_at=body.starts_at,
            ends_at=body.ends_at,
            **body.rules.model_dump(),
        )
        for index, item in enumerate(body.items):
            await SeckillItem.create(session_id=session.id, sort=index, **item.model_dump())
        await audit_service.record(
            actor,
            "seckill.session.create",
            f"seckill_session:{session.id}",
            name=session.name,
            items=len(body.items),
            stock=sum(i.stock for i in body.items),
            rules=body.rules.model_dump(mode="json"),
        )
    return session


async def update_session(session_id: int, body: SessionPatch, actor: Actor | None) -> None:
    session = await get_session(session_id)
    if session.status == SessionStatus.CLOSED:
        raise SECKILL_SESSION_CLOSED()
    changes = body.model_dump(exclude_unset=True, exclude_none=True, exclude={"rules"})
    if body.rules is not None:
        changes.update(body.rules.model_dump())
    starts = changes.get("starts_at", session.starts_at)
    ends = changes.get("ends_at", session.ends_at)
    _check_window(starts, ends)
    async with in_transaction():
        await SeckillSession.filter(id=session.id).update(**changes)
        await audit_service.record(
            actor, "seckill.session.update", f"seckill_session:{session.id}", **changes
        )
    await session.refresh_from_db()
    for item in await SeckillItem.filter(session_id=session.id):
        await stock.rewarm_if_warm(item, session)


async def add_item(session_id: int, body: ItemIn, actor: Actor | None) -> SeckillItem:
    session = await get_session(session_id)
    if session.status == SessionStatus.CLOSED:
        raise SECKILL_SESSION_CLOSED()
    async with in_transaction():
        count = await SeckillItem.filter(session_id=session.id).count()
        item = await SeckillItem.create(session_id=session.id, sort=count, **body.model_dump())
        await audit_service.record(
            actor, "seckill.item.create", f"seckill_item:{item.id}", **body.model_dump()
        )
    return item


async def update_item(item_id: int, body: ItemPatch, actor: Actor | None) -> SeckillItem:
    """Edit an item. A stock change moves the database and a warm Redis stock by the same
    delta, by the kit's rule (a decrease in Redis first, an increase after the commit);
    it is refused when it would take back units already won."""
    item = await get_item(item_id)
    if item.session.status == SessionStatus.CLOSED:
        raise SECKILL_SESSION_CLOSED()
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    new_stock = changes.pop("stock", None)
    if new_stock == item.stock:
        new_stock = None

    async def commit() -> None:
        async with in_transaction():
            if changes:
                await SeckillItem.filter(id=item.id).update(**changes)
            if new_stock is not None:
                moved = await SeckillItem.filter(
                    id=item.id, stock=item.stock, sold__lte=new_stock
                ).update(stock=new_stock)
                if not moved:
                    fresh = await SeckillItem.get(id=item.id)
                    if fresh.stock != item.stock:
                        raise SECKILL_STOCK_CHANGED()
                    raise SECKILL_STOCK_BELOW_TAKEN(taken=fresh.sold)
                changes["stock"] = new_stock
            await audit_service.record(
                actor,
                "seckill.item.update",
                f"seckill_item:{item.id}",
                old_stock=item.stock,
                **changes,
            )

    if new_stock is None:
        await commit()
    else:
        await kit.adjust(
            stock.POOL.keys(item.id),
            new_stock - item.stock,
            commit,
            # Redis has handed out more than the database knows yet
            refused=lambda left: SECKILL_STOCK_BELOW_TAKEN(taken=item.stock - left),
        )
    item = await get_item(item_id)
    stock.sold_out_until.pop(item.id, None)
    await stock.rewarm_if_warm(item, item.session)
    return item


async def close_session(session_id: int, actor: Actor | None) -> SeckillSession:
    """Close a session early: attempts answer `ended` from now on; wins stand."""
    session = await get_session(session_id)
    async with in_transaction():
        changed = await SeckillSession.filter(id=session.id, status=SessionStatus.SCHEDULED).update(
            status=SessionStatus.CLOSED, closed_at=clock.now()
        )
        if changed:
            await audit_service.record(
                actor, "seckill.session.close", f"seckill_session:{session.id}", name=session.name
            )
    await session.refresh_from_db()
    for item in await SeckillItem.filter(session_id=session.id):
        await stock.warm(item, session)
    return session


async def delete_session(session_id: int, actor: Actor | None) -> None:
    """Delete a session nobody has won anything in (otherwise close it)."""
    session = await get_session(session_id)
    items = await SeckillItem.filter(session_id=session.id)
    redis = get_redis()
    for item in items:  # stop new wins first, then look for any
        if await redis.exists(key(item.id, "meta")):
            await redis.hset(key(item.id, "meta"), "closed", "1")
    backlog = 0
    for item in items:
        backlog += int(await redis.xlen(key(item.id, "wins")))
    if backlog or await SeckillOrder.filter(item_id__in=[i.id for i in items]).exists():
        for item in items:
            await stock.rewarm_if_warm(item, session)
        raise SECKILL_SESSION_HAS_WINNERS()
    async with in_transaction():
        await SeckillItem.filter(session_id=session.id).delete()
        await SeckillSession.filter(id=session.id).delete()
        await audit_service.record(
            actor, "seckill.session.delete", f"seckill_session:{session.id}", name=session.name
        )
    for item in items:
        await stock.drop(item.id)


async def retire_ended(limit: int = 100) -> int:
    """Job: drop the Redis keys of items whose session ended long ago and whose stream is
    empty (a later attempt warms them again from the database and answers `ended`)."""
    cutoff = clock.now() - timedelta(seconds=get_settings().seckill_retire_after_seconds)
    redis = get_redis()
    retired = 0
    for raw in list(await redis.smembers(ACTIVE_ITEMS))[:limit]:
        item = await SeckillItem.get_or_none(id=int(raw)).select_related("session")
        if item is None:
            await stock.drop(int(raw))
            continue
        if item.session.ends_at > cutoff or await redis.xlen(key(item.id, "wins")):
            continue
        if await SeckillOrder.filter(
            item_id=item.id,
            status__in=(OrderStatus.RELEASED, OrderStatus.EXPIRED),
            stock_returned=False,
        ).exists():
            continue
        await stock.drop(item.id)
        retired += 1
    return retired


@dataclass
class ItemView:
    item: SeckillItem
    stock_left: int
    warm: bool
    held: int
    backlog: int


async def session_items_live(session_id: int) -> tuple[SeckillSession, list[ItemView]]:
    session = await get_session(session_id)
    items = await SeckillItem.filter(session_id=session.id).order_by("sort", "id")
    left = await stock.stock_left(list(items))
    redis = get_redis()
    views = []
    for item in items:
        held = await SeckillOrder.filter(item_id=item.id, status__in=HOLDING).count()
        views.append(
            ItemView(
                item=item,
                stock_left=left[item.id],
                warm=bool(await redis.exists(key(item.id, "meta"))),
                held=held,
                backlog=int(await redis.xlen(key(item.id, "wins"))),
            )
        )
    return session, views


async def list_sessions(limit: int = 50) -> list[SeckillSession]:
    return list(await SeckillSession.all().order_by("-starts_at", "-id").limit(limit))
