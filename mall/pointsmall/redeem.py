"""The points-mall decision: one redemption, answered from Redis. One Lua call
(`lua/reserve.lua`, the item's keys only) checks the shelf window, the limits and the
stock, takes the units, appends the redemption to the item's stream and records the
Idempotency-Key's answer; the member gets the reservation at once (`pending`). The
consumer (`persist.py`) spends the points and writes the redemption in batches; one the
database refuses (not enough points, level, threshold, coupons gone) is `released` with
a reason and its units go back once.

No database read on the common path: the item's terms come from a short in-process
cache (the Lua re-checks status, window, price and limits on the item's meta hash, which
every ops change rewrites). Reads happen only where an item asks for more: a gift's
address is validated and copied into the entry; a level- or balance-gated item fails
fast on the member's level or balance (the consumer checks both again, authoritatively)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from mall.addresses import service as addresses_service
from mall.config import get_settings
from mall.errors import IDEMPOTENCY_KEY_REUSED, ErrorCode
from mall.i18n import _
from mall.kit import clock
from mall.kit import stock as kit
from mall.kit.cache import Refreshing
from mall.members import service as members_service
from mall.points import service as points_service
from mall.pointsmall import stock
from mall.pointsmall.models import PointsMallItem, PointsMallRedemption
from mall.pointsmall.stock import item_keys, period_label, period_ttl
from mall.redis import auto_pipeline, get_redis

ITEM_NOT_FOUND = ErrorCode("ITEM_NOT_FOUND", 404, _("This points mall item was not found"))
ITEM_OFF_SHELF = ErrorCode("ITEM_OFF_SHELF", 409, _("This item is not on the shelf right now"))
OUT_OF_STOCK = ErrorCode("OUT_OF_STOCK", 409, _("This item is out of stock"))
REDEEM_LIMIT_REACHED = ErrorCode(
    "REDEEM_LIMIT_REACHED", 409, _("You can redeem this item at most {limit} times")
)
REDEEM_PERIOD_LIMIT_REACHED = ErrorCode(
    "REDEEM_PERIOD_LIMIT_REACHED",
    409,
    _("You have reached this item's redemption limit for now; try again next period"),
)
LEVEL_TOO_LOW = ErrorCode("LEVEL_TOO_LOW", 403, _("This item is for members of level {level} up"))
POINTS_THRESHOLD_NOT_MET = ErrorCode(
    "POINTS_THRESHOLD_NOT_MET",
    409,
    _("Joining needs a balance of at least {threshold} points; you have {balance}"),
)
ACTIVITY_FULL = ErrorCode("ACTIVITY_FULL", 409, _("This activity is full"))
ADDRESS_REQUIRED = ErrorCode(
    "ADDRESS_REQUIRED", 422, _("Please choose a delivery address for this gift")
)
REDEMPTION_NOT_FOUND = ErrorCode("REDEMPTION_NOT_FOUND", 404, _("The redemption was not found"))
ONE_PLACE_PER_ENTRY = ErrorCode(
    "ONE_PLACE_PER_ENTRY", 422, _("An activity entry is for one person; redeem one at a time")
)

_PKG = "mall.pointsmall"
TERMS_CACHE_SECONDS = 2.0
IDEM_TTL_SECONDS = 86400


def is_on_shelf(item: PointsMallItem, now: Any = None) -> bool:
    now = now or clock.now()
    if item.status != "on":
        return False
    if item.on_shelf_at is not None and now < item.on_shelf_at:
        return False
    return item.off_shelf_at is None or now < item.off_shelf_at


async def get_item(item_id: int) -> PointsMallItem:
    item = await PointsMallItem.get_or_none(id=item_id)
    if item is None:
        raise ITEM_NOT_FOUND()
    return item


# --- the item's terms, cached in this process ----------------------------------------


@dataclass(frozen=True, slots=True)
class Terms:
    """What the request needs of an item beyond what the Lua checks itself."""

    id: int
    name: str
    kind: str
    status: str
    level_required: int
    min_points_balance: int
    limit_period: str
    cash_price_fen: int = 0


async def _load_terms(item_id: int) -> Terms | None:
    item = await PointsMallItem.get_or_none(id=item_id)
    if item is None:
        return None
    return Terms(
        item.id,
        item.name,
        item.kind,
        item.status,
        item.level_required,
        item.min_points_balance,
        item.limit_period,
        item.cash_price_fen,
    )


# read at most every TERMS_CACHE_SECONDS per process, never by a burst's requests (the
# Lua decides on Redis's copy, so a stale copy cannot sell off-shelf stock)
_terms: Refreshing[int, Terms | None] = Refreshing(_load_terms, TERMS_CACHE_SECONDS)


def forget_terms(item_id: int | None = None) -> None:
    """An item changed in this process (ops), or tests: read it again next time."""
    _terms.forget(item_id)


async def terms(item_id: int) -> Terms:
    """The item's terms (a per-process copy, `kit.cache.Refreshing`)."""
    found = await _terms.get(item_id)
    if found is None or found.status in ("draft", "archived"):
        raise ITEM_NOT_FOUND()
    return found


# --- the answer -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reservation:
    """What the member is told at once: the redemption is decided, being written."""

    reservation_id: str
    item_id: int
    item_name: str
    kind: str
    quantity: int
    points: int
    status: str = "pending"
    cash_fen: int = 0  # points + cash: the cash part, paid once the redemption is written

    def as_dict(self) -> dict[str, Any]:
        return {
            "reservation_id": self.reservation_id,
            "status": self.status,
            "item_id": self.item_id,
            "item_name": self.item_name,
            "kind": self.kind,
            "quantity": self.quantity,
            "points": self.points,
            "cash_fen": self.cash_fen,
        }

    def json(self) -> bytes:
        # orjson: the same compact UTF-8 JSON as json.dumps(ensure_ascii=False), 9x faster
        return orjson.dumps(self.as_dict())


def item_of_reservation(reservation_id: str) -> int | None:
    """Reservation ids are `<item id>-<hex>`: the item (and so the keys) they belong to."""
    head, sep, _tail = reservation_id.partition("-")
    if not sep or not head.isdigit() or len(head) > 18:
        return None
    return int(head)


def request_fingerprint(item_id: int, quantity: int, address_id: int | None) -> str:
    raw = f"{item_id}:{quantity}:{address_id or ''}".encode()
    return hashlib.sha256(raw).hexdigest()[:16]


async def _fail_fast(t: Terms, member_id: int, quantity: int) -> None:
    """Checks that read the database, only for items that ask for them."""
    if t.kind == "activity" and quantity != 1:
        raise ONE_PLACE_PER_ENTRY()
    if t.level_required > 0:
        member = await members_service.get_member(member_id)
        if member.level < t.level_required:
            raise LEVEL_TOO_LOW(level=t.level_required)
    if t.min_points_balance > 0:
        balance = await points_service.get_balance(member_id)
        if balance < t.min_points_balance:
            raise POINTS_THRESHOLD_NOT_MET(threshold=t.min_points_balance, balance=balance)


async def _warm(item_id: int) -> None:
    async def load() -> None:
        await stock.warm(await get_item(item_id))

    await kit.warm_cold(item_keys(item_id), load)


async def redeem(
    member_id: int,
    item_id: int,
    quantity: int = 1,
    address_id: int | None = None,
    idempotency_key: str | None = None,
) -> Reservation:
    """Decide one redemption in Redis and answer with the reservation (`pending`)."""
    t = await terms(item_id)
    await _fail_fast(t, member_id, quantity)
    address = ""
    if t.kind == "gift":
        if address_id is None:
            raise ADDRESS_REQUIRED()
        # gifts are rare in a burst: the address is read once and travels in the entry
        snap = await addresses_service.snapshot(member_id, address_id)
        address = snap.model_dump_json()
    now = clock.now()
    label = period_label(t.limit_period, now)
    keys = item_keys(item_id, label)
    key = idempotency_key or ""
    fingerprint = request_fingerprint(item_id, quantity, address_id)
    args: list[Any] = [
        member_id,
        quantity,
        f"{item_id}-{secrets.token_hex(10)}",
        int(now.timestamp() * 1000),
        period_ttl(t.limit_period, now),
        "1" if label else "0",
        label,
        address,
        "1" if key else "0",
        max(get_settings().idempotency_ttl_seconds, IDEM_TTL_SECONDS),
        fingerprint,
    ]
    run = kit.script(_PKG, "reserve")
    pipeline = auto_pipeline()
    raw = await kit.decide(
        lambda: pipeline.run(run, keys.reserve(member_id, key), args), lambda: _warm(item_id)
    )
    answer = kit.parse(raw)
    status, values = answer.status, answer.values
    if status == kit.OK:
        cash = t.cash_price_fen * quantity
        return Reservation(
            values[0], item_id, t.name, t.kind, quantity, int(values[2]), cash_fen=cash
        )
    if status == "again":
        rid, qty, points, seen = values[0], int(values[1]), int(values[2]), values[3]
        if seen != fingerprint:
            raise IDEMPOTENCY_KEY_REUSED()
        return Reservation(
            rid, item_id, t.name, t.kind, qty, points, cash_fen=t.cash_price_fen * qty
        )
    if status == "limit":
        raise REDEEM_LIMIT_REACHED(limit=int(values[1]))
    if status == "period_limit":
        raise REDEEM_PERIOD_LIMIT_REACHED(limit=int(values[1]))
    if status == "off_shelf":
        raise ITEM_OFF_SHELF()
    if status == "gone":
        forget_terms(item_id)
        raise ITEM_NOT_FOUND()
    # sold_out, or a second `cold` (the item could not be loaded): nothing was taken
    raise ACTIVITY_FULL() if t.kind == "activity" else OUT_OF_STOCK()


# --- the member's view of a reservation --------------------------------------------------


def _written(row: PointsMallRedemption) -> dict[str, Any]:
    return {
        "reservation_id": row.reservation_id,
        "status": row.status,
        "item_id": row.item_id,
        "item_name": row.item_name,
        "kind": row.kind,
        "quantity": row.quantity,
        "points": row.points_spent,
        "redemption_id": row.id,
        "release_reason": row.release_reason or None,
        "cash_fen": row.cash_fen,
        "pay_deadline": row.pay_deadline,
        "order_id": row.order_id,
    }


async def reservation(member_id: int, reservation_id: str) -> dict[str, Any]:
    """The written redemption's state, else `pending` from Redis (decided, not yet
    written); REDEMPTION_NOT_FOUND when neither knows it (or it is another member's)."""
    mine = PointsMallRedemption.filter(reservation_id=reservation_id, member_id=member_id)
    row = await mine.first()
    if row is not None:
        return _written(row)
    item_id = item_of_reservation(reservation_id)
    if item_id is not None:
        info: Any = await get_redis().hget(item_keys(item_id).res, reservation_id)
        if info:
            pending = stock.parse_pending(info)
            if pending.member_id == member_id:
                t = await terms(item_id)
                return Reservation(
                    reservation_id,
                    item_id,
                    t.name,
                    t.kind,
                    pending.quantity,
                    pending.points,
                    cash_fen=t.cash_price_fen * pending.quantity,
                ).as_dict()
        # written between the two reads: the row is there now
        row = await mine.first()
        if row is not None:
            return _written(row)
    raise REDEMPTION_NOT_FOUND()
