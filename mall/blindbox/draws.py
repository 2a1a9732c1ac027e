"""The blind-box draw log after the draw: draws a crashed request left in flight
(settled by a job), and the log as members and ops read it (pages, CSV export)."""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import AsyncIterator

from mall.blindbox import stock
from mall.blindbox.models import BlindBoxDraw
from mall.blindbox.stock import parse_in_flight
from mall.config import get_settings
from mall.kit.pagination import cursor_page
from mall.redis import get_redis

log = logging.getLogger("mall.blindbox")


async def sweep_in_flight(older_than_seconds: float | None = None) -> int:
    """Settle draws left in flight: recorded ones (their request died before releasing
    the slot) are released at once, unrecorded ones older than the threshold (their
    request crashed before the database) are given back. Returns how many."""
    if older_than_seconds is None:
        older_than_seconds = get_settings().blindbox_inflight_stale_seconds
    cutoff = time.time() - older_than_seconds
    redis = get_redis()
    settled = 0
    for sid in await stock.series_ids():
        for member, record in (await redis.hgetall(stock.POOL.keys(sid).inflight)).items():
            stale = parse_in_flight(str(member), str(record))
            if await BlindBoxDraw.filter(draw_id=stale.draw_id).exists():
                done = await stock.settle(sid, stale.member_id, stale.draw_id)
            elif stale.since > cutoff:
                continue
            else:
                done = await stock.give_back(sid, stale.member_id, stale.draw_id, stale.label)
                if done:
                    log.warning("gave back unrecorded draw %s (series %s)", stale.draw_id, sid)
            settled += int(done)
    return settled


async def my_draws(
    member_id: int, series_id: int | None, cursor: str | None, size: int
) -> tuple[list[BlindBoxDraw], str | None]:
    query = BlindBoxDraw.filter(member_id=member_id)
    if series_id is not None:
        query = query.filter(series_id=series_id)
    return await cursor_page(query, cursor, size)


async def list_draws(
    series_id: int, cursor: str | None, size: int, member_id: int | None = None
) -> tuple[list[BlindBoxDraw], str | None]:
    await stock.get_series(series_id)
    query = BlindBoxDraw.filter(series_id=series_id)
    if member_id is not None:
        query = query.filter(member_id=member_id)
    return await cursor_page(query, cursor, size)


CSV_COLUMNS = (
    "draw_id",
    "seq",
    "created_at",
    "business_day",
    "member_id",
    "prize_id",
    "prize_name",
    "tier",
    "value_fen",
    "points_cost",
    "random_value",
    "guaranteed",
    "pity_before",
    "pity_after",
    "points_entry_key",
    "fulfilment_status",
    "coupon_id",
    "probability_table",
)


def _cell(value: object) -> str:
    if value is None:
        return ""
    text = json.dumps(value, separators=(",", ":")) if isinstance(value, dict) else str(value)
    # spreadsheets run cells starting with these as formulas
    return "'" + text if text[:1] in ("=", "+", "-", "@") and not text[1:].isdigit() else text


async def export_draws_csv(series_id: int, batch: int = 1000) -> AsyncIterator[str]:
    """The series' whole draw log, oldest first, streamed in batches."""
    await stock.get_series(series_id)
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield flush()
    last_id = 0
    while True:
        rows = (
            await BlindBoxDraw.filter(series_id=series_id, id__gt=last_id)
            .order_by("id")
            .limit(batch)
        )
        if not rows:
            return
        for row in rows:
            writer.writerow([_cell(getattr(row, column)) for column in CSV_COLUMNS])
        last_id = rows[-1].id
        yield flush()


async def prize_order_cancelled(draw_id: str, order_id: int) -> None:
    """The mall order shipping this prize was cancelled (called in its transaction): the
    prize waits for delivery again."""
    await BlindBoxDraw.filter(
        draw_id=draw_id, fulfilment_status="ordered", mall_order_id=order_id
    ).update(fulfilment_status="pending", mall_order_id=None)
