"""Flash-sale winners: the stream consumer that turns wins into `SeckillOrder`s (once
per reservation id), payment, and the expiry of unpaid wins.

Wins are persisted in batches (the kit's `StreamConsumer`), one transaction per batch:
the database's own guard (`sold + n <= stock` for the batch, else `sold < stock` per
win), the points of the points-priced wins (one `points_service.spend_many`), the
orders. A win the database refuses (member short of points, or a unit Redis should not
have handed out) becomes a released order without undoing the others, and its unit goes
back to Redis after the commit, once (`stock.give_back_unit`). A batch replayed (a crash
between the commit and the acknowledgement) finds its orders and makes none twice."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from mall.config import get_settings
from mall.errors import ErrorCode, MallError
from mall.i18n import _
from mall.kit import bulk, clock, jobs, tx
from mall.kit import stock as kit
from mall.members import service as members_service
from mall.points import service as points_service
from mall.redis import get_redis
from mall.seckill import stock
from mall.seckill.models import HOLDING, OrderStatus, SeckillItem, SeckillOrder
from mall.seckill.stock import key

log = logging.getLogger("mall.seckill")

RESERVATION_NOT_FOUND = ErrorCode("RESERVATION_NOT_FOUND", 404, _("Reservation not found"))
SECKILL_ORDER_NOT_PAYABLE = ErrorCode(
    "SECKILL_ORDER_NOT_PAYABLE", 409, _("This reservation is {status} and cannot be paid")
)

LOST_NOT_ENOUGH_POINTS = "not_enough_points"
LOST_OVERSELL_GUARD = "oversell_guard"  # the database refused a unit Redis handed out


class _Lost(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Win:
    """One stream entry of a win, as the attempt script wrote it."""

    entry_id: str
    reservation_id: str
    member_id: int
    points: int
    cash: int
    won_at: datetime

    @classmethod
    def of(cls, entry_id: str, fields: dict[str, str]) -> Win:
        return cls(
            entry_id,
            fields["rid"],
            int(fields["member"]),
            int(fields.get("points") or 0),
            int(fields.get("cash") or 0),
            datetime.fromtimestamp(int(fields["ts"]) / 1000, tz=UTC),
        )

    def row(
        self, item_id: int, status: OrderStatus, pay_deadline: datetime | None
    ) -> dict[str, Any]:
        """The order's row for `kit.bulk.insert_rows` (no model instance per win)."""
        return {
            "reservation_id": self.reservation_id,
            "item_id": item_id,
            "member_id": self.member_id,
            "points_price": self.points,
            "cash_price_fen": self.cash,
            "won_at": self.won_at,
            "status": status,
            "pay_deadline": pay_deadline,
        }


@dataclass(slots=True)
class Persisted:
    """What the consumer needs of an order it wrote or found: its status and whether a
    released unit is back (a light record, not a model instance per win)."""

    reservation_id: str
    item_id: int
    member_id: int
    status: OrderStatus
    release_reason: str = ""
    stock_returned: bool = False


def _held(item_id: int, win: Win, deadline: datetime | None) -> dict[str, Any]:
    """The row of a held win: confirmed, or pending payment until `deadline` for a cash
    price."""
    if win.cash > 0:
        return win.row(item_id, OrderStatus.PENDING_PAYMENT, deadline)
    return win.row(item_id, OrderStatus.CONFIRMED, None)


def _pay_deadline() -> datetime:
    return clock.now() + timedelta(seconds=get_settings().seckill_payment_seconds)


async def _hold(item_id: int, win: Win, *, guard: bool) -> Persisted:
    """Inside a savepoint: the unit (when `guard`: the database's `sold < stock`), the
    points, the order; `_Lost` when the database refuses the win."""
    if guard:
        taken = await SeckillItem.filter(id=item_id, sold__lt=F("stock")).update(sold=F("sold") + 1)
        if not taken:
            raise _Lost(LOST_OVERSELL_GUARD)
    if win.points > 0:
        try:
            await points_service.spend(
                win.member_id,
                win.points,
                idempotency_key=f"seckill:{win.reservation_id}",
                reason="seckill",
                reference=f"seckill:{win.reservation_id}",
            )
        except MallError as exc:
            if exc.code != points_service.NOT_ENOUGH_POINTS.code:
                raise
            raise _Lost(LOST_NOT_ENOUGH_POINTS) from None
    row = _held(item_id, win, _pay_deadline() if win.cash > 0 else None)
    await bulk.insert_rows(SeckillOrder, [row])
    return _persisted(row)


def _persisted(row: dict[str, Any]) -> Persisted:
    return Persisted(
        row["reservation_id"],
        row["item_id"],
        row["member_id"],
        row["status"],
        row.get("release_reason", ""),
        row.get("stock_returned", False),
    )


async def _write(item_id: int, wins: list[Win]) -> tuple[dict[str, Persisted], list[Win]]:
    """One transaction for `wins` (none persisted before): their orders by reservation
    id, and the wins left unresolved (an order under the same id appeared meanwhile, or
    the member is gone).

    The item's guard is taken once for all (`sold + n <= stock`); then the points of
    every points-priced win are spent in one `spend_many` (a win whose member is short
    becomes a released order, the others are untouched) and the orders are inserted at
    once. When the guard cannot be taken at once (the database has fewer units than
    Redis handed out), win by win in a savepoint each (`sold < stock`, the spend, the
    order), so exactly the wins beyond the stock are refused. Units taken at once but
    not held in the end are put back in the same transaction."""
    made: dict[str, Persisted] = {}
    unresolved: list[Win] = []
    lost: list[tuple[Win, str]] = []
    n = len(wins)
    async with tx.transaction():
        at_once = bool(
            await SeckillItem.filter(id=item_id, sold__lte=F("stock") - n).update(
                sold=F("sold") + n
            )
        )
        if at_once:
            held = await _spend_points(wins, lost, unresolved)
            if held:
                deadline = _pay_deadline()  # one for the batch's cash-priced wins
                rows = [_held(item_id, w, deadline) for w in held]
                await _insert_orders(held, rows, made, unresolved)
        else:
            # the members' rows in id order first: a spend below locks its member in the
            # stream's order, and another consumer may lock some of them in id order
            await members_service.locked(sorted({w.member_id for w in wins}), "level")
            # in the stream's order, so the latest wins are the ones refused
            for win in wins:
                try:
                    async with tx.transaction():
                        made[win.reservation_id] = await _hold(item_id, win, guard=True)
                except _Lost as refused:
                    lost.append((win, refused.reason))
                except (IntegrityError, MallError):
                    unresolved.append(win)
        if lost:
            rows = []
            for win, reason in lost:
                row = win.row(item_id, OrderStatus.RELEASED, None)
                row["release_reason"] = reason
                # the guard's unit never existed: nothing to give back
                row["stock_returned"] = reason == LOST_OVERSELL_GUARD
                rows.append(row)
            await _insert_orders([w for w, _r in lost], rows, made, unresolved)
        if at_once and (unheld := n - sum(o.status in HOLDING for o in made.values())):
            await SeckillItem.filter(id=item_id).update(sold=F("sold") - unheld)
    return made, unresolved


async def _spend_points(
    wins: list[Win], lost: list[tuple[Win, str]], unresolved: list[Win]
) -> list[Win]:
    """The points of the points-priced wins, in one batch (in the stream's order, so of
    two wins of one member short for both, the later is refused): the wins to hold (the
    free ones and those paid for). A member short of points loses the win (`lost`); a
    member gone leaves it unresolved."""
    priced = [w for w in wins if w.points > 0]
    if not priced:
        return wins
    results = await points_service.spend_many(
        [
            points_service.SpendRequest(
                w.member_id,
                w.points,
                f"seckill:{w.reservation_id}",
                reason="seckill",
                reference=f"seckill:{w.reservation_id}",
            )
            for w in priced
        ]
    )
    refused: set[str] = set()
    for win, result in zip(priced, results, strict=True):
        if not isinstance(result, MallError):
            continue
        refused.add(win.reservation_id)
        if result.code == points_service.NOT_ENOUGH_POINTS.code:
            lost.append((win, LOST_NOT_ENOUGH_POINTS))
        else:
            unresolved.append(win)
    return [w for w in wins if w.reservation_id not in refused]


async def _insert_orders(
    wins: list[Win],
    rows: list[dict[str, Any]],
    made: dict[str, Persisted],
    unresolved: list[Win],
) -> None:
    """The orders `rows` of `wins` in one insert; should it fail (an order under the same
    id appeared meanwhile, or a member is gone), one by one in a savepoint each, which
    finds the culprits (left unresolved)."""
    try:
        async with tx.transaction():
            await bulk.insert_rows(SeckillOrder, rows)
    except IntegrityError:
        pass
    else:
        made.update((row["reservation_id"], _persisted(row)) for row in rows)
        return
    for win, row in zip(wins, rows, strict=True):
        try:
            async with tx.transaction():
                await bulk.insert_rows(SeckillOrder, [row])
        except IntegrityError:
            unresolved.append(win)
        else:
            made[win.reservation_id] = _persisted(row)


async def _resolve(item_id: int, win: Win) -> Persisted | None:
    """After the commit, a win the transaction could not write: its order written by
    someone else, or None when the member no longer exists (the unit goes back);
    otherwise it stays pending (raises)."""
    found = await _found([win.reservation_id])
    if found:
        return found[0]
    try:
        await members_service.get_member(win.member_id)
    except MallError:
        log.warning("seckill item %s: winner %s no longer exists", item_id, win.member_id)
        await stock.give_back_unit(item_id, win.reservation_id, win.member_id)
        return None
    raise RuntimeError(f"seckill win {win.reservation_id} could not be persisted")


async def _found(rids: list[str]) -> list[Persisted]:
    """The orders under these reservation ids, as light records."""
    found = await bulk.select_in(
        SeckillOrder,
        "reservation_id",
        rids,
        ["reservation_id", "item_id", "member_id", "status", "release_reason", "stock_returned"],
    )
    return [
        Persisted(rid, item, member, OrderStatus(status), reason, bool(returned))
        for rid, item, member, status, reason, returned in found
    ]


async def persist_wins(item_id: int, wins: list[Win]) -> list[Win]:
    """Turn wins into orders, once per reservation id, in one transaction; returns the
    wins done (persisted now or before). After the commit, the units of released orders
    go back to Redis (once, `give_back`), and a unit the database refused sets the Redis
    stock to 0. A win that cannot be resolved is left out (stays pending)."""
    rids = [w.reservation_id for w in wins]
    orders = {o.reservation_id: o for o in await _found(rids)}
    fresh = [w for w in wins if w.reservation_id not in orders]
    unresolved: list[Win] = []
    if fresh:
        made, unresolved = await _write(item_id, fresh)
        orders.update(made)
    done = [w for w in wins if w.reservation_id in orders]
    for win in unresolved:
        try:
            order = await _resolve(item_id, win)
        except Exception as exc:
            if jobs.unreachable(exc):
                raise
            log.exception("seckill item %s: entry %s not persisted", item_id, win.entry_id)
            continue
        if order is not None:
            orders[win.reservation_id] = order
        done.append(win)
    guard_refused: list[str] = []
    for order in orders.values():
        if order.status == OrderStatus.RELEASED and not order.stock_returned:
            await give_back(order)
        elif order.release_reason == LOST_OVERSELL_GUARD:
            guard_refused.append(order.reservation_id)
    if guard_refused:
        log.error(
            "seckill item %s: Redis handed out units the database does not have "
            "(reservations %s); stock set to 0",
            item_id,
            ", ".join(guard_refused[:5]),
        )
        await get_redis().set(key(item_id, "stock"), 0, xx=True)
    return done


async def give_back(order: SeckillOrder | Persisted) -> None:
    """Hand a released/expired order's unit back to the Redis stock (once per reservation)."""
    await stock.give_back_unit(order.item_id, order.reservation_id, order.member_id)
    await SeckillOrder.filter(reservation_id=order.reservation_id, stock_returned=False).update(
        stock_returned=True
    )
    order.stock_returned = True


# --- the stream consumer ------------------------------------------------------------


async def persist_batch(item_id: int, entries: list[kit.Entry]) -> list[str]:
    """The consumer's batch: one transaction for all its wins (`persist_wins`). Should
    that transaction fail, its halves are tried, and theirs (`kit.in_halves`), so one
    bad entry holds up only itself; entries not done stay pending (tried again)."""
    wins: list[Win] = []
    seen: dict[str, list[str]] = {}  # reservation id -> its entry ids (one, normally)
    for entry_id, fields in entries:
        try:
            win = Win.of(entry_id, fields)
        except (KeyError, ValueError):
            log.error("seckill item %s: entry %s unreadable: %r", item_id, entry_id, fields)
            continue
        if win.reservation_id not in seen:
            wins.append(win)
        seen.setdefault(win.reservation_id, []).append(entry_id)
    try:
        done = await persist_wins(item_id, wins)
    except Exception as exc:
        if jobs.unreachable(exc) or len(wins) <= 1:
            raise
        log.warning(
            "seckill item %s: a batch of %d wins failed (%s); in halves", item_id, len(wins), exc
        )
        done = []

        async def write(part: list[Win]) -> None:
            done.extend(await persist_wins(item_id, part))

        def lost(win: Win, why: Exception) -> None:
            log.error(
                "seckill item %s: entry %s not persisted", item_id, win.entry_id, exc_info=why
            )

        await kit.in_halves(wins, write, lost, exc)
    return [entry_id for win in done for entry_id in seen[win.reservation_id]]


CONSUMER = kit.StreamConsumer(
    stock.WINS,
    persist_batch,
    claim_idle_ms=lambda: get_settings().seckill_claim_idle_seconds * 1000,
    name="seckill item",
)


async def read_entries(
    item_id: int, consumer: str, *, count: int, claim_idle_ms: int
) -> list[kit.Entry]:
    """Entries for `consumer` (claimed idle ones first, then new ones); pending until
    the consumer acknowledges them."""
    return await stock.WINS.read(item_id, consumer, count=count, claim_idle_ms=claim_idle_ms)


async def process_pending_once(
    consumer: str = "local", *, count: int | None = None, claim_idle_ms: int | None = None
) -> int:
    """One pass over every warm item's stream, a batch (one transaction) of up to `count`
    wins per item (default: the consumer's batch); returns how many entries were handled.
    Entries pending longer than `claim_idle_ms` on another (dead) consumer are claimed."""
    return await CONSUMER.process_once(consumer, count=count, claim_idle_ms=claim_idle_ms)


async def drain(consumer: str = "local", *, claim_idle_ms: int | None = None) -> int:
    """Run passes until the streams are empty (tests, drills)."""
    return await CONSUMER.drain(consumer, claim_idle_ms=claim_idle_ms)


# --- payment and expiry -------------------------------------------------------------
#
# Who owns the deadline: a win nobody took to payment is expired by `expire_unpaid`; once
# the member takes it to payment (`payment.pay_win` claims it by setting `mall_order_id`,
# a compare-and-set on a pending win before its deadline), the mall order's close job
# owns the deadline and calls `expire_held` when it closes the order. Never both.


async def mark_paid(reservation_id: str) -> SeckillOrder:
    """Payment arrived (called by the order's payment, in its transaction):
    pending_payment -> paid, once."""
    changed = await SeckillOrder.filter(
        reservation_id=reservation_id, status=OrderStatus.PENDING_PAYMENT
    ).update(status=OrderStatus.PAID, updated_at=clock.now())
    order = await SeckillOrder.get_or_none(reservation_id=reservation_id)
    if order is None:
        raise RESERVATION_NOT_FOUND()
    if not changed and order.status != OrderStatus.PAID:
        raise SECKILL_ORDER_NOT_PAYABLE(status=order.status.value)
    return order


async def _expire(order: SeckillOrder, reason: str) -> bool:
    """pending_payment -> expired (compare-and-set): the database's unit and the spent
    points of a points + cash win come back. Call inside a transaction; the Redis unit is
    handed back after the commit (`give_back`). False if the win was no longer pending."""
    changed = await SeckillOrder.filter(id=order.id, status=OrderStatus.PENDING_PAYMENT).update(
        status=OrderStatus.EXPIRED, release_reason=reason, updated_at=clock.now()
    )
    if not changed:
        return False
    await SeckillItem.filter(id=order.item_id, sold__gt=0).update(sold=F("sold") - 1)
    if order.points_price > 0:
        await points_service.reverse(
            f"seckill:{order.reservation_id}",
            idempotency_key=f"seckill:{order.reservation_id}:unpaid",
            reason="seckill_unpaid",
        )
    order.status = OrderStatus.EXPIRED
    return True


async def expire_held(reservation_id: str, reason: str) -> SeckillOrder | None:
    """The mall order paying this win closed or was cancelled unpaid (called in its
    transaction): the win expires. The caller hands the unit back after its commit
    (`give_back_if_due`)."""
    order = await SeckillOrder.get_or_none(reservation_id=reservation_id)
    if order is None:
        return None
    await _expire(order, reason)
    return order


async def refund_held(reservation_id: str) -> None:
    """The paid order of this win was refunded in full (called in its transaction): the
    points of a points + cash win come back. The unit stays sold (it left the sale with
    the goods; ops restock it by hand if it returns), so the sale's books do not move."""
    order = await SeckillOrder.get_or_none(reservation_id=reservation_id)
    if order is None:
        return
    changed = await SeckillOrder.filter(id=order.id, status=OrderStatus.PAID).update(
        status=OrderStatus.REFUNDED, updated_at=clock.now()
    )
    if changed and order.points_price > 0:
        await points_service.reverse(
            f"seckill:{order.reservation_id}",
            idempotency_key=f"seckill:{order.reservation_id}:refund",
            reason="seckill_refund",
        )


async def give_back_if_due(reservation_id: str) -> None:
    """After the commit that expired a win: its unit back to Redis, once (a crash before
    this is finished by `expire_unpaid`)."""
    order = await SeckillOrder.get_or_none(reservation_id=reservation_id)
    if order is not None and order.status in stock.RETURNS and not order.stock_returned:
        await give_back(order)


async def expire_unpaid(limit: int = 500) -> int:
    """Job: unpaid cash wins past their deadline that nobody took to payment go back to
    stock (a compare-and-set on the status, so a payment claim at the same moment wins or
    loses cleanly). Wins taken to payment are the mall order's close job's. Also
    finishes give-backs a crash left undone."""
    due = await SeckillOrder.filter(
        status=OrderStatus.PENDING_PAYMENT,
        pay_deadline__lte=clock.now(),
        mall_order_id__isnull=True,
    ).limit(limit)
    expired = 0
    for order in due:
        async with in_transaction():
            changed = await SeckillOrder.filter(
                id=order.id, status=OrderStatus.PENDING_PAYMENT, mall_order_id__isnull=True
            ).update(status=OrderStatus.EXPIRED, release_reason="unpaid")
            if changed:
                await SeckillItem.filter(id=order.item_id, sold__gt=0).update(sold=F("sold") - 1)
                if order.points_price > 0:
                    await points_service.reverse(
                        f"seckill:{order.reservation_id}",
                        idempotency_key=f"seckill:{order.reservation_id}:unpaid",
                        reason="seckill_unpaid",
                    )
        if changed:
            await give_back(order)
            expired += 1
    for order in await SeckillOrder.filter(status__in=stock.RETURNS, stock_returned=False).limit(
        limit
    ):
        await give_back(order)
    return expired
