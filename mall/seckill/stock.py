"""The flash-sale pool: an item's stock in Redis, on the hot-stock kit (mall.kit.stock).

Keys under the item's hash tag `{sk:ID}`: the kit's meta (window, limit, prices, the
closed flag, the session's fair-sale rules, initial), stock, buyers (units per member)
and returned (reservation ids given back); the attempt's own idem (Idempotency-Key ->
reservation), rl:<member> (rate limit), wins (the stream of wins, consumer group
`orders`), res (reservation -> member), booked (members with a live booking of the
session) and flagged (members ops flagged; a copy per item, so the attempt's one Lua
call reads it under the item's tag). `sk:active` lists the warm items whose streams the
consumer reads.

The reconciler proves, per item:

    redis stock + units held by orders + stream backlog + give-backs due == initial stock"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from tortoise.functions import Count

from mall.errors import ErrorCode
from mall.i18n import _
from mall.kit import stock as kit
from mall.kit.bulk import select_in
from mall.redis import get_redis
from mall.seckill.models import (
    HOLDING,
    MemberFlag,
    OrderStatus,
    SeckillBooking,
    SeckillItem,
    SeckillOrder,
    SeckillSession,
)
from mall.seckill.models import SessionStatus as SessionStatus

SECKILL_ITEM_NOT_FOUND = ErrorCode(
    "SECKILL_ITEM_NOT_FOUND", 404, _("This flash-sale item does not exist")
)

POOL = kit.Pool("sk", kit.PoolKeys)
GROUP = "orders"  # the consumer group on every item's win stream
ACTIVE_ITEMS = "sk:active"  # ids of warm items: the consumer reads their streams
WINS = kit.Stream(POOL, "wins", group=GROUP, active=ACTIVE_ITEMS)  # persisted by winners.py
RETURNS = (OrderStatus.RELEASED, OrderStatus.EXPIRED)  # orders whose unit goes back


def key(item_id: int, part: str) -> str:
    return POOL.key(item_id, part)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


# --- what this process remembers --------------------------------------------------

# Answers that need no Redis: item -> monotonic expiry.
sold_out_until: dict[int, float] = {}
unknown_until: dict[int, float] = {}


def forget_local_state() -> None:
    """Drop the in-process sold-out / unknown-item memory (tests, and after a give-back)."""
    sold_out_until.clear()
    unknown_until.clear()


# --- warm -----------------------------------------------------------------------------


async def warm(item: SeckillItem, session: SeckillSession) -> bool:
    """Load `item` into Redis; True on a cold warm. An item already warm keeps its stock
    and buyers (only window, prices, limit and the closed flag are refreshed). A cold warm
    counts stock and buyers from the database, the record of truth."""
    keys = POOL.keys(item.id)
    plan = kit.Warm(keys).terms(
        item=item.id,
        start=ms(session.starts_at),
        end=ms(session.ends_at),
        limit=item.per_member_limit,
        closed=1 if session.status == SessionStatus.CLOSED else 0,
        points=item.points_price,
        cash=item.cash_price_fen,
        rule_phone=1 if session.require_phone else 0,
        rule_joined=ms(session.joined_before) if session.joined_before else 0,
        rule_level=session.min_level,
        rule_flagged=1 if session.exclude_flagged else 0,
        rule_booking=1 if session.require_booking else 0,
    )
    redis = get_redis()
    was_cold = not await redis.exists(keys.meta)
    if was_cold:
        await load_fair_sets(item.id, session.id)
        fresh = await SeckillItem.get(id=item.id)
        held = (
            await SeckillOrder.filter(item_id=item.id, status__in=HOLDING)
            .annotate(n=Count("id"))
            .group_by("member_id")
            .values_list("member_id", "n")
        )
        # units of released/expired orders are already back in the database's count
        await SeckillOrder.filter(item_id=item.id, status__in=RETURNS, stock_returned=False).update(
            stock_returned=True
        )
        plan.initial(fresh.stock).stock(max(fresh.stock - fresh.sold, 0))
        plan.counts(keys.buyers, dict(held))
    await WINS.ensure_group(item.id)
    cold = await plan.run()
    await redis.sadd(ACTIVE_ITEMS, item.id)
    if was_cold:
        # again now the item is listed active: a booking or flag committed while this
        # warm read the database is in this reading or was written by its own writer
        await load_fair_sets(item.id, session.id)
    unknown_until.pop(item.id, None)
    sold_out_until.pop(item.id, None)
    return cold


async def warm_if_cold(item_id: int) -> None:
    """The attempt found the item cold: load it (once per process at a time); an item
    that does not exist is remembered for a few seconds."""

    async def load() -> None:
        item = await SeckillItem.get_or_none(id=item_id).select_related("session")
        if item is None:
            unknown_until[item_id] = time.monotonic() + 5.0
            raise SECKILL_ITEM_NOT_FOUND()
        await warm(item, item.session)

    await kit.warm_cold(POOL.keys(item_id), load)


async def rewarm_if_warm(item: SeckillItem, session: SeckillSession) -> None:
    if await get_redis().exists(key(item.id, "meta")):
        await warm(item, session)


async def drop(item_id: int) -> None:
    """Forget the item in Redis (a later attempt warms it again from the database)."""
    redis = get_redis()
    await redis.srem(ACTIVE_ITEMS, item_id)
    parts = ("meta", "stock", "buyers", "idem", "wins", "res", "returned", "booked", "flagged")
    await redis.delete(*[key(item_id, p) for p in parts])
    sold_out_until.pop(item_id, None)


# --- fair sales: who booked, who is flagged ------------------------------------------

_CHUNK = 5000


async def load_fair_sets(item_id: int, session_id: int) -> None:
    """Add the session's booked members and every flagged member to the item's sets
    (adds only: removals are written by unbook/unflag as they happen)."""
    booked: list[Any] = await SeckillBooking.filter(
        session_id=session_id, cancelled_at__isnull=True
    ).values_list("member_id", flat=True)
    flagged: list[Any] = await MemberFlag.all().values_list("member_id", flat=True)
    redis = get_redis()
    for part, members in (("booked", booked), ("flagged", flagged)):
        for start in range(0, len(members), _CHUNK):
            await redis.sadd(key(item_id, part), *members[start : start + _CHUNK])


async def active_item_ids() -> list[int]:
    return sorted(int(x) for x in await get_redis().smembers(ACTIVE_ITEMS))


async def mark_member(part: str, item_ids: list[int], member_id: int, *, on: bool) -> None:
    """Add (or remove) a member to the `booked`/`flagged` set of each warm item among
    `item_ids` (a cold one loads the database's state when it warms)."""
    if not item_ids:
        return
    redis = get_redis()
    active = set(await active_item_ids())
    async with redis.pipeline(transaction=False) as pipe:
        for item_id in item_ids:
            if item_id not in active:
                continue
            if on:
                pipe.sadd(key(item_id, part), member_id)
            else:
                pipe.srem(key(item_id, part), member_id)
        await pipe.execute()


# --- give back, live stock ----------------------------------------------------------


async def give_back_unit(item_id: int, reservation_id: str, member_id: int) -> None:
    """A released/expired reservation's unit back to the Redis stock, once."""
    keys = POOL.keys(item_id)
    await kit.give_back(keys, reservation_id, member=member_id, counters=[keys.buyers])
    sold_out_until.pop(item_id, None)


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


# --- reconciliation -------------------------------------------------------------------


@dataclass
class ItemCheck(kit.Balance):
    """An item's reconcile equation (the stream backlog is its in-flight units)."""

    item_id: int = 0
    title: str = ""

    @property
    def redis_stock(self) -> int | None:
        return self.redis

    @property
    def backlog(self) -> int:
        return self.in_flight


def _rid(entry: list[Any]) -> str:
    fields = entry[1] or []
    return str(dict(zip(fields[::2], fields[1::2], strict=True)).get("rid", ""))


async def check_item(item: SeckillItem) -> ItemCheck:
    """One reading: Redis (stock, initial, buyers, backlog at one instant) against the
    database."""
    keys = POOL.keys(item.id)
    raw_stock, meta, flat_buyers, entries = await kit.snapshot(
        [
            (keys.stock, "get"),
            (keys.meta, "hgetall"),
            (keys.buyers, "hgetall"),
            (keys("wins"), "xrange"),
        ]
    )
    raw_initial = dict(zip(meta[::2], meta[1::2], strict=True)).get("initial")
    rids = [_rid(e) for e in entries]
    # in chunks: with the worker down through a big sale the backlog can hold more
    # reservations than one statement's parameters (PostgreSQL: 32,767)
    persisted = {
        str(row[0])
        for row in await select_in(SeckillOrder, "reservation_id", rids, ["reservation_id"])
    }
    fresh = await SeckillItem.get(id=item.id)
    held = await SeckillOrder.filter(item_id=item.id, status__in=HOLDING).count()
    returns_due = await SeckillOrder.filter(
        item_id=item.id, status__in=RETURNS, stock_returned=False
    ).count()
    check = ItemCheck(
        name=f"item {item.id} {item.title!r}",
        initial=fresh.stock,
        redis=None if raw_stock is None else int(raw_stock),
        held=held,
        in_flight=sum(1 for r in rids if r not in persisted),
        returns_due=returns_due,
        names=("held", "backlog", "returns_due"),
        item_id=item.id,
        title=item.title,
    )
    if fresh.sold != held:
        check.found.append(f"database sold={fresh.sold} but {held} orders hold units")
    if fresh.sold > fresh.stock:
        check.found.append(f"OVERSOLD in the database: sold={fresh.sold} > stock")
    over = (
        await SeckillOrder.filter(item_id=item.id, status__in=HOLDING)
        .annotate(n=Count("id"))
        .group_by("member_id")
        .filter(n__gt=fresh.per_member_limit)
        .values_list("member_id", "n")
    )
    if over:
        check.found.append(f"{len(over)} members above the limit, e.g. {over[0]}")
    if check.redis is None:
        return check  # not warm: the database alone is the truth
    if raw_initial is not None and int(raw_initial) != fresh.stock:
        check.found.append(f"redis initial={raw_initial} but the database says {fresh.stock}")
    counts = [int(v) for v in flat_buyers[1::2]]
    units = held + check.in_flight + returns_due
    if sum(counts) != units:
        check.found.append(
            f"redis buyers count {sum(counts)} units, orders+backlog+returns {units}"
        )
    if counts and max(counts) > fresh.per_member_limit:
        check.found.append(f"a member holds {max(counts)} > limit in redis")
    return check


async def reconcile(item_ids: list[int] | None = None, *, repair: bool = False) -> list[ItemCheck]:
    """Check every warm item (or `item_ids`), each on a stable reading. `repair` (the
    periodic job): an item whose only problem is Redis stock off by the same drift as on
    the run before has its Redis stock moved by it."""
    if item_ids is None:
        item_ids = sorted(int(x) for x in await get_redis().smembers(ACTIVE_ITEMS))
    results = []
    for item in await SeckillItem.filter(id__in=item_ids).order_by("id"):
        check = await kit.balance(partial(check_item, item))
        if repair and not check.found and await kit.repair_persistent(POOL.keys(item.id), check):
            check = await kit.balance(partial(check_item, item))
        results.append(check)
    return results
