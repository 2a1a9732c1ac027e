"""The blind-box pool: a series' prizes in Redis, on the hot-stock kit (mall.kit.stock).

Keys under the series' hash tag `{bb:ID}`: the kit's meta (`conf`: JSON of the prizes,
the daily cap and the guarantee) and stock (a hash: limited prize -> units left; a
series is a pool of several kinds of unit), and the draw's own pity (member -> draws
since their last prize of the guaranteed tier), day:<yyyymmdd> (member -> draws that
business day), inflight (member -> a draw decided but not yet recorded; one per member
per series) and seq (the draw counter). The database is the record of truth: `warm`
rebuilds Redis from it, `reconcile` proves, per limited prize:

    redis stock + recorded draws + unrecorded in-flight draws == the prize's stock"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from typing import Any

from tortoise.functions import Count

from mall.blindbox.models import BlindBoxDraw, BlindBoxPrize, BlindBoxSeries
from mall.errors import ErrorCode
from mall.i18n import _
from mall.kit import clock
from mall.kit import stock as kit
from mall.redis import get_redis

log = logging.getLogger("mall.blindbox")

SERIES_NOT_FOUND = ErrorCode("SERIES_NOT_FOUND", 404, _("This blind-box series does not exist"))

DAY_TTL_SECONDS = 2 * 24 * 3600
_SCRIPTS = "mall.blindbox"


class SeriesKeys(kit.PoolKeys):
    """The kit's keys of a series, and the draw's own."""

    @property
    def pity(self) -> str:
        return f"{self.tag}:pity"

    @property
    def inflight(self) -> str:
        return f"{self.tag}:inflight"

    @property
    def seq(self) -> str:
        return f"{self.tag}:seq"

    def day(self, label: str) -> str:
        return f"{self.tag}:day:{label}"


POOL = kit.Pool("bb", SeriesKeys)


def keys(series_id: int) -> SeriesKeys:
    return POOL.keys(series_id)


def day_label(day: date) -> str:
    return day.strftime("%Y%m%d")


async def get_series(series_id: int) -> BlindBoxSeries:
    series = await BlindBoxSeries.get_or_none(id=series_id)
    if series is None:
        raise SERIES_NOT_FOUND()
    return series


async def series_ids() -> list[int]:
    ids = await BlindBoxSeries.all().order_by("id").values_list("id", flat=True)
    return [int(i) for i in ids]  # type: ignore[call-overload]


# --- warm ---------------------------------------------------------------------------


def _conf(series: BlindBoxSeries, prizes: Sequence[BlindBoxPrize]) -> dict[str, Any]:
    every = series.guarantee_every or 0
    tier = series.guarantee_tier or ""
    return {
        "prizes": [
            [str(p.id), p.weight, p.tier, 0 if p.stock is None else 1]
            for p in sorted(prizes, key=lambda p: p.id)
        ],
        "cap": series.daily_draw_cap or 0,
        "gtier": tier if every and tier else "",
        "gevery": every if every and tier else 0,
    }


async def drawn_counts(series_id: int, max_seq: int | None = None) -> dict[int, int]:
    query = BlindBoxDraw.filter(series_id=series_id)
    if max_seq is not None:
        query = query.filter(seq__lte=max_seq)
    rows = await query.group_by("prize_id").annotate(n=Count("id")).values("prize_id", "n")
    return {int(row["prize_id"]): int(row["n"]) for row in rows}


async def warm(series_id: int) -> bool:
    """Publish the series' prizes and rules to Redis and fill stock it lacks from the
    database. When Redis lost the series (no meta) it also rebuilds the draw counter,
    guarantee counters and today's draw counts. True if it was cold."""
    series = await BlindBoxSeries.get_or_none(id=series_id)
    if series is None:
        return False
    prizes = await BlindBoxPrize.filter(series_id=series_id).order_by("id")
    keys = POOL.keys(series_id)
    drawn = await drawn_counts(series_id)
    plan = kit.Warm(keys).terms(conf=json.dumps(_conf(series, prizes), separators=(",", ":")))
    plan.units(
        {str(p.id): max(p.stock - drawn.get(p.id, 0), 0) for p in prizes if p.stock is not None}
    )
    if not await get_redis().exists(keys.meta):
        last_seq = await BlindBoxDraw.filter(series_id=series_id).order_by("-seq").first()
        plan.value(keys.seq, last_seq.seq if last_seq else 0)
        if series.guarantee_every and series.guarantee_tier:
            pity: dict[int, int] = {}
            rows = (
                await BlindBoxDraw.filter(series_id=series_id)
                .order_by("id")
                .values_list("member_id", "pity_after")
            )
            for member_id, after in rows:
                pity[int(member_id)] = int(after)
            plan.counts(keys.pity, pity)
        today = clock.today()
        counts = (
            await BlindBoxDraw.filter(series_id=series_id, business_day=today)
            .group_by("member_id")
            .annotate(n=Count("id"))
            .values("member_id", "n")
        )
        plan.counts(
            keys.day(day_label(today)),
            {row["member_id"]: int(row["n"]) for row in counts},
            ttl=DAY_TTL_SECONDS,
        )
    cold = await plan.run()
    if cold:
        log.info("blind-box series %s warmed into Redis", series_id)
    return cold


async def live_state(series_id: int) -> tuple[dict[str, Any], dict[str, str]]:
    """conf and stock in one snapshot (warming the series first if Redis lacks it)."""
    keys = POOL.keys(series_id)
    redis = get_redis()
    for _attempt in range(2):
        pipe = redis.pipeline(transaction=True)
        pipe.hget(keys.meta, "conf")
        pipe.hgetall(keys.stock)
        raw, stocks = await pipe.execute()
        if raw is not None:
            return json.loads(raw), stocks
        await warm(series_id)
    raise RuntimeError(f"blind-box series {series_id} could not be warmed")


async def drop(series_id: int) -> None:
    keys = POOL.keys(series_id)
    await get_redis().delete(keys.meta, keys.stock, keys.pity, keys.seq, keys.inflight)


# --- draws in flight ------------------------------------------------------------------


@dataclass(frozen=True)
class InFlight:
    member_id: int
    draw_id: str
    prize_id: int
    pity_before: int
    label: str
    since: int
    seq: int


def parse_in_flight(member: str, record: str) -> InFlight:
    draw_id, prize_id, pity, label, since, seq = record.split("|")
    return InFlight(int(member), draw_id, int(prize_id), int(pity), label, int(since), int(seq))


async def give_back(series_id: int, member_id: int, draw_id: str, label: str) -> bool:
    """Release a draw that was never recorded: its stock, the day's count and the
    guarantee counter go back (`lua/release.lua`). False if it is not in flight."""
    keys = POOL.keys(series_id)
    raw = await kit.script(_SCRIPTS, "release")(
        keys=[keys.stock, keys.pity, keys.day(label), keys.inflight], args=[member_id, draw_id]
    )
    return kit.parse(raw).status == kit.OK


async def settle(series_id: int, member_id: int, draw_id: str) -> bool:
    """A recorded draw gives up its in-flight slot (`lua/confirm.lua`)."""
    raw = await kit.script(_SCRIPTS, "confirm")(
        keys=[POOL.keys(series_id).inflight], args=[member_id, draw_id]
    )
    return kit.parse(raw).status == kit.OK


# --- reconciliation -------------------------------------------------------------------


@dataclass
class SeriesReconciliation:
    """One reading of a series: the kit's equation per limited prize, and notes."""

    series_id: int
    prizes: list[kit.Balance] = field(default_factory=list)
    prize_ids: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stable: bool = True

    @property
    def ok(self) -> bool:
        return all(b.ok for b in self.prizes)

    @property
    def lines(self) -> list[tuple[bool, str]]:
        """(agrees, what was compared) per line."""
        return [(b.ok, b.line()) for b in self.prizes] + [(True, n) for n in self.notes]

    def figures(self) -> tuple[Any, ...]:
        return tuple(b.figures() for b in self.prizes)


async def _reading(series: BlindBoxSeries) -> SeriesReconciliation:
    keys = POOL.keys(series.id)
    meta, flat_stock, flat_inflight, seq_raw = await kit.snapshot(
        [
            (keys.meta, "hgetall"),
            (keys.stock, "hgetall"),
            (keys.inflight, "hgetall"),
            (keys.seq, "get"),
        ]
    )
    result = SeriesReconciliation(series.id)
    if not meta:
        result.notes.append(f"series {series.id}: not in Redis yet")
        return result
    stocks = dict(zip(flat_stock[::2], flat_stock[1::2], strict=True))
    max_seq = int(seq_raw or 0)
    # draws decided up to the snapshot: recorded ones, plus in-flight ones not yet recorded
    drawn = await drawn_counts(series.id, max_seq)
    flights = [
        parse_in_flight(str(m), str(rec))
        for m, rec in zip(flat_inflight[::2], flat_inflight[1::2], strict=True)
    ]
    recorded = (
        set(
            await BlindBoxDraw.filter(draw_id__in=[f.draw_id for f in flights]).values_list(
                "draw_id", flat=True
            )
        )
        if flights
        else set()
    )
    pending: dict[int, int] = {}
    for flight in flights:
        if flight.draw_id not in recorded:
            pending[flight.prize_id] = pending.get(flight.prize_id, 0) + 1
    for prize in await BlindBoxPrize.filter(series_id=series.id).order_by("id"):
        if prize.stock is None:
            continue
        raw = stocks.get(str(prize.id))
        check = kit.Balance(
            name=f"series {series.id} prize {prize.id}",
            initial=prize.stock,
            redis=None if raw is None else int(raw),
            held=drawn.get(prize.id, 0),
            in_flight=pending.get(prize.id, 0),
            names=("drawn", "in_flight", "returns_due"),
        )
        if raw is None:
            check.found.append("no stock in Redis")
        result.prizes.append(check)
        result.prize_ids.append(prize.id)
    stale = [f for f in flights if f.since < time.time() - 60]
    if stale:
        result.notes.append(f"series {series.id}: {len(stale)} draws in flight for over a minute")
    return result


async def reconcile(*, repair: bool = False) -> list[SeriesReconciliation]:
    """Redis stock + recorded draws + unrecorded in-flight draws == stock, per limited
    prize, each series judged on a stable reading (an ops stock change touches Redis
    and the database one after the other). `repair` (the periodic job): a prize whose
    Redis stock is off by the same drift as on the run before has it moved by it."""
    results = []
    for series in await BlindBoxSeries.all().order_by("id"):
        result = await kit.balance(partial(_reading, series))
        if repair and not result.ok:
            keys = POOL.keys(series.id)
            repaired = False
            for prize_id, check in zip(result.prize_ids, result.prizes, strict=True):
                if not check.found:
                    unit = str(prize_id)
                    repaired |= await kit.repair_persistent(keys, check, unit=unit)
            if repaired:
                result = await kit.balance(partial(_reading, series))
        results.append(result)
    return results
