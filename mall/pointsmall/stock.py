"""The points-mall pool: an item's stock in Redis, on the hot-stock kit (mall.kit.stock).

Keys under the item's hash tag `{pm:ID}`: the kit's meta (`initial`: the item's total
stock), stock, buyers (units per member) and returned (reservation ids of cancelled
redemptions given back), and the redemption's own resv (pending reservations, a zset
by expiry), resvinfo (reservation -> "member|qty|period key") and p:<label> (units per
member in a limit period, e.g. p:m202405).

A redemption's units are held by a reservation (`lua/reserve.lua`) until its database
write commits (`confirm`) or fails (`release`); the reconciler releases reservations
past their expiry and proves, per item:

    redis stock + units redeemed + units pending == total stock
    database stock == total stock - units redeemed"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from tortoise.functions import Sum

from mall.kit import clock
from mall.kit import stock as kit
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
    def resv(self) -> str:
        return f"{self.tag}:resv"

    @property
    def resvinfo(self) -> str:
        return f"{self.tag}:resvinfo"

    @property
    def period(self) -> str:
        return f"{self.tag}:p:{self.label or '-'}"

    def reserve(self) -> list[str]:
        """reserve.lua's KEYS: meta, stock, buyers, resv, resvinfo, period counter."""
        return [self.meta, self.stock, self.buyers, self.resv, self.resvinfo, self.period]


POOL = kit.Pool("pm", ItemKeys)


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
    plan = kit.Warm(keys).initial(total).stock(stock)
    plan.counts(keys.buyers, {member_id: int(units) for member_id, units in buyers})
    plan.counts(
        keys.period,
        {member_id: int(units) for member_id, units in in_period},
        ttl=period_ttl(item.limit_period, clock.now()),
    )
    return await plan.run()


async def rewarm(item: PointsMallItem) -> None:
    """Load the item again from the database (e.g. its limit period changed)."""
    keys = item_keys(item.id, period_label(item.limit_period, clock.now()))
    await get_redis().delete(
        keys.meta, keys.stock, keys.buyers, keys.resv, keys.resvinfo, keys.period
    )
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


# --- confirm, release, give back --------------------------------------------------------


async def confirm(keys: ItemKeys, resv: str) -> bool:
    """The reservation's database write committed; False if it was no longer pending."""
    raw = await kit.script(_PKG, "confirm")(keys=[keys.resv, keys.resvinfo], args=[resv])
    return kit.parse(raw).status == kit.OK


async def release(keys: ItemKeys, resv: str) -> bool:
    """Give a pending reservation's units back (its write failed or never happened);
    False if it was not pending."""
    raw = await kit.script(_PKG, "release")(
        keys=[keys.stock, keys.buyers, keys.resv, keys.resvinfo, keys.period], args=[resv]
    )
    return kit.parse(raw).status == kit.OK


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


async def return_expired(item_id: int, now: datetime | None = None) -> tuple[int, int]:
    """Settle the item's reservations past their expiry: confirm those whose database
    row exists (the process died before confirming), give back the rest."""
    now_ms = int((now or clock.now()).timestamp() * 1000)
    redis = get_redis()
    keys = item_keys(item_id)
    expired: list[Any] = await redis.zrangebyscore(keys.resv, "-inf", now_ms)
    returned = confirmed = 0
    for resv in expired:
        info: Any = await redis.hget(keys.resvinfo, resv)
        pkey = _parse_info(info)[2] if info else ""
        if await PointsMallRedemption.exists(reservation_id=resv):
            confirmed += int(await confirm(keys, resv))
        else:
            # the counter the reservation counted in, as it recorded it
            counted = ItemKeys(keys.tag, pkey.rpartition(":p:")[2]) if pkey else keys
            n = int(await release(counted, resv))
            returned += n
            if n:
                log.warning("returned expired reservation %s of item %s", resv, item_id)
    return returned, confirmed


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
    raw_stock, flat_infos = await kit.snapshot([(keys.stock, "get"), (keys.resvinfo, "hgetall")])
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
        found: list[Any] = await PointsMallRedemption.filter(
            reservation_id__in=list(infos)
        ).values_list("reservation_id", flat=True)
        committed = {str(r) for r in found}
    pending_ids = sorted(r for r in infos if r not in committed)
    return ItemBalance(
        name=f"item {item_id}",
        initial=total,
        redis=None if raw_stock is None else int(raw_stock),
        held=int(redeemed_sum or 0),
        in_flight=sum(_parse_info(infos[r])[1] for r in pending_ids),
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
    returned: int = 0
    confirmed: int = 0
    repaired: list[int] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)


async def reconcile(now: datetime | None = None) -> ReconcileResult:
    """The periodic job: return expired reservations, then repair Redis stock that has
    disagreed with the database in the same way on two runs in a row (by the measured
    drift, so redemptions since the reading stay counted)."""
    result = ReconcileResult()
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
        if await kit.repair_persistent(item_keys(item_id), balance):
            result.repaired.append(item_id)
    return result
