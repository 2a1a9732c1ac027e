"""The blind-box draw: the rules in Python, the decision in one Lua call
(`lua/draw.lua`), then the points spend, the draw log and (coupon prizes) the coupon in
one transaction.

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
points spent, and stock, the day's count and the guarantee counter given back
(`stock.give_back`); the member gets PRIZE_COUPON_UNAVAILABLE. Item prizes stay
`pending` for delivery or pickup."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from mall.blindbox import stock
from mall.blindbox.models import BlindBoxDraw, BlindBoxPrize, BlindBoxSeries
from mall.blindbox.schemas import CouponWon, DrawOut, PrizeWon
from mall.blindbox.stock import DAY_TTL_SECONDS, day_label
from mall.coupons import service as coupons_service
from mall.errors import ErrorCode, MallError
from mall.i18n import _, translate
from mall.kit import clock, tx
from mall.kit import stock as kit
from mall.members import service as members_service
from mall.points import service as points_service

if TYPE_CHECKING:
    from mall.coupons.models import Coupon

log = logging.getLogger("mall.blindbox")

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
PRIZE_COUPON_UNAVAILABLE = ErrorCode(
    "PRIZE_COUPON_UNAVAILABLE",
    409,
    _(
        "You drew the coupon prize {prize}, but it can no longer be issued; the draw was "
        "undone and no points were spent"
    ),
)

COUPON_PRIZE_NOTE = _("Your coupon is in your account; find it under My coupons.")
ITEM_PRIZE_NOTE = _("We will contact you to arrange delivery or pickup of your prize.")

R_LIMIT = 2**53  # r < 2**53 so Lua's doubles hold it exactly
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

# --- the table and the choice (pure) ---------------------------------------------------


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


# --- the decision in Redis ----------------------------------------------------------


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
    keys = stock.POOL.keys(series_id)
    label = day_label(day)
    return (
        [keys.meta, keys.stock, keys.pity, keys.day(label), keys.inflight, keys.seq],
        [member_id, r, draw_id, DAY_TTL_SECONDS, int(time.time()), label],
    )


def parse_decision(raw: str) -> Decision:
    """Read the draw script's answer (the kit's reply format)."""
    status, values = kit.parse(raw)
    parts = (status, *values)
    if status == "cap":
        return Decision(status, draws_today=int(parts[1]), cap=int(parts[2]))
    if status != kit.OK:
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
    raw = await kit.script(_SCRIPTS, "draw")(keys=keys, args=args)
    return parse_decision(raw)


# --- the draw ---------------------------------------------------------------------------


async def _undo_unrecorded(series_id: int, member_id: int, draw_id: str, label: str) -> None:
    """The draw was not recorded (spend refused, database error, cancelled): give it back.
    If even this fails the in-flight record stays and `sweep_in_flight` settles it."""
    try:
        if await BlindBoxDraw.filter(draw_id=draw_id).exists():
            await stock.settle(series_id, member_id, draw_id)  # the commit did land
        else:
            await stock.give_back(series_id, member_id, draw_id, label)
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
    series = await stock.get_series(series_id)
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
    keys, args = draw_args(series_id, member_id, r, draw_id, today)
    decision = parse_decision(
        await kit.decide(
            lambda: kit.script(_SCRIPTS, "draw")(keys=keys, args=args),
            lambda: stock.warm(series_id),
        )
    )
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
        # tx.transaction: a coupon prize's grant gives its Redis win back on its rollback
        async with tx.transaction():
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
        await stock.settle(series_id, member_id, draw_id)
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
