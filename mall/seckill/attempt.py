"""The flash-sale decision: one attempt, one Lua call (`lua/attempt.lua`) on the item's
keys. A win is appended to the item's stream in the same atomic step (winners.py turns
it into an order); losers never touch the database, and a sold-out item remembered in
this process is answered without Redis.

Fair sales: a session's eligibility rules (phone bound, joined before, level at least,
not flagged, booked) are warmed into the item's meta; the member's level, phone and join
time come from the access token's claims (ARGV), flagged and booked members from sets
under the item's tag. The one Lua call decides them too: no database read, no extra
round trip, and a rule changed by ops is seen by every process at once.

Time: the attempt window is checked against `kit.clock` passed into the Lua (ARGV), not
Redis TIME, so tests can move time; app hosts must keep NTP-synced clocks."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, cast

from mall.config import get_settings
from mall.errors import TOKEN_EXPIRED, ErrorCode, MallError
from mall.i18n import _, get_locale, translate
from mall.kit import clock
from mall.kit import stock as kit
from mall.redis import auto_pipeline
from mall.seckill import stock
from mall.seckill.schemas import AttemptOut, AttemptResult
from mall.seckill.stock import SECKILL_ITEM_NOT_FOUND, key

# What the member is told for each answer of an attempt (the script's statuses).
ANSWER_MESSAGES = {
    "won": _("You got it! Your order is being confirmed"),
    "sold_out": _("Sold out"),
    "limit_reached": _("You have reached the limit for this item"),
    "not_started": _("This flash sale has not started yet"),
    "ended": _("This flash sale has ended"),
    "rate_limited": _("Too many taps; please try again in a moment"),
}


SECKILL_PHONE_REQUIRED = ErrorCode(
    "SECKILL_PHONE_REQUIRED", 403, _("Bind your phone number to take part in this flash sale")
)
SECKILL_JOINED_TOO_LATE = ErrorCode(
    "SECKILL_JOINED_TOO_LATE", 403, _("This flash sale is for members who joined before {date}")
)
SECKILL_LEVEL_TOO_LOW = ErrorCode(
    "SECKILL_LEVEL_TOO_LOW", 403, _("This flash sale is for members of level {level} and above")
)
SECKILL_MEMBER_FLAGGED = ErrorCode(
    "SECKILL_MEMBER_FLAGGED",
    403,
    _("Your account cannot take part in this flash sale; please contact customer service"),
)
SECKILL_BOOKING_REQUIRED = ErrorCode(
    "SECKILL_BOOKING_REQUIRED", 403, _("This flash sale is only for members who booked it")
)


def ineligible(rule: str, value: str = "") -> MallError:
    """The error for a failed fair-sale rule (`value`: the sale's threshold, as warmed)."""
    if rule == "phone":
        return SECKILL_PHONE_REQUIRED()
    if rule == "joined":
        moment = datetime.fromtimestamp(int(value or 0) / 1000, UTC)
        return SECKILL_JOINED_TOO_LATE(date=moment.astimezone(clock.SHANGHAI).date().isoformat())
    if rule == "level":
        return SECKILL_LEVEL_TOO_LOW(level=int(value or 0))
    if rule == "flagged":
        return SECKILL_MEMBER_FLAGGED()
    return SECKILL_BOOKING_REQUIRED()


def claim_args(claims: dict[str, Any]) -> list[Any]:
    """The token claims the attempt Lua reads (ARGV 7-9); '' when the token has none
    (issued before claims existed: a sale with rules answers TOKEN_EXPIRED, the client
    refreshes and gets them)."""
    level, phone, joined = claims.get("lv"), claims.get("ph"), claims.get("jn")
    if not isinstance(level, int) or not isinstance(phone, int) or not isinstance(joined, int):
        return ["", "", ""]
    return [level, 1 if phone else 0, joined * 1000]


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


_won_halves: dict[str, tuple[bytes, bytes]] = {}
_PLAIN_ID = re.compile(r"[0-9A-Za-z-]{1,64}")
_MARK = "0-reservation-id-here"


def answer_json(answer: Attempt) -> bytes:
    """The answer as JSON; answers without a reservation are cached per locale, and a
    win is its locale's cached answer around the reservation id (the bytes pydantic
    writes, without building the model for every win)."""
    if answer.reservation_id is None and answer.retry_after_ms is None:
        cache_key = (answer.result, get_locale())
        body = _answer_cache.get(cache_key)
        if body is None:
            body = answer.out().model_dump_json().encode()
            _answer_cache[cache_key] = body
        return body
    rid = answer.reservation_id
    if answer.result == "won" and rid is not None and answer.retry_after_ms is None:
        if _PLAIN_ID.fullmatch(rid):  # (ours always are: nothing to escape)
            locale = get_locale()
            halves = _won_halves.get(locale)
            if halves is None:
                whole = Attempt("won", _MARK).out().model_dump_json().encode()
                head, _mark, tail = whole.partition(_MARK.encode())
                halves = _won_halves[locale] = (head, tail)
            return halves[0] + rid.encode() + halves[1]
    return answer.out().model_dump_json().encode()


def item_of_reservation(reservation_id: str) -> int | None:
    head, sep, _tail = reservation_id.partition("-")
    if not sep or not head.isdigit() or len(head) > 18:
        return None
    return int(head)


@lru_cache(maxsize=4096)
def _item_keys(item_id: int) -> tuple[str, ...]:
    """attempt.lua's KEYS but the member's rate-limit key: meta, stock, buyers, idem,
    wins, res, booked, flagged."""
    keys = stock.POOL.keys(item_id)
    return (
        keys.meta,
        keys.stock,
        keys.buyers,
        keys("idem"),
        keys("wins"),
        keys("res"),
        keys("booked"),
        keys("flagged"),
    )


_NO_CLAIMS: dict[str, Any] = {}


async def attempt(
    item_id: int,
    member_id: int,
    idempotency_key: str | None = None,
    claims: dict[str, Any] = _NO_CLAIMS,
) -> Attempt:
    """Try to win one unit. Exactly one Lua call decides (fair-sale rules included, from
    the token's `claims`); a sold-out item remembered in this process is answered without
    Redis (or with one HGET to replay a keyed win). An ineligible member gets a 403
    SECKILL_* error."""
    idem = f"{member_id}:{idempotency_key}" if idempotency_key else ""
    until = stock.sold_out_until.get(item_id)
    if until is not None:
        if until > time.monotonic():
            if idem:
                prior = await auto_pipeline().call("HGET", key(item_id, "idem"), idem)
                if prior:
                    return Attempt("won", str(prior))
            return SOLD_OUT
        stock.sold_out_until.pop(item_id, None)
    unknown = stock.unknown_until.get(item_id)
    if unknown is not None and unknown > time.monotonic():
        raise SECKILL_ITEM_NOT_FOUND()

    settings = get_settings()
    keys = [*_item_keys(item_id), key(item_id, f"rl:{member_id}")]
    args: list[Any] = [
        member_id,
        idem,
        int(clock.now().timestamp() * 1000),
        f"{item_id}-{secrets.token_hex(8)}",
        settings.seckill_attempts_per_window,
        settings.seckill_attempt_window_ms,
        *claim_args(claims),
    ]
    run = kit.script("mall.seckill", "attempt")
    pipeline = auto_pipeline()
    raw = await kit.decide(
        lambda: pipeline.run(run, keys, args), lambda: stock.warm_if_cold(item_id)
    )
    answer, _sep, detail = raw.partition("|")
    if answer == "won":
        return Attempt("won", detail)
    if answer == "sold_out":
        stock.sold_out_until[item_id] = time.monotonic() + settings.seckill_sold_out_cache_seconds
        return SOLD_OUT
    if answer == "rate_limited":
        return Attempt("rate_limited", retry_after_ms=max(int(detail), 1))
    if answer == "ineligible":
        rule, _sep, value = detail.partition("|")
        raise ineligible(rule, value)
    if answer == "stale":
        raise TOKEN_EXPIRED()
    if answer in ANSWER_MESSAGES:
        return Attempt(cast(AttemptResult, answer))
    raise RuntimeError(f"seckill attempt script answered {raw!r}")
