"""The blind-box draw, answered from the Redis decision: the rules, the choice, the
stock and the draw's record are one Lua call (`lua/draw.lua`), which appends the draw
to the series' stream and keeps the answer under the member's Idempotency-Key. The
member is told the prize at once with the draw's reservation id, status `pending`;
the consumer (`draws.py`) spends the points, writes the draw log and grants the prize
in batches, or releases the draw with a reason (its unit goes back once).

No database on the common path: the series' terms (cost, window, age rule) travel in
the Lua's conf, the member's birthday is read once per process (it is set once and
never changes, `members_service.update_profile`) and the prizes' display data comes
from a short in-process cache.

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
- Every draw row keeps r and the table, and `rederive(draw)` repeats the choice."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from mall.blindbox import stock
from mall.blindbox.models import BlindBoxDraw, BlindBoxPrize, BlindBoxSeries
from mall.blindbox.schemas import DrawOut, PrizeWon
from mall.blindbox.stock import DAY_TTL_SECONDS, SERIES_NOT_FOUND, day_label
from mall.config import get_settings
from mall.errors import ErrorCode
from mall.i18n import _, translate
from mall.kit import clock
from mall.kit import stock as kit
from mall.kit.cache import Batching, Refreshing
from mall.members import service as members_service
from mall.redis import auto_pipeline, get_redis

log = logging.getLogger("mall.blindbox")

SERIES_NOT_ON_SALE = ErrorCode(
    "SERIES_NOT_ON_SALE", 409, _("This blind-box series is not open for drawing now")
)
SERIES_SOLD_OUT = ErrorCode("SERIES_SOLD_OUT", 409, _("Every prize in this series is sold out"))
DAILY_DRAW_CAP_REACHED = ErrorCode(
    "DAILY_DRAW_CAP_REACHED", 409, _("You have used all {cap} draws for today; come back tomorrow")
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

PENDING_NOTE = _("Your draw is being recorded; its status shows it in a moment.")

R_LIMIT = 2**53  # r < 2**53 so Lua's doubles hold it exactly
PRIZE_CACHE_SECONDS = 5.0
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
    """The draw script's answer. `status`: ok | cold | closed | birthday | age | minor |
    sold_out | cap. `table` only on a fresh draw (a replay answers the stored part)."""

    status: str
    rid: str = ""
    prize_id: int = 0
    tier: str = ""
    pity_before: int = 0
    pity_after: int = 0
    forced: bool = False
    seq: int = 0
    draws_today: int = 0
    cost: int = 0
    member_id: int = 0
    cap: int = 0
    min_age: int = 0
    table: tuple[TableRow, ...] = ()


def draw_args(
    series_id: int,
    member_id: int,
    r: int,
    rid: str,
    day: date,
    *,
    now_ms: int,
    idem: str = "",
    age: int = -1,
) -> tuple[list[str], list[str | int]]:
    keys = stock.POOL.keys(series_id)
    label = day_label(day)
    return (
        [
            keys.meta,
            keys.stock,
            keys.pity,
            keys.last,
            keys.day(label),
            keys.seq,
            keys.draws,
            keys.res,
            keys.idem(label),
            keys.idem(day_label(day - timedelta(days=1))),
        ],
        [member_id, r, rid, DAY_TTL_SECONDS, now_ms, label, idem, age],
    )


def parse_decision(raw: str, *, table: bool = True) -> Decision:
    """Read the draw script's answer (the kit's reply format); `table=False` leaves out
    the table of effective weights (the request's answer never shows it, and a series of
    many prizes makes it the longest part to read)."""
    status, v = kit.parse(raw)
    if status == "cap":
        return Decision(status, draws_today=int(v[0]), cap=int(v[1]))
    if status == "age":
        return Decision(status, min_age=int(v[0]))
    if status != kit.OK:
        return Decision(status)
    rows: tuple[TableRow, ...] = ()
    if table and len(v) > 11 and v[11]:
        rows = tuple(
            TableRow(int(pid), tier, int(w))
            for pid, tier, w in (item.split(":") for item in v[11].split(","))
        )
    return Decision(
        status,
        rid=v[0],
        prize_id=int(v[1]),
        tier=v[2],
        pity_before=int(v[3]),
        pity_after=int(v[4]),
        forced=v[5] == "1",
        seq=int(v[6]),
        draws_today=int(v[7]),
        cost=int(v[8]),
        member_id=int(v[9]),
        table=rows,
    )


def new_reservation(series_id: int) -> str:
    """ "<series id>-<hex>": a reservation names its series (the draw's keys)."""
    return f"{series_id}-{secrets.token_hex(12)}"


def series_of_reservation(reservation_id: str) -> int | None:
    head, sep, tail = reservation_id.partition("-")
    if not sep or not head.isdigit() or len(head) > 18 or not tail:
        return None
    return int(head)


async def decide(
    series_id: int,
    member_id: int,
    r: int,
    rid: str,
    day: date | None = None,
    *,
    idem: str = "",
    age: int = 30,
) -> Decision:
    """One Lua call: window, age rule, cap, effective weights, guarantee, pick, stock, the
    stream entry (tests and drills; `draw` is the request's)."""
    if not 0 <= r < R_LIMIT:
        raise ValueError("r out of range")
    keys, args = draw_args(
        series_id,
        member_id,
        r,
        rid,
        day or clock.today(),
        now_ms=int(clock.now().timestamp() * 1000),
        idem=idem,
        age=age,
    )
    raw = await kit.script(_SCRIPTS, "draw")(keys=keys, args=args)
    return parse_decision(raw)


# --- what the request reads without the database ------------------------------------

# member -> birthday: set once and never changed, so a known one never goes stale
_birthdays: dict[int, date] = {}
_BIRTHDAYS_MAX = 200_000


def forget_local_state() -> None:
    """Drop what this process remembers (tests; after ops change prizes)."""
    _birthdays.clear()
    _prizes.forget()
    stock.forget_local_state()


_NO_MEMBER = date.min  # (what a read of a member that does not exist answers)
_birthday_reads: Batching[int, date | None] = Batching(members_service.birthdays)


async def age_of(member_id: int, today: date) -> int:
    """The member's age in years today; -1 with no birthday on file. One database read
    per member per process (shared by the reads of one tick); no birthday yet is read
    again next time."""
    birthday = _birthdays.get(member_id)
    if birthday is None:
        # a burst's first draws read their members' birthdays together
        birthday = await _birthday_reads.get(member_id, _NO_MEMBER)
        if birthday is _NO_MEMBER:
            raise members_service.MEMBER_NOT_FOUND()
        if birthday is None:
            return -1
        if len(_birthdays) >= _BIRTHDAYS_MAX:
            _birthdays.clear()
        _birthdays[member_id] = birthday
    return members_service.age_on(birthday, today)


def prize_won(prize: BlindBoxPrize) -> PrizeWon:
    return PrizeWon(
        id=prize.id,
        name=prize.name,
        image=prize.image,
        kind=prize.kind,
        tier=prize.tier,
        value_fen=prize.value_fen,
        coupon_template_id=prize.coupon_template_id,
    )


async def _load_prizes(series_id: int) -> dict[int, PrizeWon]:
    return {p.id: prize_won(p) for p in await BlindBoxPrize.filter(series_id=series_id)}


# series -> prize id -> what the answer shows: read at most every PRIZE_CACHE_SECONDS per
# process, never by a burst's requests
_prizes: Refreshing[int, dict[int, PrizeWon]] = Refreshing(_load_prizes, PRIZE_CACHE_SECONDS)


async def shown_prize(series_id: int, prize_id: int, tier: str) -> PrizeWon:
    """What the answer shows of a prize, from the series' copy (read again at once for a
    prize it does not know yet)."""
    prizes = await _prizes.get(series_id)
    if prize_id not in prizes:
        prizes = await _prizes.reload(series_id)
    shown = prizes.get(prize_id)
    if shown is None:  # deleted since the decision: the consumer releases the draw
        shown = PrizeWon(
            id=prize_id, name="", image="", kind="item", tier=tier, value_fen=0,
            coupon_template_id=None,
        )  # fmt: skip
    return shown


# --- the draw ---------------------------------------------------------------------------


def pending_out(series_id: int, decision: Decision, prize: PrizeWon) -> DrawOut:
    return DrawOut(
        draw_id=decision.rid,
        status="pending",
        message=translate(PENDING_NOTE),
        series_id=series_id,
        seq=decision.seq,
        prize=prize,
        guaranteed=decision.forced,
        pity_before=decision.pity_before,
        pity_after=decision.pity_after,
        points_cost=decision.cost,
        draws_today=decision.draws_today,
    )


async def _answer(series_id: int, decision: Decision) -> DrawOut:
    return pending_out(
        series_id, decision, await shown_prize(series_id, decision.prize_id, decision.tier)
    )


async def _prior_answer(series_id: int, idem: str) -> str | None:
    keys = stock.POOL.keys(series_id)
    today = clock.today()
    async with get_redis().pipeline(transaction=False) as pipe:
        for day in (today, today - timedelta(days=1)):
            pipe.hget(keys.idem(day_label(day)), idem)
        found = await pipe.execute()
    return next((str(answer) for answer in found if answer), None)


async def draw(member_id: int, series_id: int, idempotency_key: str | None = None) -> DrawOut:
    """Draw once: one Lua call decides and records the draw; the answer is the prize
    and the reservation, `pending` until the consumer persists it. A retry with the
    same Idempotency-Key answers the same draw. A sold-out series remembered in this
    process is answered without Redis (or with one HGET to replay a keyed draw)."""
    idem = f"{member_id}:{idempotency_key}" if idempotency_key else ""
    until = stock.sold_out_until.get(series_id)
    if until is not None:
        if until > time.monotonic():
            if idem:
                prior = await _prior_answer(series_id, idem)
                if prior:
                    return await _answer(series_id, parse_decision(prior, table=False))
            raise SERIES_SOLD_OUT()
        stock.sold_out_until.pop(series_id, None)
    unknown = stock.unknown_until.get(series_id)
    if unknown is not None and unknown > time.monotonic():
        raise SERIES_NOT_FOUND()

    today = clock.today()
    keys, args = draw_args(
        series_id,
        member_id,
        secrets.randbelow(R_LIMIT),
        new_reservation(series_id),
        today,
        now_ms=int(clock.now().timestamp() * 1000),
        idem=idem,
        age=await age_of(member_id, today),
    )
    run = kit.script(_SCRIPTS, "draw")
    pipeline = auto_pipeline()
    decision = parse_decision(
        await kit.decide(
            lambda: pipeline.run(run, keys, args), lambda: stock.warm_if_cold(series_id)
        ),
        table=False,
    )
    match decision.status:
        case kit.OK:
            return await _answer(series_id, decision)
        case "closed":
            raise SERIES_NOT_ON_SALE()
        case "birthday":
            raise BIRTHDAY_REQUIRED()
        case "age":
            raise AGE_NOT_ALLOWED(min_age=decision.min_age)
        case "minor":
            raise MINOR_NOT_ALLOWED()
        case "sold_out":
            seconds = get_settings().blindbox_sold_out_cache_seconds
            stock.sold_out_until[series_id] = time.monotonic() + seconds
            raise SERIES_SOLD_OUT()
        case "cap":
            raise DAILY_DRAW_CAP_REACHED(cap=decision.cap)
    raise RuntimeError(f"blind-box draw script answered {decision.status!r}")


def answer_json(out: DrawOut) -> bytes:
    return out.model_dump_json().encode()
