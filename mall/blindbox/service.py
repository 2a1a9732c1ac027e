"""Blind boxes: disclosure (what a shopper must see before drawing) and ops (series,
prizes, stock). A hot domain reads as decision -> persistence -> ops:

- `stock.py`: the series' pool in Redis on the hot-stock kit (warm, in-flight draws,
  the reconcile equation);
- `draw.py`: the draw, decided and recorded in one Lua call (`lua/draw.lua`) and
  answered at once (`pending`);
- `draws.py`: the consumer persisting the draw streams in batches (points spend, draw
  log, coupon; or released with a reason), and the log as members and ops read it;
- this module: disclosure, series and prize ops, stock adjustments, and the names other
  domains and the routers use (the decision and persistence ones re-exported below)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from tortoise.expressions import F
from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.audit.service import Actor
from mall.blindbox import stock
from mall.blindbox.draw import PRIZE_NOT_FOUND as PRIZE_NOT_FOUND
from mall.blindbox.draw import R_LIMIT as R_LIMIT
from mall.blindbox.draw import Decision as Decision
from mall.blindbox.draw import TableRow as TableRow
from mall.blindbox.draw import answer_json as answer_json
from mall.blindbox.draw import decide as decide
from mall.blindbox.draw import draw as draw
from mall.blindbox.draw import draw_args as draw_args
from mall.blindbox.draw import effective_table, is_open
from mall.blindbox.draw import forget_local_state as forget_local_state
from mall.blindbox.draw import parse_decision as parse_decision
from mall.blindbox.draw import pick as pick
from mall.blindbox.draw import rederive as rederive
from mall.blindbox.draw import table_json as table_json
from mall.blindbox.draws import DRAW_NOT_FOUND as DRAW_NOT_FOUND
from mall.blindbox.draws import drain as drain
from mall.blindbox.draws import export_draws_csv as export_draws_csv
from mall.blindbox.draws import finish_give_backs as finish_give_backs
from mall.blindbox.draws import get_draw as get_draw
from mall.blindbox.draws import list_draws as list_draws
from mall.blindbox.draws import my_draws as my_draws
from mall.blindbox.draws import prize_order_cancelled as prize_order_cancelled
from mall.blindbox.draws import process_pending_once as process_pending_once
from mall.blindbox.draws import run_consumer as run_consumer
from mall.blindbox.models import BlindBoxDraw, BlindBoxPrize, BlindBoxSeries, DrawStatus
from mall.blindbox.schemas import (
    AdminPrizeOut,
    AdminSeriesOut,
    GuaranteeOut,
    MyStatus,
    PrizeDisclosure,
    PrizeIn,
    PrizePatch,
    ReconcileOut,
    SeriesCard,
    SeriesDetail,
    SeriesIn,
    SeriesPatch,
    TierDisclosure,
)
from mall.blindbox.stock import SERIES_NOT_FOUND as SERIES_NOT_FOUND
from mall.blindbox.stock import day_label as day_label
from mall.blindbox.stock import give_back as give_back
from mall.blindbox.stock import reconcile as reconcile
from mall.blindbox.stock import series_ids as series_ids
from mall.blindbox.stock import warm as warm
from mall.coupons import service as coupons_service
from mall.errors import ErrorCode, MallError
from mall.i18n import _, translate
from mall.kit import clock
from mall.kit import stock as kit
from mall.redis import get_redis

log = logging.getLogger("mall.blindbox")

SERIES_HAS_DRAWS = ErrorCode(
    "SERIES_HAS_DRAWS", 409, _("This series has draws and cannot be deleted; take it off sale")
)
PRIZE_HAS_DRAWS = ErrorCode(
    "PRIZE_HAS_DRAWS",
    409,
    _("This prize has been drawn and cannot be deleted; set its weight to 0"),
)
PRIZE_UNLIMITED = ErrorCode(
    "PRIZE_UNLIMITED", 409, _("This prize has unlimited stock; there is nothing to adjust")
)
STOCK_TOO_LOW = ErrorCode(
    "STOCK_TOO_LOW", 409, _("Only {left} units are left; cannot take away {wanted}")
)
GUARANTEE_INVALID = ErrorCode(
    "GUARANTEE_INVALID", 422, _("A guarantee needs both a tier and a draw count")
)
SERIES_WINDOW_INVALID = ErrorCode(
    "SERIES_WINDOW_INVALID", 422, _("The sale must end after it starts")
)
PRIZE_COUPON_TEMPLATE_UNKNOWN = ErrorCode(
    "PRIZE_COUPON_TEMPLATE_UNKNOWN", 422, _("Coupon template {template_id} does not exist")
)

SOLD_OUT_RULE = _(
    "Sold-out prizes drop out of the draw; the chances of the prizes still in stock grow "
    "in proportion to their weights."
)
GUARANTEE_RULE = _(
    "At the latest on draw {every} since your last {tier} prize, you get a {tier} prize."
)
GUARANTEE_PAUSED = _(
    "The guarantee is paused while every {tier} prize is sold out; your count keeps going."
)


# --- disclosure -------------------------------------------------------------------------


def _guarantee(series: BlindBoxSeries, rows: Sequence[TableRow]) -> GuaranteeOut | None:
    if not (series.guarantee_every and series.guarantee_tier):
        return None
    tier = series.guarantee_tier
    active = any(row.tier == tier and row.weight > 0 for row in rows)
    text = GUARANTEE_RULE if active else GUARANTEE_PAUSED
    return GuaranteeOut(
        tier=tier,
        every=series.guarantee_every,
        active=active,
        text=translate(text, every=series.guarantee_every, tier=tier),
    )


def _card(series: BlindBoxSeries, rows: Sequence[TableRow]) -> SeriesCard:
    return SeriesCard(
        id=series.id,
        name=series.name,
        cover_image=series.cover_image,
        points_cost=series.points_cost,
        starts_at=series.starts_at,
        ends_at=series.ends_at,
        is_open=is_open(series),
        sold_out=sum(row.weight for row in rows) <= 0,
        daily_draw_cap=series.daily_draw_cap,
        min_age=max(series.min_age, 8),
        allow_minors=series.allow_minors,
        guarantee=_guarantee(series, rows),
    )


def _on_offer(series: BlindBoxSeries) -> bool:
    ended = series.ends_at is not None and series.ends_at <= clock.now()
    return series.status == "on_sale" and not ended


async def list_on_offer() -> list[SeriesCard]:
    """Series on sale now or announced for later (`is_open` tells them apart)."""
    found = [
        s for s in await BlindBoxSeries.filter(status="on_sale").order_by("id") if _on_offer(s)
    ]
    cards = []
    for series in found:
        conf, stocks = await stock.live_state(series.id)
        cards.append(_card(series, effective_table(conf, stocks)))
    return cards


async def my_status(series: BlindBoxSeries, member_id: int) -> MyStatus:
    keys = stock.POOL.keys(series.id)
    pipe = get_redis().pipeline(transaction=False)
    pipe.hget(keys.day(day_label(clock.today())), str(member_id))
    pipe.hget(keys.pity, str(member_id))
    used_raw, pity_raw = await pipe.execute()
    used = int(used_raw or 0)
    pity = int(pity_raw or 0)
    every = series.guarantee_every if series.guarantee_tier else None
    return MyStatus(
        draws_today=used,
        draws_left_today=None
        if series.daily_draw_cap is None
        else max(series.daily_draw_cap - used, 0),
        pity_count=pity,
        guarantee_in=None if not every else max(every - pity, 1),
    )


async def disclose(series_id: int, member_id: int | None = None) -> SeriesDetail:
    """Everything a shopper must see before drawing: values, odds, stock, rules."""
    series = await stock.get_series(series_id)
    if not _on_offer(series):
        raise SERIES_NOT_FOUND()
    prizes = {p.id: p for p in await BlindBoxPrize.filter(series_id=series_id)}
    conf, stocks = await stock.live_state(series_id)
    rows = effective_table(conf, stocks)
    total = sum(row.weight for row in rows)
    out: list[PrizeDisclosure] = []
    tiers: dict[str, tuple[int, int]] = {}
    for row in rows:
        prize = prizes.get(row.prize_id)
        if prize is None:  # deleted after the conf was read; the next read drops it
            continue
        left = stocks.get(str(prize.id))
        stock_left = None if prize.stock is None else max(int(left or 0), 0)
        out.append(
            PrizeDisclosure(
                id=prize.id,
                name=prize.name,
                image=prize.image,
                kind=prize.kind,
                tier=prize.tier,
                value_fen=prize.value_fen,
                weight=prize.weight,
                effective_weight=row.weight,
                probability=row.weight / total if total else 0.0,
                stock_left=stock_left,
                sold_out=stock_left == 0,
            )
        )
        weight, count = tiers.get(row.tier, (0, 0))
        tiers[row.tier] = (weight + row.weight, count + 1)
    card = _card(series, rows)
    return SeriesDetail(
        **card.model_dump(),
        description=series.description,
        rules=series.rules,
        total_weight=total,
        prizes=out,
        tiers=[
            TierDisclosure(tier=t, probability=w / total if total else 0.0, prizes=n)
            for t, (w, n) in tiers.items()
        ],
        sold_out_rule=translate(SOLD_OUT_RULE),
        me=await my_status(series, member_id) if member_id is not None else None,
    )


# --- ops: series, prizes, stock ---------------------------------------------------------


def _check_series(series: BlindBoxSeries) -> None:
    if bool(series.guarantee_tier) != bool(series.guarantee_every):
        raise GUARANTEE_INVALID()
    if series.starts_at and series.ends_at and series.ends_at <= series.starts_at:
        raise SERIES_WINDOW_INVALID()


def _prize_fields(data: PrizeIn) -> dict[str, Any]:
    return data.model_dump()


async def _check_coupon_template(template_id: int | None) -> None:
    """A coupon prize must name a template that exists (whether it can still issue is
    decided at each draw)."""
    if template_id is None:
        return
    try:
        await coupons_service.get_template(template_id)
    except MallError as exc:
        if exc.code != "COUPON_TEMPLATE_NOT_FOUND":
            raise
        raise PRIZE_COUPON_TEMPLATE_UNKNOWN(template_id=template_id) from exc


async def create_series(staff: Actor, data: SeriesIn) -> BlindBoxSeries:
    fields = data.model_dump(exclude={"prizes"}, exclude_none=True)
    for prize_in in data.prizes:
        await _check_coupon_template(prize_in.coupon_template_id)
    async with in_transaction():
        series = BlindBoxSeries(**fields)
        _check_series(series)
        await series.save()
        for prize_in in data.prizes:
            await BlindBoxPrize.create(series_id=series.id, **_prize_fields(prize_in))
        await audit_service.record(
            staff,
            "blindbox.series.create",
            f"blindbox:{series.id}",
            **data.model_dump(mode="json"),
        )
    await warm(series.id)
    return series


async def update_series(staff: Actor, series_id: int, patch: SeriesPatch) -> BlindBoxSeries:
    changes = patch.model_dump(exclude_unset=True)
    for name in (
        "name",
        "points_cost",
        "min_age",
        "allow_minors",
        "status",
        "cover_image",
        "description",
        "rules",
    ):
        if name in changes and changes[name] is None:
            changes.pop(name)  # these cannot be cleared
    async with in_transaction():
        series = await BlindBoxSeries.filter(id=series_id).select_for_update().first()
        if series is None:
            raise SERIES_NOT_FOUND()
        before = {name: getattr(series, name) for name in changes}
        for name, value in changes.items():
            setattr(series, name, value)
        _check_series(series)
        await series.save()
        await audit_service.record(
            staff,
            "blindbox.series.update",
            f"blindbox:{series_id}",
            before=json.loads(json.dumps(before, default=str)),
            after=json.loads(json.dumps(changes, default=str)),
        )
    await warm(series_id)
    return series


async def delete_series(staff: Actor, series_id: int) -> None:
    async with in_transaction():
        series = await stock.get_series(series_id)
        # draws answered but not persisted yet count too (the series' stream)
        if (
            await BlindBoxDraw.filter(series_id=series_id).exists()
            or await stock.DRAWS.backlog(series_id) > 0
        ):
            raise SERIES_HAS_DRAWS()
        await BlindBoxPrize.filter(series_id=series_id).delete()
        await series.delete()
        await audit_service.record(
            staff, "blindbox.series.delete", f"blindbox:{series_id}", name=series.name
        )
    await stock.drop(series_id)


async def _prize(series_id: int, prize_id: int) -> BlindBoxPrize:
    prize = await BlindBoxPrize.get_or_none(id=prize_id, series_id=series_id)
    if prize is None:
        raise PRIZE_NOT_FOUND()
    return prize


async def add_prize(staff: Actor, series_id: int, data: PrizeIn) -> BlindBoxPrize:
    await _check_coupon_template(data.coupon_template_id)
    async with in_transaction():
        await stock.get_series(series_id)
        prize = await BlindBoxPrize.create(series_id=series_id, **_prize_fields(data))
        await audit_service.record(
            staff,
            "blindbox.prize.create",
            f"blindbox:{series_id}:prize:{prize.id}",
            **data.model_dump(mode="json"),
        )
    await warm(series_id)
    return prize


async def update_prize(
    staff: Actor, series_id: int, prize_id: int, patch: PrizePatch
) -> BlindBoxPrize:
    changes = {k: v for k, v in patch.model_dump(exclude_unset=True).items() if v is not None}
    async with in_transaction():
        prize = await _prize(series_id, prize_id)
        if "coupon_template_id" in changes and prize.kind != "coupon":
            changes.pop("coupon_template_id")
        await _check_coupon_template(changes.get("coupon_template_id"))
        before = {name: getattr(prize, name) for name in changes}
        for name, value in changes.items():
            setattr(prize, name, value)
        await prize.save()
        await audit_service.record(
            staff,
            "blindbox.prize.update",
            f"blindbox:{series_id}:prize:{prize_id}",
            before=before,
            after=changes,
        )
    await warm(series_id)
    return prize


async def delete_prize(staff: Actor, series_id: int, prize_id: int) -> None:
    async with in_transaction():
        prize = await _prize(series_id, prize_id)
        if await BlindBoxDraw.filter(prize_id=prize_id).exists():
            raise PRIZE_HAS_DRAWS()
        await prize.delete()
        await audit_service.record(
            staff,
            "blindbox.prize.delete",
            f"blindbox:{series_id}:prize:{prize_id}",
            name=prize.name,
        )
    # conf first, so no new draw can pick it while its stock field goes away
    await warm(series_id)
    await get_redis().hdel(stock.POOL.keys(series_id).stock, str(prize_id))


async def adjust_stock(
    staff: Actor, series_id: int, prize_id: int, delta: int, reason: str
) -> BlindBoxPrize:
    """Add or take away units of a limited prize, by the kit's rule: a decrease is taken
    in Redis first (refused below zero there), an increase reaches Redis after the
    database total has moved; each with an audit entry."""
    prize = await _prize(series_id, prize_id)
    if prize.stock is None:
        raise PRIZE_UNLIMITED()
    keys = stock.POOL.keys(series_id)
    before = await get_redis().hget(keys.stock, str(prize_id))

    async def commit() -> None:
        async with in_transaction():
            # the database's own floor: never fewer units than confirmed draws hold
            moved = await BlindBoxPrize.filter(id=prize_id, stock__gte=F("drawn") - delta).update(
                stock=F("stock") + delta
            )
            if not moved:
                fresh = await BlindBoxPrize.get(id=prize_id)
                raise STOCK_TOO_LOW(left=max((fresh.stock or 0) - fresh.drawn, 0), wanted=-delta)
            await audit_service.record(
                staff,
                "blindbox.prize.stock",
                f"blindbox:{series_id}:prize:{prize_id}",
                delta=delta,
                reason=reason,
                redis_left_after=None if before is None else int(before) + delta,
            )

    await kit.adjust(
        keys,
        delta,
        commit,
        refused=lambda left: STOCK_TOO_LOW(left=left, wanted=-delta),
        warm=lambda: stock.warm(series_id),
        unit=str(prize_id),
    )
    await prize.refresh_from_db()
    return prize


async def admin_view(series_id: int) -> AdminSeriesOut:
    series = await stock.get_series(series_id)
    prizes = await BlindBoxPrize.filter(series_id=series_id).order_by("id")
    _conf_json, stocks = await stock.live_state(series_id)
    drawn = await stock.drawn_counts(series_id)
    released = await BlindBoxDraw.filter(series_id=series_id, status=DrawStatus.RELEASED).count()
    return AdminSeriesOut(
        id=series.id,
        name=series.name,
        cover_image=series.cover_image,
        description=series.description,
        rules=series.rules,
        points_cost=series.points_cost,
        status=series.status,
        starts_at=series.starts_at,
        ends_at=series.ends_at,
        daily_draw_cap=series.daily_draw_cap,
        min_age=series.min_age,
        allow_minors=series.allow_minors,
        guarantee_tier=series.guarantee_tier,
        guarantee_every=series.guarantee_every,
        draws=sum(drawn.values()),
        released=released,
        backlog=await stock.DRAWS.backlog(series_id),
        prizes=[
            AdminPrizeOut(
                id=p.id,
                name=p.name,
                image=p.image,
                kind=p.kind,
                coupon_template_id=p.coupon_template_id,
                tier=p.tier,
                weight=p.weight,
                value_fen=p.value_fen,
                stock=p.stock,
                stock_left=None if p.stock is None else int(stocks.get(str(p.id)) or 0),
                drawn=drawn.get(p.id, 0),
            )
            for p in prizes
        ],
        created_at=series.created_at,
        updated_at=series.updated_at,
    )


async def reconcile_series(series_id: int) -> ReconcileOut:
    """`mall check blindbox` for one series (ops, drills)."""
    await stock.get_series(series_id)
    for result in await reconcile():
        if result.series_id == series_id:
            return ReconcileOut(
                series_id=series_id,
                ok=result.ok,
                backlog=result.backlog,
                lines=[line for _agrees, line in result.lines],
            )
    raise SERIES_NOT_FOUND()


async def list_series() -> list[AdminSeriesOut]:
    return [await admin_view(sid) for sid in reversed(await series_ids())]
