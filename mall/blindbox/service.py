"""Blind boxes: disclosure, the Lua draw, the points spend, the draw log, ops writes.

How a draw is decided (and disclosed):
- Each prize has a weight; a limited prize whose stock is gone counts as weight 0, so
  sold-out prizes drop out and the others' chances grow in proportion to their weights
  ("re-normalize"). The detail page computes the table from the same Redis state the
  Lua script reads, so what is shown is what is used.
- r = secrets.randbelow(2**53) is drawn in the app; the script takes x = r mod W
  (W = total effective weight) and walks the prizes in ascending id order until the
  running sum exceeds x. The bias of `mod` is at most W / 2**53 (< 1e-7 relative).
- Guarantee: the counter is the member's draws since their last prize of the
  guaranteed tier. When it reaches N-1 the draw is restricted to in-stock prizes of
  that tier (same r, same walk). A hit of the tier, forced or not, resets it to 0. If
  the whole tier is sold out the draw is normal and the counter keeps counting.
- Every draw row keeps r and the table, and `rederive(draw)` repeats the choice.

Coupon prizes: the coupon is issued (`coupons_service.grant`, once per draw id) in the
same transaction that spends the points and writes the draw log, as its last step, and
the draw is recorded as fulfilled with the coupon's id. If the template cannot issue
(sold out, inactive, ended, gone) the whole draw is undone like a refused spend: no
points spent, and stock, the day's count and the guarantee counter given back; the
member gets PRIZE_COUPON_UNAVAILABLE. Item prizes stay `pending` for delivery or pickup.

Redis keys, all under the hash tag `{bb:ID}`: conf (JSON of prizes, cap, guarantee),
stock (hash, limited prizes only), pity (hash by member), day:<yyyymmdd> (hash by
member), inflight (hash by member: a draw decided but not yet recorded; one per member
per series), seq (draw counter). The database is the record of truth: `warm` rebuilds
Redis from it, `reconcile` proves they agree."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from tortoise.expressions import F
from tortoise.functions import Count
from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.audit.service import Actor
from mall.blindbox.models import BlindBoxDraw, BlindBoxPrize, BlindBoxSeries
from mall.blindbox.schemas import (
    AdminPrizeOut,
    AdminSeriesOut,
    CouponWon,
    DrawOut,
    GuaranteeOut,
    MyStatus,
    PrizeDisclosure,
    PrizeIn,
    PrizePatch,
    PrizeWon,
    SeriesCard,
    SeriesDetail,
    SeriesIn,
    SeriesPatch,
    TierDisclosure,
)
from mall.config import get_settings
from mall.coupons import service as coupons_service
from mall.errors import ErrorCode, MallError
from mall.i18n import _, translate
from mall.kit import clock
from mall.members import service as members_service
from mall.points import service as points_service
from mall.redis import get_redis, script

if TYPE_CHECKING:
    from mall.coupons.models import Coupon

log = logging.getLogger("mall.blindbox")

SERIES_NOT_FOUND = ErrorCode("SERIES_NOT_FOUND", 404, _("This blind-box series does not exist"))
SERIES_NOT_ON_SALE = ErrorCode(
    "SERIES_NOT_ON_SALE", 409, _("This blind-box series is not open for drawing now")
)
SERIES_SOLD_OUT = ErrorCode("SERIES_SOLD_OUT", 409, _("Every prize in this series is sold out"))
DAILY_DRAW_CAP_REACHED = ErrorCode(
    "DAILY_DRAW_CAP_REACHED", 409, _("You have used all {cap} draws for today; come back tomorrow")
)
DRAW_IN_PROGRESS = ErrorCode(
    "DRAW_IN_PROGRESS", 409, _("Your previous draw is still being processed; try again shortly")
)
BIRTHDAY_REQUIRED = ErrorCode(
    "BIRTHDAY_REQUIRED", 403, _("Please add your birthday to your profile before drawing")
)
AGE_NOT_ALLOWED = ErrorCode(
    "AGE_NOT_ALLOWED", 403, _("This blind box is only for members aged {min_age} or older")
)
MINOR_NOT_ALLOWED = ErrorCode(
    "MINOR_NOT_ALLOWED", 403, _("This blind box is not available to members under 18")
)
PRIZE_NOT_FOUND = ErrorCode("PRIZE_NOT_FOUND", 404, _("This prize does not exist"))
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
PRIZE_COUPON_UNAVAILABLE = ErrorCode(
    "PRIZE_COUPON_UNAVAILABLE",
    409,
    _(
        "You drew the coupon prize {prize}, but it can no longer be issued; the draw was "
        "undone and no points were spent"
    ),
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
COUPON_PRIZE_NOTE = _("Your coupon is in your account; find it under My coupons.")
ITEM_PRIZE_NOTE = _("We will contact you to arrange delivery or pickup of your prize.")

R_LIMIT = 2**53  # r < 2**53 so Lua's doubles hold it exactly
DAY_TTL_SECONDS = 2 * 24 * 3600
# what the coupons domain answers when a template cannot issue one more coupon
_COUPON_CANNOT_ISSUE = frozenset(
    {
        "COUPON_SOLD_OUT",
        "COUPON_NOT_CLAIMABLE",
        "COUPON_CLAIM_NOT_STARTED",
        "COUPON_CLAIM_ENDED",
        "COUPON_TEMPLATE_NOT_FOUND",
    }
)
_SCRIPTS = "mall.blindbox"

# --- keys and pure helpers ---------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    series_id: int

    @property
    def tag(self) -> str:
        return f"{{bb:{self.series_id}}}"

    @property
    def conf(self) -> str:
        return f"{self.tag}:conf"

    @property
    def stock(self) -> str:
        return f"{self.tag}:stock"

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


def day_label(day: date) -> str:
    return day.strftime("%Y%m%d")


@dataclass(frozen=True)
class TableRow:
    prize_id: int
    tier: str
    weight: int  # effective weight: 0 while sold out


def effective_table(
    conf: Mapping[str, Any], stocks: Mapping[str, str | int | None]
) -> list[TableRow]:
    """The table the Lua script builds: weight x (stock > 0) for limited prizes."""
    rows = []
    for pid, weight, tier, limited in conf["prizes"]:
        left = stocks.get(str(pid))
        w = int(weight)
        if limited == 1 and (left is None or int(left) <= 0):
            w = 0
        rows.append(TableRow(int(pid), str(tier), w))
    return rows


def pick(r: int, rows: Sequence[TableRow], only_tier: str | None = None) -> int:
    """The prize chosen by r: x = r mod W, then the first prize whose running sum > x."""
    eligible = [row for row in rows if only_tier is None or row.tier == only_tier]
    total = sum(row.weight for row in eligible)
    if total <= 0:
        raise ValueError("no prize can be drawn")
    x = r % total
    acc = 0
    for row in eligible:
        acc += row.weight
        if x < acc:
            return row.prize_id
    raise AssertionError("unreachable")


def table_json(rows: Sequence[TableRow], *, forced: bool, tier: str | None) -> dict[str, Any]:
    return {
        "mode": "guarantee" if forced else "normal",
        "tier": tier if forced else None,
        "total": sum(row.weight for row in rows),
        "prizes": [[row.prize_id, row.tier, row.weight] for row in rows],
    }


def rederive(draw: BlindBoxDraw | Mapping[str, Any]) -> int:
    """Repeat a logged draw's choice from its random value and table (pure)."""
    if isinstance(draw, BlindBoxDraw):
        table: Mapping[str, Any] = draw.probability_table
        r = int(draw.random_value)
    else:
        table = draw["probability_table"]
        r = int(draw["random_value"])
    rows = [TableRow(int(pid), str(tier), int(w)) for pid, tier, w in table["prizes"]]
    only = str(table["tier"]) if table.get("mode") == "guarantee" else None
    return pick(r, rows, only)


def check_age(series: BlindBoxSeries, birthday: date | None, today: date) -> None:
    """SAMR 2023: no sales to under-8s; under-18s only where the series allows."""
    if birthday is None:
        raise BIRTHDAY_REQUIRED()
    age = members_service.age_on(birthday, today)
    min_age = max(series.min_age, 8)
    if age < min_age:
        raise AGE_NOT_ALLOWED(min_age=min_age)
    if age < 18 and not series.allow_minors:
        raise MINOR_NOT_ALLOWED()


def is_open(series: BlindBoxSeries) -> bool:
    now = clock.now()
    return (
        series.status == "on_sale"
        and (series.starts_at is None or series.starts_at <= now)
        and (series.ends_at is None or now < series.ends_at)
    )


# --- Redis: warm, decide, give back, settle ---------------------------------------


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


async def _drawn_counts(series_id: int, max_seq: int | None = None) -> dict[int, int]:
    query = BlindBoxDraw.filter(series_id=series_id)
    if max_seq is not None:
        query = query.filter(seq__lte=max_seq)
    rows = await query.group_by("prize_id").annotate(n=Count("id")).values("prize_id", "n")
    return {int(row["prize_id"]): int(row["n"]) for row in rows}


async def warm(series_id: int) -> bool:
    """Publish the series' prizes and rules to Redis and fill stock it lacks from the
    database. When Redis lost the series (conf missing) it also rebuilds the draw
    counter, guarantee counters and today's draw counts. True if it was cold."""
    series = await BlindBoxSeries.get_or_none(id=series_id)
    if series is None:
        return False
    prizes = await BlindBoxPrize.filter(series_id=series_id).order_by("id")
    keys = Keys(series_id)
    redis = get_redis()
    cold = not await redis.exists(keys.conf)
    drawn = await _drawn_counts(series_id)
    pipe = redis.pipeline(transaction=True)
    for prize in prizes:
        if prize.stock is not None:
            left = max(prize.stock - drawn.get(prize.id, 0), 0)
            pipe.hsetnx(keys.stock, str(prize.id), left)
    if cold:
        last_seq = await BlindBoxDraw.filter(series_id=series_id).order_by("-seq").first()
        pipe.setnx(keys.seq, last_seq.seq if last_seq else 0)
        if series.guarantee_every and series.guarantee_tier:
            pity: dict[int, int] = {}
            rows = (
                await BlindBoxDraw.filter(series_id=series_id)
                .order_by("id")
                .values_list("member_id", "pity_after")
            )
            for member_id, after in rows:
                pity[int(member_id)] = int(after)
            for member_id, after in pity.items():
                pipe.hsetnx(keys.pity, str(member_id), after)
        today = clock.today()
        counts = (
            await BlindBoxDraw.filter(series_id=series_id, business_day=today)
            .group_by("member_id")
            .annotate(n=Count("id"))
            .values("member_id", "n")
        )
        day_key = keys.day(day_label(today))
        for row in counts:
            pipe.hsetnx(day_key, str(row["member_id"]), int(row["n"]))
        if counts:
            pipe.expire(day_key, DAY_TTL_SECONDS)
    pipe.set(keys.conf, json.dumps(_conf(series, prizes), separators=(",", ":")))
    await pipe.execute()
    if cold:
        log.info("blind-box series %s warmed into Redis", series_id)
    return cold


@dataclass(frozen=True)
class Decision:
    status: str  # ok | cold | sold_out | cap | busy
    prize_id: int = 0
    tier: str = ""
    pity_before: int = 0
    pity_after: int = 0
    forced: bool = False
    seq: int = 0
    draws_today: int = 0
    cap: int = 0
    table: tuple[TableRow, ...] = ()


def draw_args(
    series_id: int, member_id: int, r: int, draw_id: str, day: date
) -> tuple[list[str], list[str | int]]:
    keys = Keys(series_id)
    label = day_label(day)
    return (
        [keys.conf, keys.stock, keys.pity, keys.day(label), keys.inflight, keys.seq],
        [member_id, r, draw_id, DAY_TTL_SECONDS, int(time.time()), label],
    )


def parse_decision(raw: str) -> Decision:
    """Read the draw script's answer (one `|`-separated string)."""
    parts = str(raw).split("|")
    status = parts[0]
    if status == "cap":
        return Decision(status, draws_today=int(parts[1]), cap=int(parts[2]))
    if status != "ok":
        return Decision(status)
    return Decision(
        status,
        prize_id=int(parts[1]),
        tier=parts[2],
        pity_before=int(parts[3]),
        pity_after=int(parts[4]),
        forced=parts[5] == "1",
        seq=int(parts[6]),
        draws_today=int(parts[7]),
        table=tuple(
            TableRow(int(pid), tier, int(w))
            for pid, tier, w in (item.split(":") for item in parts[9].split(","))
        ),
    )


async def decide(
    series_id: int, member_id: int, r: int, draw_id: str, day: date | None = None
) -> Decision:
    """One Lua call: cap, in-flight guard, effective weights, guarantee, pick, stock."""
    if not 0 <= r < R_LIMIT:
        raise ValueError("r out of range")
    keys, args = draw_args(series_id, member_id, r, draw_id, day or clock.today())
    raw = await script(_SCRIPTS, "draw")(keys=keys, args=args)
    return parse_decision(raw)


async def give_back(series_id: int, member_id: int, draw_id: str, label: str) -> bool:
    """Undo an unrecorded draw: stock, the day's count and the guarantee counter."""
    keys = Keys(series_id)
    done = await script(_SCRIPTS, "give_back")(
        keys=[keys.stock, keys.pity, keys.day(label), keys.inflight], args=[member_id, draw_id]
    )
    return bool(done)


async def settle(series_id: int, member_id: int, draw_id: str) -> bool:
    done = await script(_SCRIPTS, "settle")(
        keys=[Keys(series_id).inflight], args=[member_id, draw_id]
    )
    return bool(done)


# --- shopper: disclosure and draw ---------------------------------------------------


async def _live_state(series_id: int) -> tuple[dict[str, Any], dict[str, str]]:
    """conf and stock in one snapshot (warming the series first if Redis lacks it)."""
    keys = Keys(series_id)
    redis = get_redis()
    for _attempt in range(2):
        pipe = redis.pipeline(transaction=True)
        pipe.get(keys.conf)
        pipe.hgetall(keys.stock)
        raw, stocks = await pipe.execute()
        if raw is not None:
            return json.loads(raw), stocks
        await warm(series_id)
    raise RuntimeError(f"blind-box series {series_id} could not be warmed")


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
        conf, stocks = await _live_state(series.id)
        cards.append(_card(series, effective_table(conf, stocks)))
    return cards


async def _series(series_id: int) -> BlindBoxSeries:
    series = await BlindBoxSeries.get_or_none(id=series_id)
    if series is None:
        raise SERIES_NOT_FOUND()
    return series


async def my_status(series: BlindBoxSeries, member_id: int) -> MyStatus:
    keys = Keys(series.id)
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
    series = await _series(series_id)
    if not _on_offer(series):
        raise SERIES_NOT_FOUND()
    prizes = {p.id: p for p in await BlindBoxPrize.filter(series_id=series_id)}
    conf, stocks = await _live_state(series_id)
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


async def _undo_unrecorded(series_id: int, member_id: int, draw_id: str, label: str) -> None:
    """The draw was not recorded (spend refused, database error, cancelled): give it back.
    If even this fails the in-flight record stays and `sweep_in_flight` settles it."""
    try:
        if await BlindBoxDraw.filter(draw_id=draw_id).exists():
            await settle(series_id, member_id, draw_id)  # the commit did land
        else:
            await give_back(series_id, member_id, draw_id, label)
    except Exception:
        log.exception("draw %s left in flight for the sweeper", draw_id)


async def _issue_coupon(member_id: int, prize: BlindBoxPrize, draw_id: str) -> Coupon:
    """One coupon of the prize's template, once per draw; joins the draw's transaction."""
    try:
        if prize.coupon_template_id is None:
            raise coupons_service.TEMPLATE_NOT_FOUND()
        return await coupons_service.grant(
            member_id,
            prize.coupon_template_id,
            grant_key=f"blindbox:{draw_id}",
            source="blind_box",
        )
    except MallError as exc:
        if exc.code not in _COUPON_CANNOT_ISSUE:
            raise
        log.warning(
            "coupon prize %s (template %s) cannot issue (%s); draw %s undone",
            prize.id,
            prize.coupon_template_id,
            exc.code,
            draw_id,
        )
        raise PRIZE_COUPON_UNAVAILABLE(prize=prize.name) from exc


async def _coupon_won(coupon: Coupon) -> CouponWon:
    template = await coupons_service.get_template(coupon.template_id)
    return CouponWon(
        id=coupon.id,
        template_id=coupon.template_id,
        name=template.name,
        valid_from=coupon.valid_from,
        expires_at=coupon.expires_at,
        last_valid_day=coupons_service.last_valid_day(coupon.expires_at),
    )


async def draw(member_id: int, series_id: int, *, check_balance_first: bool = True) -> DrawOut:
    """Draw once: rules in Python, the decision in one Lua call, then the points spend,
    the draw log and (coupon prizes) the coupon in one transaction; a failed spend or a
    coupon that cannot be issued gives everything back.

    `check_balance_first` refuses a short balance before touching Redis (cheap, and the
    stock never flickers); the spend inside the transaction is what decides."""
    series = await _series(series_id)
    if not is_open(series):
        raise SERIES_NOT_ON_SALE()
    member = await members_service.get_member(member_id)
    today = clock.today()
    check_age(series, member.birthday, today)
    cost = series.points_cost
    if check_balance_first:
        balance = await points_service.get_balance(member_id)
        if balance < cost:
            raise points_service.NOT_ENOUGH_POINTS(balance=balance, cost=cost)

    draw_id = secrets.token_hex(16)
    r = secrets.randbelow(R_LIMIT)
    decision = await decide(series_id, member_id, r, draw_id, today)
    if decision.status == "cold":
        await warm(series_id)
        decision = await decide(series_id, member_id, r, draw_id, today)
    if decision.status == "sold_out":
        raise SERIES_SOLD_OUT()
    if decision.status == "cap":
        raise DAILY_DRAW_CAP_REACHED(cap=decision.cap)
    if decision.status == "busy":
        raise DRAW_IN_PROGRESS()
    if decision.status != "ok":
        raise RuntimeError(f"unexpected draw answer {decision.status!r}")

    label = day_label(today)
    entry_key = f"blindbox:{draw_id}"
    coupon: Coupon | None = None
    try:
        prize = await BlindBoxPrize.get_or_none(id=decision.prize_id, series_id=series_id)
        if prize is None:
            raise PRIZE_NOT_FOUND()
        async with in_transaction():
            entry = await points_service.spend(
                member_id,
                cost,
                idempotency_key=entry_key,
                reason="blindbox.draw",
                reference=f"blindbox:{series_id}:{draw_id}",
            )
            row = await BlindBoxDraw.create(
                draw_id=draw_id,
                seq=decision.seq,
                series_id=series_id,
                member_id=member_id,
                prize_id=prize.id,
                prize_name=prize.name,
                tier=decision.tier,
                value_fen=prize.value_fen,
                points_cost=cost,
                random_value=r,
                probability_table=table_json(
                    decision.table, forced=decision.forced, tier=series.guarantee_tier
                ),
                guaranteed=decision.forced,
                pity_before=decision.pity_before,
                pity_after=decision.pity_after,
                points_entry_key=entry_key,
                business_day=today,
            )
            if prize.kind == "coupon":
                # last in the transaction: nothing after the coupon's Redis win can fail
                # but this one-row update and the commit
                coupon = await _issue_coupon(member_id, prize, draw_id)
                row.fulfilment_status = "done"
                row.coupon_id = coupon.id
                await row.save(update_fields=["fulfilment_status", "coupon_id"])
    except BaseException:
        await _undo_unrecorded(series_id, member_id, draw_id, label)
        raise
    try:
        await settle(series_id, member_id, draw_id)
    except Exception:  # recorded; the sweeper releases the in-flight slot
        log.exception("could not settle draw %s", draw_id)
    return DrawOut(
        draw_id=draw_id,
        seq=row.seq,
        series_id=series_id,
        prize=PrizeWon(
            id=prize.id,
            name=prize.name,
            image=prize.image,
            kind=prize.kind,
            tier=prize.tier,
            value_fen=prize.value_fen,
            coupon_template_id=prize.coupon_template_id,
        ),
        guaranteed=decision.forced,
        pity_before=decision.pity_before,
        pity_after=decision.pity_after,
        points_spent=cost,
        points_balance=int(entry.balance_after),
        draws_today=decision.draws_today,
        fulfilment_status=row.fulfilment_status,
        fulfilment_note=translate(COUPON_PRIZE_NOTE if coupon is not None else ITEM_PRIZE_NOTE),
        coupon=None if coupon is None else await _coupon_won(coupon),
        created_at=row.created_at,
    )


async def my_draws(
    member_id: int, series_id: int | None, cursor: str | None, size: int
) -> tuple[list[BlindBoxDraw], str | None]:
    from mall.kit.pagination import cursor_page

    query = BlindBoxDraw.filter(member_id=member_id)
    if series_id is not None:
        query = query.filter(series_id=series_id)
    return await cursor_page(query, cursor, size)


# --- in-flight sweeper and reconciliation -------------------------------------------


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


async def series_ids() -> list[int]:
    ids = await BlindBoxSeries.all().order_by("id").values_list("id", flat=True)
    return [int(i) for i in ids]  # type: ignore[call-overload]


async def sweep_in_flight(older_than_seconds: float | None = None) -> int:
    """Settle draws left in flight: recorded ones (their request died before releasing
    the slot) are released at once, unrecorded ones older than the threshold (their
    request crashed before the database) are given back. Returns how many."""
    if older_than_seconds is None:
        older_than_seconds = get_settings().blindbox_inflight_stale_seconds
    cutoff = time.time() - older_than_seconds
    redis = get_redis()
    settled = 0
    for sid in await series_ids():
        for member, record in (await redis.hgetall(Keys(sid).inflight)).items():
            stale = parse_in_flight(str(member), str(record))
            if await BlindBoxDraw.filter(draw_id=stale.draw_id).exists():
                done = await settle(sid, stale.member_id, stale.draw_id)
            elif stale.since > cutoff:
                continue
            else:
                done = await give_back(sid, stale.member_id, stale.draw_id, stale.label)
                if done:
                    log.warning("gave back unrecorded draw %s (series %s)", stale.draw_id, sid)
            settled += int(done)
    return settled


@dataclass
class SeriesReconciliation:
    series_id: int
    lines: list[tuple[bool, str]]  # (agrees, what was compared)

    @property
    def ok(self) -> bool:
        return all(agrees for agrees, _line in self.lines)


async def _reconcile_once(series: BlindBoxSeries) -> SeriesReconciliation:
    keys = Keys(series.id)
    pipe = get_redis().pipeline(transaction=True)
    pipe.get(keys.conf)
    pipe.hgetall(keys.stock)
    pipe.hgetall(keys.inflight)
    pipe.get(keys.seq)
    conf, stocks, inflight, seq_raw = await pipe.execute()
    if conf is None:
        return SeriesReconciliation(series.id, [(True, f"series {series.id}: not in Redis yet")])
    max_seq = int(seq_raw or 0)
    # draws decided up to the snapshot: recorded ones, plus in-flight ones not yet recorded
    drawn = await _drawn_counts(series.id, max_seq)
    pending: dict[int, int] = {}
    flights = [parse_in_flight(str(m), str(rec)) for m, rec in inflight.items()]
    recorded = (
        set(
            await BlindBoxDraw.filter(draw_id__in=[f.draw_id for f in flights]).values_list(
                "draw_id", flat=True
            )
        )
        if flights
        else set()
    )
    for flight in flights:
        if flight.draw_id not in recorded:
            pending[flight.prize_id] = pending.get(flight.prize_id, 0) + 1
    lines: list[tuple[bool, str]] = []
    for prize in await BlindBoxPrize.filter(series_id=series.id).order_by("id"):
        if prize.stock is None:
            continue
        raw = stocks.get(str(prize.id))
        if raw is None:
            lines.append((False, f"series {series.id} prize {prize.id}: no stock in Redis"))
            continue
        left = int(raw)
        used = drawn.get(prize.id, 0)
        flying = pending.get(prize.id, 0)
        line = (
            f"series {series.id} prize {prize.id}: redis {left} + drawn {used}"
            f" + in flight {flying} = {left + used + flying}, stock {prize.stock}"
        )
        lines.append((left >= 0 and left + used + flying == prize.stock, line))
    stale = [f for f in flights if f.since < time.time() - 60]
    if stale:
        lines.append((True, f"series {series.id}: {len(stale)} draws in flight for over a minute"))
    return SeriesReconciliation(series.id, lines)


async def reconcile(retries: int = 3) -> list[SeriesReconciliation]:
    """Redis stock + recorded draws + unrecorded in-flight draws == stock, per limited
    prize. A mismatch is re-checked a few times (an ops stock change touches Redis
    and the database one after the other) before it is reported."""
    results = []
    for series in await BlindBoxSeries.all().order_by("id"):
        result = await _reconcile_once(series)
        for _attempt in range(retries - 1):
            if result.ok:
                break
            await asyncio.sleep(0.2)
            result = await _reconcile_once(series)
        results.append(result)
    return results


# --- ops: series, prizes, stock, draw log -------------------------------------------


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
        series = await _series(series_id)
        if await BlindBoxDraw.filter(series_id=series_id).exists():
            raise SERIES_HAS_DRAWS()
        await BlindBoxPrize.filter(series_id=series_id).delete()
        await series.delete()
        await audit_service.record(
            staff, "blindbox.series.delete", f"blindbox:{series_id}", name=series.name
        )
    keys = Keys(series_id)
    await get_redis().delete(keys.conf, keys.stock, keys.pity, keys.seq, keys.inflight)


async def _prize(series_id: int, prize_id: int) -> BlindBoxPrize:
    prize = await BlindBoxPrize.get_or_none(id=prize_id, series_id=series_id)
    if prize is None:
        raise PRIZE_NOT_FOUND()
    return prize


async def add_prize(staff: Actor, series_id: int, data: PrizeIn) -> BlindBoxPrize:
    await _check_coupon_template(data.coupon_template_id)
    async with in_transaction():
        await _series(series_id)
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
    await get_redis().hdel(Keys(series_id).stock, str(prize_id))


async def adjust_stock(
    staff: Actor, series_id: int, prize_id: int, delta: int, reason: str
) -> BlindBoxPrize:
    """Add or take away units: Redis decides (never below zero), then the database total
    moves by the same delta with an audit entry; a failed write undoes the Redis step."""
    prize = await _prize(series_id, prize_id)
    if prize.stock is None:
        raise PRIZE_UNLIMITED()
    keys = Keys(series_id)
    adjust = script(_SCRIPTS, "adjust_stock")
    answer = await adjust(keys=[keys.stock], args=[prize_id, delta])
    if answer[0] == "missing":
        await warm(series_id)
        answer = await adjust(keys=[keys.stock], args=[prize_id, delta])
    if answer[0] == "short":
        raise STOCK_TOO_LOW(left=int(answer[1]), wanted=-delta)
    if answer[0] != "ok":
        raise RuntimeError(f"unexpected stock answer {answer!r}")
    try:
        async with in_transaction():
            await BlindBoxPrize.filter(id=prize_id).update(stock=F("stock") + delta)
            await audit_service.record(
                staff,
                "blindbox.prize.stock",
                f"blindbox:{series_id}:prize:{prize_id}",
                delta=delta,
                reason=reason,
                redis_left_after=int(answer[1]),
            )
    except BaseException:
        undo = await adjust(keys=[keys.stock], args=[prize_id, -delta])
        if undo[0] != "ok":
            log.error("stock adjust of prize %s not undone in Redis: %r", prize_id, undo)
        raise
    await prize.refresh_from_db()
    return prize


async def admin_view(series_id: int) -> AdminSeriesOut:
    series = await _series(series_id)
    prizes = await BlindBoxPrize.filter(series_id=series_id).order_by("id")
    _conf_json, stocks = await _live_state(series_id)
    drawn = await _drawn_counts(series_id)
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


async def list_series() -> list[AdminSeriesOut]:
    return [await admin_view(sid) for sid in reversed(await series_ids())]


async def list_draws(
    series_id: int, cursor: str | None, size: int, member_id: int | None = None
) -> tuple[list[BlindBoxDraw], str | None]:
    from mall.kit.pagination import cursor_page

    await _series(series_id)
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
    await _series(series_id)
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
