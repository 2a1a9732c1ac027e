"""Flash sales. The attempt is decided by one Lua call on keys hash-tagged per item
(`{sk:ID}:...`); a win is appended to the item's stream in the same atomic step and a
consumer group turns it into a `SeckillOrder` (idempotent by reservation id). Losers
never touch the database. The reconciler proves, per item:

    redis stock + units held by orders + stream backlog + give-backs due == initial stock

Time: the attempt window is checked against `kit.clock` passed into the Lua (ARGV), not
Redis TIME, so tests can move time; app hosts must keep NTP-synced clocks."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from redis.exceptions import ResponseError
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.functions import Count
from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.audit.service import Actor
from mall.config import get_settings
from mall.errors import ErrorCode, MallError
from mall.i18n import _, get_locale, translate
from mall.kit import clock, jobs
from mall.members import service as members_service
from mall.points import service as points_service
from mall.redis import auto_pipeline, get_redis, script
from mall.seckill.models import (
    HOLDING,
    OrderStatus,
    SeckillItem,
    SeckillOrder,
    SeckillSession,
    SessionStatus,
)
from mall.seckill.schemas import (
    AttemptOut,
    AttemptResult,
    ItemIn,
    ItemOut,
    ItemPatch,
    ReservationOut,
    SessionIn,
    SessionOut,
    SessionPatch,
    SessionState,
)

log = logging.getLogger("mall.seckill")

SECKILL_SESSION_NOT_FOUND = ErrorCode(
    "SECKILL_SESSION_NOT_FOUND", 404, _("This flash sale does not exist")
)
SECKILL_ITEM_NOT_FOUND = ErrorCode(
    "SECKILL_ITEM_NOT_FOUND", 404, _("This flash-sale item does not exist")
)
RESERVATION_NOT_FOUND = ErrorCode("RESERVATION_NOT_FOUND", 404, _("Reservation not found"))
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
SECKILL_ORDER_NOT_PAYABLE = ErrorCode(
    "SECKILL_ORDER_NOT_PAYABLE", 409, _("This reservation is {status} and cannot be paid")
)

# What the member is told for each answer of an attempt.
ANSWER_MESSAGES = {
    "won": _("You got it! Your order is being confirmed"),
    "sold_out": _("Sold out"),
    "limit_reached": _("You have reached the limit for this item"),
    "not_started": _("This flash sale has not started yet"),
    "ended": _("This flash sale has ended"),
    "rate_limited": _("Too many taps; please try again in a moment"),
}

GROUP = "orders"  # the consumer group on every item's win stream
ACTIVE_ITEMS = "sk:active"  # ids of warm items: the consumer reads their streams
LOST_NOT_ENOUGH_POINTS = "not_enough_points"
LOST_OVERSELL_GUARD = "oversell_guard"  # the database refused a unit Redis handed out


def key(item_id: int, part: str) -> str:
    return f"{{sk:{item_id}}}:{part}"


def _now_ms() -> int:
    return int(clock.now().timestamp() * 1000)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def item_of_reservation(reservation_id: str) -> int | None:
    head, sep, _tail = reservation_id.partition("-")
    if not sep or not head.isdigit() or len(head) > 18:
        return None
    return int(head)


# --- the attempt --------------------------------------------------------------------

# In-process memory of answers that need no Redis: item -> monotonic expiry.
_sold_out_until: dict[int, float] = {}
_unknown_until: dict[int, float] = {}
_warm_locks: dict[int, asyncio.Lock] = {}


def forget_local_state() -> None:
    """Drop the in-process sold-out / unknown-item memory (tests, and after a give-back)."""
    _sold_out_until.clear()
    _unknown_until.clear()


@dataclass(frozen=True)
class Attempt:
    result: AttemptResult
    reservation_id: str | None = None
    retry_after_ms: int | None = None

    def out(self) -> AttemptOut:
        return AttemptOut(
            result=self.result,
            reservation_id=self.reservation_id,
            retry_after_ms=self.retry_after_ms,
            message=translate(ANSWER_MESSAGES[self.result]),
        )


SOLD_OUT = Attempt("sold_out")

_answer_cache: dict[tuple[str, str], bytes] = {}


def answer_json(answer: Attempt) -> bytes:
    """The answer as JSON; answers without a reservation are cached per locale."""
    if answer.reservation_id is None and answer.retry_after_ms is None:
        cache_key = (answer.result, get_locale())
        body = _answer_cache.get(cache_key)
        if body is None:
            body = answer.out().model_dump_json().encode()
            _answer_cache[cache_key] = body
        return body
    return answer.out().model_dump_json().encode()


async def attempt(item_id: int, member_id: int, idempotency_key: str | None = None) -> Attempt:
    """Try to win one unit. Exactly one Lua call decides; a sold-out item remembered in
    this process is answered without Redis (or with one HGET to replay a keyed win)."""
    idem = f"{member_id}:{idempotency_key}" if idempotency_key else ""
    until = _sold_out_until.get(item_id)
    if until is not None:
        if until > time.monotonic():
            if idem:
                prior = await get_redis().hget(key(item_id, "idem"), idem)
                if prior:
                    return Attempt("won", str(prior))
            return SOLD_OUT
        _sold_out_until.pop(item_id, None)
    unknown = _unknown_until.get(item_id)
    if unknown is not None and unknown > time.monotonic():
        raise SECKILL_ITEM_NOT_FOUND()

    settings = get_settings()
    keys = [
        key(item_id, "meta"),
        key(item_id, "stock"),
        key(item_id, "buyers"),
        key(item_id, "idem"),
        key(item_id, f"rl:{member_id}"),
        key(item_id, "wins"),
        key(item_id, "res"),
    ]
    args: list[Any] = [
        member_id,
        idem,
        _now_ms(),
        f"{item_id}-{secrets.token_hex(8)}",
        settings.seckill_attempts_per_window,
        settings.seckill_attempt_window_ms,
    ]
    run = script("mall.seckill", "attempt")
    pipeline = auto_pipeline()
    answer, detail = await pipeline.run(run, keys, args)
    if answer == "not_warm":
        await _lazy_warm(item_id)
        answer, detail = await pipeline.run(run, keys, args)
    if answer == "won":
        return Attempt("won", detail)
    if answer == "sold_out":
        _sold_out_until[item_id] = time.monotonic() + settings.seckill_sold_out_cache_seconds
        return SOLD_OUT
    if answer == "rate_limited":
        return Attempt("rate_limited", retry_after_ms=max(int(detail), 1))
    if answer in ANSWER_MESSAGES:
        return Attempt(cast(AttemptResult, answer))
    raise RuntimeError(f"seckill attempt script answered {answer!r}")


async def _lazy_warm(item_id: int) -> None:
    lock = _warm_locks.setdefault(item_id, asyncio.Lock())
    async with lock:
        if await get_redis().exists(key(item_id, "stock")):
            return
        item = await SeckillItem.get_or_none(id=item_id).select_related("session")
        if item is None:
            _unknown_until[item_id] = time.monotonic() + 5.0
            raise SECKILL_ITEM_NOT_FOUND()
        await _warm(item, item.session)


# --- warming ------------------------------------------------------------------------


async def _warm(item: SeckillItem, session: SeckillSession) -> bool:
    """Load `item` into Redis; True on a cold warm. An item already warm keeps its stock
    and buyers (only window, prices, limit and the closed flag are refreshed). A cold warm
    counts stock and buyers from the database, the record of truth."""
    redis = get_redis()
    args: list[Any] = [
        item.id,
        _ms(session.starts_at),
        _ms(session.ends_at),
        item.per_member_limit,
        1 if session.status == SessionStatus.CLOSED else 0,
        item.points_price,
        item.cash_price_fen,
        item.stock,
    ]
    if await redis.exists(key(item.id, "stock")):
        args.append(0)
    else:
        fresh = await SeckillItem.get(id=item.id)
        held = (
            await SeckillOrder.filter(item_id=item.id, status__in=HOLDING)
            .annotate(n=Count("id"))
            .group_by("member_id")
            .values_list("member_id", "n")
        )
        # units of released/expired orders are already back in the database's count
        await SeckillOrder.filter(
            item_id=item.id,
            status__in=(OrderStatus.RELEASED, OrderStatus.EXPIRED),
            stock_returned=False,
        ).update(stock_returned=True)
        args.append(max(fresh.stock - fresh.sold, 0))
        for member_id, n in held:
            args.extend([member_id, n])
    try:
        await redis.xgroup_create(key(item.id, "wins"), GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    cold = await script("mall.seckill", "warm")(
        keys=[key(item.id, "meta"), key(item.id, "stock"), key(item.id, "buyers")], args=args
    )
    await redis.sadd(ACTIVE_ITEMS, item.id)
    _unknown_until.pop(item.id, None)
    _sold_out_until.pop(item.id, None)
    return bool(cold)


async def warm_session(session_id: int, actor: Actor | None = None) -> list[int]:
    """Warm a session's items now (safe to repeat: stock already warm is kept)."""
    session = await get_session(session_id)
    items = await SeckillItem.filter(session_id=session.id).order_by("sort", "id")
    cold = [item.id for item in items if await _warm(item, session)]
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
                await _warm(item, session)
                warmed += 1
    return warmed


# --- winners: stream -> orders ------------------------------------------------------


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


async def _give_back_unit(item_id: int, reservation_id: str, member_id: int) -> None:
    await script("mall.seckill", "give_back")(
        keys=[
            key(item_id, "meta"),
            key(item_id, "stock"),
            key(item_id, "buyers"),
            key(item_id, "returned"),
        ],
        args=[reservation_id, member_id],
    )
    _sold_out_until.pop(item_id, None)


async def give_back(order: SeckillOrder) -> None:
    """Hand a released/expired order's unit back to the Redis stock (once per reservation)."""
    await _give_back_unit(order.item_id, order.reservation_id, order.member_id)
    await SeckillOrder.filter(id=order.id, stock_returned=False).update(stock_returned=True)
    order.stock_returned = True


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
        await _give_back_unit(item_id, fields["rid"], int(fields["member"]))
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


async def _acknowledge(item_id: int, entry_ids: list[str]) -> None:
    """After the commit: acknowledge and drop, so the stream holds only the backlog."""
    if not entry_ids:
        return
    wins = key(item_id, "wins")
    async with get_redis().pipeline(transaction=True) as pipe:
        pipe.xack(wins, GROUP, *entry_ids)
        pipe.xdel(wins, *entry_ids)
        await pipe.execute()


async def _ensure_group(item_id: int) -> None:
    try:
        await get_redis().xgroup_create(key(item_id, "wins"), GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def read_entries(
    item_id: int, consumer: str, *, count: int, claim_idle_ms: int
) -> list[tuple[str, dict[str, str]]]:
    """Entries for `consumer`: first those idle too long on another consumer (claimed),
    then new ones. They stay pending until `_handle_entry` acknowledges them."""
    redis = get_redis()
    wins = key(item_id, "wins")
    try:
        claimed: Any = await redis.xautoclaim(
            wins, GROUP, consumer, min_idle_time=claim_idle_ms, start_id="0-0", count=count
        )
    except ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        await _ensure_group(item_id)
        return []
    entries: list[tuple[str, dict[str, str]]] = [
        (entry_id, fields or {}) for entry_id, fields in claimed[1]
    ]
    room = count - len(entries)
    if room > 0:
        fresh: Any = await redis.xreadgroup(GROUP, consumer, {wins: ">"}, count=room)
        for _stream, stream_entries in fresh or []:
            entries.extend((entry_id, fields or {}) for entry_id, fields in stream_entries)
    return entries


async def process_pending_once(
    consumer: str = "local", *, count: int = 200, claim_idle_ms: int | None = None
) -> int:
    """One pass over every warm item's stream; returns how many entries were handled.
    Entries pending longer than `claim_idle_ms` on another (dead) consumer are claimed."""
    if claim_idle_ms is None:
        claim_idle_ms = get_settings().seckill_claim_idle_seconds * 1000
    handled = 0
    for raw in sorted(await get_redis().smembers(ACTIVE_ITEMS), key=int):
        item_id = int(raw)
        entries = await read_entries(item_id, consumer, count=count, claim_idle_ms=claim_idle_ms)
        done: list[str] = []
        try:
            for entry_id, fields in entries:
                try:
                    await _handle_entry(item_id, fields)
                except Exception as exc:
                    if jobs.unreachable(exc):
                        raise  # Redis is down: end the pass, the runner backs off quietly
                    # left pending: claimed again after the idle time; the reconciler shows it
                    log.exception("seckill item %s: entry %s not persisted", item_id, entry_id)
                    continue
                done.append(entry_id)
        finally:
            await asyncio.shield(_acknowledge(item_id, done))
        handled += len(done)
    return handled


async def drain(consumer: str = "local", *, claim_idle_ms: int | None = None) -> int:
    """Run passes until the streams are empty (tests, drills)."""
    total = 0
    while n := await process_pending_once(consumer, claim_idle_ms=claim_idle_ms):
        total += n
    return total


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
    for order in await SeckillOrder.filter(
        status__in=(OrderStatus.RELEASED, OrderStatus.EXPIRED), stock_returned=False
    ).limit(limit):
        await give_back(order)
    return expired


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


async def stock_left(items: list[SeckillItem]) -> dict[int, int]:
    """Live stock from Redis; items not warm yet show the database's count."""
    if not items:
        return {}
    async with get_redis().pipeline(transaction=False) as pipe:
        for item in items:
            pipe.get(key(item.id, "stock"))
        values = await pipe.execute()
    return {
        item.id: max(int(v), 0) if v is not None else max(item.stock - item.sold, 0)
        for item, v in zip(items, values, strict=True)
    }


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
    left = await stock_left(items)
    now = clock.now()
    return [
        SessionOut(
            id=s.id,
            name=s.name,
            starts_at=s.starts_at,
            ends_at=s.ends_at,
            state=session_state(s, now),
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
            name=body.name, starts_at=body.starts_at, ends_at=body.ends_at
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
        )
    return session


async def _rewarm_if_warm(item: SeckillItem, session: SeckillSession) -> None:
    if await get_redis().exists(key(item.id, "meta")):
        await _warm(item, session)


async def update_session(session_id: int, body: SessionPatch, actor: Actor | None) -> None:
    session = await get_session(session_id)
    if session.status == SessionStatus.CLOSED:
        raise SECKILL_SESSION_CLOSED()
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
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
        await _rewarm_if_warm(item, session)


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
    delta; it is refused when it would take back units already won."""
    item = await get_item(item_id)
    if item.session.status == SessionStatus.CLOSED:
        raise SECKILL_SESSION_CLOSED()
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    new_stock = changes.pop("stock", None)
    async with in_transaction():
        if changes:
            await SeckillItem.filter(id=item.id).update(**changes)
        if new_stock is not None and new_stock != item.stock:
            moved = await SeckillItem.filter(
                id=item.id, stock=item.stock, sold__lte=new_stock
            ).update(stock=new_stock)
            if not moved:
                fresh = await SeckillItem.get(id=item.id)
                if fresh.stock != item.stock:
                    raise SECKILL_STOCK_CHANGED()
                raise SECKILL_STOCK_BELOW_TAKEN(taken=fresh.sold)
            done, left = await script("mall.seckill", "adjust_stock")(
                keys=[key(item.id, "meta"), key(item.id, "stock")], args=[new_stock - item.stock]
            )
            if int(done) == 0:  # Redis has handed out more than the database knows yet
                raise SECKILL_STOCK_BELOW_TAKEN(taken=item.stock - int(left))
            changes["stock"] = new_stock
        await audit_service.record(
            actor, "seckill.item.update", f"seckill_item:{item.id}", old_stock=item.stock, **changes
        )
    item = await get_item(item_id)
    _sold_out_until.pop(item.id, None)
    await _rewarm_if_warm(item, item.session)
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
        await _warm(item, session)
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
            await _rewarm_if_warm(item, session)
        raise SECKILL_SESSION_HAS_WINNERS()
    async with in_transaction():
        await SeckillItem.filter(session_id=session.id).delete()
        await SeckillSession.filter(id=session.id).delete()
        await audit_service.record(
            actor, "seckill.session.delete", f"seckill_session:{session.id}", name=session.name
        )
    for item in items:
        await _drop_keys(item.id)


async def _drop_keys(item_id: int) -> None:
    redis = get_redis()
    await redis.srem(ACTIVE_ITEMS, item_id)
    parts = ("meta", "stock", "buyers", "idem", "wins", "res", "returned")
    await redis.delete(*[key(item_id, p) for p in parts])
    _sold_out_until.pop(item_id, None)


async def retire_ended(limit: int = 100) -> int:
    """Job: drop the Redis keys of items whose session ended long ago and whose stream is
    empty (a later attempt warms them again from the database and answers `ended`)."""
    cutoff = clock.now() - timedelta(seconds=get_settings().seckill_retire_after_seconds)
    redis = get_redis()
    retired = 0
    for raw in list(await redis.smembers(ACTIVE_ITEMS))[:limit]:
        item = await SeckillItem.get_or_none(id=int(raw)).select_related("session")
        if item is None:
            await _drop_keys(int(raw))
            continue
        if item.session.ends_at > cutoff or await redis.xlen(key(item.id, "wins")):
            continue
        if await SeckillOrder.filter(
            item_id=item.id,
            status__in=(OrderStatus.RELEASED, OrderStatus.EXPIRED),
            stock_returned=False,
        ).exists():
            continue
        await _drop_keys(item.id)
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
    left = await stock_left(list(items))
    redis = get_redis()
    views = []
    for item in items:
        held = await SeckillOrder.filter(item_id=item.id, status__in=HOLDING).count()
        views.append(
            ItemView(
                item=item,
                stock_left=left[item.id],
                warm=bool(await redis.exists(key(item.id, "stock"))),
                held=held,
                backlog=int(await redis.xlen(key(item.id, "wins"))),
            )
        )
    return session, views


async def list_sessions(limit: int = 50) -> list[SeckillSession]:
    return list(await SeckillSession.all().order_by("-starts_at", "-id").limit(limit))


# --- reconciliation -----------------------------------------------------------------


@dataclass
class ItemCheck:
    item_id: int
    title: str
    initial: int
    redis_stock: int | None
    held: int
    backlog: int
    returns_due: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        figures = (
            f"item {self.item_id} {self.title!r}: initial={self.initial} "
            f"redis_stock={self.redis_stock} held={self.held} backlog={self.backlog} "
            f"returns_due={self.returns_due}"
        )
        return figures + (" OK" if self.ok else " -> " + "; ".join(self.problems))


async def check_item(item: SeckillItem) -> ItemCheck:
    """One item: Redis (stock, buyers, backlog read atomically) against the database."""
    snap = await script("mall.seckill", "snapshot")(
        keys=[
            key(item.id, "meta"),
            key(item.id, "stock"),
            key(item.id, "buyers"),
            key(item.id, "wins"),
        ]
    )
    raw_stock, raw_initial, flat_buyers, entries = snap
    rids = [dict(zip(e[1][::2], e[1][1::2], strict=True)).get("rid", "") for e in entries]
    persisted = set(
        await SeckillOrder.filter(reservation_id__in=rids).values_list("reservation_id", flat=True)
    )
    fresh = await SeckillItem.get(id=item.id)
    held = await SeckillOrder.filter(item_id=item.id, status__in=HOLDING).count()
    returns_due = await SeckillOrder.filter(
        item_id=item.id,
        status__in=(OrderStatus.RELEASED, OrderStatus.EXPIRED),
        stock_returned=False,
    ).count()
    check = ItemCheck(
        item_id=item.id,
        title=item.title,
        initial=fresh.stock,
        redis_stock=None if raw_stock is None else int(raw_stock),
        held=held,
        backlog=sum(1 for r in rids if r not in persisted),
        returns_due=returns_due,
    )
    if fresh.sold != held:
        check.problems.append(f"database sold={fresh.sold} but {held} orders hold units")
    if fresh.sold > fresh.stock:
        check.problems.append(f"OVERSOLD in the database: sold={fresh.sold} > stock")
    over = (
        await SeckillOrder.filter(item_id=item.id, status__in=HOLDING)
        .annotate(n=Count("id"))
        .group_by("member_id")
        .filter(n__gt=fresh.per_member_limit)
        .values_list("member_id", "n")
    )
    if over:
        check.problems.append(f"{len(over)} members above the limit, e.g. {over[0]}")
    if check.redis_stock is None:
        return check  # not warm: the database alone is the truth
    if raw_initial is not None and int(raw_initial) != fresh.stock:
        check.problems.append(f"redis initial={raw_initial} but the database says {fresh.stock}")
    if check.redis_stock < 0:
        check.problems.append("redis stock below zero")
    total = check.redis_stock + held + check.backlog + returns_due
    if total != fresh.stock:
        check.problems.append(f"stock+held+backlog+returns_due={total} != {fresh.stock}")
    counts = [int(v) for v in flat_buyers[1::2]]
    if sum(counts) != held + check.backlog + returns_due:
        check.problems.append(
            f"redis buyers count {sum(counts)} units, orders+backlog+returns "
            f"{held + check.backlog + returns_due}"
        )
    if counts and max(counts) > fresh.per_member_limit:
        check.problems.append(f"a member holds {max(counts)} > limit in redis")
    return check


async def reconcile(item_ids: list[int] | None = None, retries: int = 3) -> list[ItemCheck]:
    """Check every warm item (or `item_ids`). A live sale moves between the reads, so a
    mismatch is re-read a few times before it is reported."""
    if item_ids is None:
        item_ids = sorted(int(x) for x in await get_redis().smembers(ACTIVE_ITEMS))
    results = []
    for item in await SeckillItem.filter(id__in=item_ids).order_by("id"):
        check = await check_item(item)
        for _retry in range(retries - 1):
            if check.ok:
                break
            await asyncio.sleep(0.2)
            check = await check_item(item)
        results.append(check)
    return results
