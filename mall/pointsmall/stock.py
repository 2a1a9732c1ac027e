"""The points-mall pool: an item's stock in Redis, on the hot-stock kit (mall.kit.stock).

Keys under the item's hash tag `{pm:ID}`: the kit's meta (`initial`: the item's total
stock, and the terms the decision checks: status, shelf window, price, limits), stock,
buyers (units per member) and returned (reservation ids given back), and the
redemption's own: wins (the stream of decided redemptions, consumer group
`redemptions`), res (pending reservation -> "member|qty|points|ts|period key"),
idem:<member>:<key digest> (an Idempotency-Key's answer) and p:<label> (units per
member in a limit period, e.g. p:m202405). `pm:active` lists the warm items whose
streams the consumer reads.

A redemption's units are taken by the decision (`lua/reserve.lua`) and stay pending in
`res` until the consumer (`persist.py`) writes it; one the database refuses is
released and its units go back once (`lua/release.lua`). The reconciler proves, per item:

    redis stock + units redeemed + units pending == total stock
    database stock == total stock - units redeemed"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache, partial
from typing import Any

from tortoise.functions import Sum

from mall.kit import clock
from mall.kit import stock as kit
from mall.kit.bulk import select_in
from mall.pointsmall.models import ACTIVE_STATUSES, PointsMallItem, PointsMallRedemption
from mall.redis import get_redis

log = logging.getLogger("mall.pointsmall")

_PKG = "mall.pointsmall"


@dataclass(frozen=True, slots=True)
class ItemKeys(kit.PoolKeys):
    """The kit's keys of an item, and the redemption's own; `label` picks the limit
    period counter."""

    label: str = ""

    @property
    def res(self) -> str:
        return f"{self.tag}:res"

    @property
    def wins(self) -> str:
        return f"{self.tag}:wins"

    def idem(self, member_id: int, key: str) -> str:
        """The answer of a member's Idempotency-Key (under the item's tag: its slot)."""
        digest = hashlib.sha256(key.encode()).hexdigest()[:32] if key else "-"
        return f"{self.tag}:idem:{member_id}:{digest}"

    @property
    def period(self) -> str:
        return f"{self.tag}:p:{self.label or '-'}"

    def reserve(self, member_id: int, key: str) -> list[str]:
        """reserve.lua's KEYS: meta, stock, buyers, res, period counter, wins, idem."""
        return [
            self.meta,
            self.stock,
            self.buyers,
            self.res,
            self.period,
            self.wins,
            self.idem(member_id, key),
        ]


POOL = kit.Pool("pm", ItemKeys)
GROUP = "redemptions"  # the consumer group on every item's stream
ACTIVE_ITEMS = "pm:active"  # ids of warm items: the consumer reads their streams
# the decided redemptions, waiting for the consumer (persist.py)
WINS = kit.Stream(POOL, "wins", GROUP, ACTIVE_ITEMS)


def item_keys(item_id: int, label: str = "") -> ItemKeys:
    return ItemKeys(POOL.tag(item_id), label)


def period_key(item_id: int, label: str) -> str:
    return item_keys(item_id, label).period


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


def period_ttl(period: str, moment: datetime) -> int:
    """Seconds until the period ends, plus a day so late confirms still find it."""
    day = moment.astimezone(clock.SHANGHAI).date()
    return int((_period_end(period, day) - moment).total_seconds()) + 86400


@lru_cache(maxsize=64)
def _period_end(period: str, day: date) -> datetime:
    """When the business period of `day` ends (every redeem asks: one computation a day)."""
    if period == "week":
        _start, end = clock.local_week_bounds_utc(day)
    elif period == "month":
        _start, end = clock.local_month_bounds_utc(day)
    else:
        _start, end = clock.local_day_bounds_utc(day)
    return end


@dataclass(frozen=True, slots=True)
class Pending:
    """A reservation decided in Redis, not yet written (res's value)."""

    member_id: int
    quantity: int
    points: int
    at_ms: int
    period_key: str


def parse_pending(info: str) -> Pending:
    member, qty, points, at_ms, pkey = info.split("|", 4)
    return Pending(int(member), int(qty), int(points), int(at_ms), pkey)


def _ms(moment: datetime | None) -> str:
    return "" if moment is None else str(int(moment.timestamp() * 1000))


# --- warm -----------------------------------------------------------------------------


async def warm(item: PointsMallItem) -> bool:
    """Load the item's stock and limit counters into Redis from the database, unless
    they are already there. True if it loaded."""
    label = period_label(item.limit_period, clock.now())
    keys = item_keys(item.id, label)
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
    row: list[Any] = await PointsMallItem.filter(id=item.id).values_list("stock", "total_stock")
    stock, total = (int(row[0][0]), int(row[0][1])) if row else (0, 0)
    plan = kit.Warm(keys).terms(
        status=item.status,
        start=_ms(item.on_shelf_at),
        end=_ms(item.off_shelf_at),
        price=item.points_price,
        cash=item.cash_price_fen,
        limit=item.limit_per_member,
        plimit=item.limit_per_period if item.limit_period else 0,
    )
    plan.initial(total).stock(stock)
    plan.counts(keys.buyers, {member_id: int(units) for member_id, units in buyers})
    plan.counts(
        keys.period,
        {member_id: int(units) for member_id, units in in_period},
        ttl=period_ttl(item.limit_period, clock.now()),
    )
    cold = await plan.run()
    await WINS.ensure_group(item.id)
    await get_redis().sadd(ACTIVE_ITEMS, item.id)
    return cold


async def rewarm(item: PointsMallItem) -> None:
    """Load the item again from the database (e.g. its limit period changed)."""
    keys = item_keys(item.id, period_label(item.limit_period, clock.now()))
    await get_redis().delete(keys.meta, keys.stock, keys.buyers, keys.period)
    await warm(item)


async def redis_stock(item_ids: Sequence[int]) -> dict[int, int]:
    """Live stock of warm items (items not in Redis are left out)."""
    if not item_ids:
        return {}
    pipe = get_redis().pipeline(transaction=False)
    for item_id in item_ids:
        pipe.get(item_keys(item_id).stock)
    values = await pipe.execute()
    return {i: int(v) for i, v in zip(item_ids, values, strict=True) if v is not None}


async def held_by(member_id: int, items: Sequence[PointsMallItem]) -> dict[int, int]:
    """Units each item's buyers count holds for the member."""
    pipe = get_redis().pipeline(transaction=False)
    for item in items:
        pipe.hget(item_keys(item.id).buyers, str(member_id))
    values = await pipe.execute()
    return {item.id: int(v or 0) for item, v in zip(items, values, strict=True)}


# --- settle, give back ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settle:
    """A written reservation to settle: `give_back` when the database released it and
    its units go back to Redis."""

    resv: str
    pending: Pending
    give_back: bool


async def settle_many(item_id: int, settles: Sequence[Settle]) -> list[kit.Reply]:
    """The consumer wrote these reservations of one item: each leaves `res`; a released
    one (the database refused it) gives its units and limits back first, once per
    reservation id. One script call for all (every key under the item's tag: one slot);
    a reply each, in order (`ok` with the units left, '' for one kept; `dup`; `cold`).
    The kept ones travel as their ids alone (most of a batch: one HDEL does them); the
    given back ones are given back in order (a reservation is kept or given back, never
    both)."""
    if not settles:
        return []
    keys = item_keys(item_id)
    lua_keys = [keys.meta, keys.stock, keys.returned, keys.res, keys.buyers]
    periods: dict[str, int] = {}  # period counter -> its index in KEYS (Lua: from 1)
    kept: list[str] = []
    given: list[Any] = []
    for s in settles:
        if not s.give_back:
            kept.append(s.resv)
            continue
        period = s.pending.period_key or keys.period
        index = periods.get(period)
        if index is None:
            lua_keys.append(period)
            index = periods[period] = len(lua_keys)
        given += (s.resv, s.pending.member_id, s.pending.quantity, index)
    raw = await kit.script(_PKG, "release")(keys=lua_keys, args=[len(kept), *kept, *given])
    if not given:
        return [_KEPT] * len(settles)
    replies = iter(kit.parse(raw, 1).values[0].split(","))
    out: list[kit.Reply] = []
    for s in settles:
        if s.give_back:
            status, *rest = next(replies).split(":")
            out.append(kit.Reply(status, tuple(rest)))
        else:
            out.append(_KEPT)
    return out


_KEPT = kit.Reply(kit.OK, ("",))  # a kept reservation's settle: it left `res`


async def give_back(keys: ItemKeys, redemption: PointsMallRedemption) -> kit.Reply:
    """A committed redemption was cancelled in the database: its units and limits go
    back, once (a cold item's next warm reads the database, which has the cancel)."""
    return await kit.give_back(
        keys,
        redemption.reservation_id,
        n=redemption.quantity,
        member=redemption.member_id,
        counters=[keys.buyers, keys.period],
    )


# --- reconciliation -------------------------------------------------------------------


@dataclass
class ItemBalance(kit.Balance):
    """One reading of an item: the kit's equation (held = units redeemed, in flight =
    units of pending reservations) and the database's own."""

    item_id: int = 0
    db_stock: int = 0
    pending_ids: list[str] = field(default_factory=list)

    @property
    def warm(self) -> bool:
        return self.redis is not None

    @property
    def total(self) -> int:
        return self.initial

    @property
    def redis_stock(self) -> int:
        return max(self.redis or 0, 0)

    @property
    def redeemed(self) -> int:
        return self.held

    @property
    def pending(self) -> int:
        return self.in_flight

    @property
    def redis_agrees(self) -> bool:
        return self.agrees

    @property
    def db_agrees(self) -> bool:
        return self.total - self.db_stock == self.redeemed

    def figures(self) -> tuple[Any, ...]:
        return (*super().figures(), self.db_stock, tuple(self.pending_ids))

    def describe(self) -> str:
        return (
            f"item {self.item_id}: redis stock {self.redis_stock} + redeemed {self.redeemed}"
            f" + pending {self.pending} vs total {self.total}; db stock {self.db_stock}"
        )


async def _reading(item_id: int) -> ItemBalance:
    keys = item_keys(item_id)
    raw_stock, flat_infos = await kit.snapshot([(keys.stock, "get"), (keys.res, "hgetall")])
    infos = dict(zip(flat_infos[::2], flat_infos[1::2], strict=True))
    row = await PointsMallItem.filter(id=item_id).values_list("total_stock", "stock")
    total, db_stock = (int(row[0][0]), int(row[0][1])) if row else (0, 0)
    redeemed_sum: Any = (
        await PointsMallRedemption.filter(item_id=item_id, status__in=ACTIVE_STATUSES)
        .annotate(units=Sum("quantity"))
        .first()
        .values_list("units", flat=True)
    )
    committed: set[str] = set()
    if infos:
        # written and kept: counted as redeemed; a released one still in `res` has not
        # given its units back yet, so it is still in flight
        # in chunks: with the worker down through a busy drop `res` can hold more
        # reservations than one statement's parameters (PostgreSQL: 32,767)
        found = await select_in(
            PointsMallRedemption, "reservation_id", list(infos), ["reservation_id", "status"]
        )
        committed = {str(rid) for rid, status in found if str(status) in ACTIVE_STATUSES}
    pending_ids = sorted(r for r in infos if r not in committed)
    return ItemBalance(
        name=f"item {item_id}",
        initial=total,
        redis=None if raw_stock is None else int(raw_stock),
        held=int(redeemed_sum or 0),
        in_flight=sum(parse_pending(infos[r]).quantity for r in pending_ids),
        names=("redeemed", "pending", "returns_due"),
        item_id=item_id,
        db_stock=db_stock,
        pending_ids=pending_ids,
    )


async def item_balance(item_id: int, attempts: int = 5) -> ItemBalance:
    """A stable reading of the item, so a redemption landing between the Redis and the
    database reads is not taken for a mismatch."""
    return await kit.balance(partial(_reading, item_id), attempts=attempts)


async def all_item_ids() -> list[int]:
    rows: list[Any] = await PointsMallItem.all().order_by("id").values_list("id", flat=True)
    return [int(r) for r in rows]


@dataclass
class ReconcileResult:
    repaired: list[int] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)


async def reconcile() -> ReconcileResult:
    """The periodic job: repair Redis stock that has disagreed with the database in the
    same way on two runs in a row (by the measured drift, so redemptions since the
    reading stay counted). Pending redemptions are the consumer's: never repaired here."""
    result = ReconcileResult()
    for item_id in await all_item_ids():
        balance = await item_balance(item_id)
        if not balance.warm or not balance.stable or balance.redis_agrees:
            continue
        result.mismatches.append(balance.describe())
        if not balance.db_agrees or balance.pending:
            continue  # the database disagrees with itself, or units are in flight: report only
        if await kit.repair_persistent(item_keys(item_id), balance):
            result.repaired.append(item_id)
    return result
