"""WeChat Pay's bills of a day against the mall's own records (`mall check pay`, the
daily job, the console's list of mismatches).

Every paying domain offers its records through a `Book` in its `paybook.py` (found by
`mall.domains.pay_books()`, keyed by the first letter of `out_trade_no`, as payments are
routed). A day (Shanghai) is reconciled from two bills: the trade bill (ALL) for the
payments WeChat took that day, the refund bill (REFUND) for the refunds started that day.

Mismatches, each a row ops can act on:
- `paid_not_in_mall`: WeChat took money the mall has no paid record of;
- `amount_differs`: both know the payment, not for the same amount;
- `not_paid_at_wechat`: the mall counts it paid that day, WeChat has no such payment;
- `refund_not_in_mall`: WeChat refunded something the mall never asked for;
- `refund_amount_differs`;
- `refund_not_at_wechat`: the mall sent a refund that day WeChat does not know;
- `refund_status_differs`: WeChat paid a refund out the mall counts as failed (money
  given back another way: now twice).
The mall's days are cut at its own times, WeChat's at its own: a record the mall
counts on the day but the bill has not is asked about (query order / query refund)
before it is called a mismatch, so a payment at 23:59:59 recorded at 00:00:01 is not one."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from mall.errors import ErrorCode, MallError
from mall.i18n import _
from mall.kit import clock, lock
from mall.wechat import bills, pay
from mall.wechat.models import FAILED, MISMATCH, OK, PayReconciliation

log = logging.getLogger("mall.wechat.reconcile")

# at most this many WeChat Pay queries to confirm what the bill lacks, per run
MAX_CONFIRMATIONS = 100
# one run of a day at a time (the job, `mall check pay`, ops); a crashed run's lock lapses
RUN_LOCK_SECONDS = 600
# payment and refund numbers a book is asked about per query (`_ask_books`)
NUMBERS_PER_QUERY = 500

RECONCILIATION_RUNNING = ErrorCode(
    "PAY_RECONCILIATION_RUNNING",
    409,
    _("The bills of {day} are being reconciled right now; look again in a minute"),
)


@dataclass(frozen=True)
class MallPayment:
    out_trade_no: str
    amount_fen: int
    transaction_id: str = ""


@dataclass(frozen=True)
class MallRefund:
    wechat_refund_no: str  # the number WeChat Pay knows it by (its current attempt)
    out_trade_no: str
    amount_fen: int
    failed: bool = False  # the mall gave the money back another way (refused, closed)


@dataclass(frozen=True)
class PayRef:
    """What an out_trade_no is in the mall (any state), for ops to open it."""

    member_id: int
    order_id: int | None = None
    top_up_id: int | None = None


Window = Callable[[datetime, datetime], Awaitable[list[Any]]]
T = TypeVar("T")
# a book's look-up by numbers (out_trade_no or refund numbers)
Lookup = Callable[[list[str]], Awaitable[dict[str, T]]]


@dataclass(frozen=True)
class Book:
    """A paying domain's records, for the reconciliation.

    - `paid_between(start, end)`: WeChat Pay payments the mall counts paid in [start, end);
    - `payments(numbers)`: the paid ones among these out_trade_no (any day), by number;
    - `refunds_between(start, end)`: refunds sent to WeChat Pay in [start, end);
    - `refunds(numbers)`: by the refund numbers WeChat reports (a replaced attempt too);
    - `refs(numbers)`: what these out_trade_no are, paid or not (the console's links)."""

    prefix: str
    paid_between: Callable[[datetime, datetime], Awaitable[list[MallPayment]]]
    payments: Lookup[MallPayment]
    refunds_between: Callable[[datetime, datetime], Awaitable[list[MallRefund]]]
    refunds: Lookup[MallRefund]
    refs: Lookup[PayRef] | None = None


@dataclass(frozen=True)
class Mismatch:
    kind: str
    out_trade_no: str
    out_refund_no: str = ""
    wechat_fen: int | None = None
    mall_fen: int | None = None
    detail: str = ""

    def line(self) -> str:
        subject = self.out_trade_no + (
            f" refund {self.out_refund_no}" if self.out_refund_no else ""
        )
        amounts = f" wechat={self.wechat_fen} mall={self.mall_fen}"
        return f"{self.kind} {subject}{amounts}" + (f" ({self.detail})" if self.detail else "")


def _book(books: dict[str, Book], out_trade_no: str) -> Book | None:
    return books.get(out_trade_no[:1])


async def _ask_books(
    books: dict[str, Book],
    by_prefix: dict[str, list[str]],
    lookup: Callable[[Book], Lookup[T] | None],
) -> dict[str, T]:
    """Each book's `lookup` (None: the book has none) of the numbers under its prefix,
    NUMBERS_PER_QUERY at a time: a flash-sale day's bill can list more numbers than one
    statement takes (PostgreSQL: 32,767 arguments)."""
    found: dict[str, T] = {}
    for prefix, group in by_prefix.items():
        book = books.get(prefix)
        ask = None if book is None else lookup(book)
        if ask is None:
            continue
        for at in range(0, len(group), NUMBERS_PER_QUERY):
            found.update(await ask(group[at : at + NUMBERS_PER_QUERY]))
    return found


async def _payments(books: dict[str, Book], numbers: Iterable[str]) -> dict[str, MallPayment]:
    by_prefix: dict[str, list[str]] = {}
    for number in numbers:
        by_prefix.setdefault(number[:1], []).append(number)
    return await _ask_books(books, by_prefix, lambda book: book.payments)


async def _refunds(books: dict[str, Book], rows: list[bills.BillRow]) -> dict[str, MallRefund]:
    by_prefix: dict[str, list[str]] = {}
    for row in rows:
        by_prefix.setdefault(row.out_trade_no[:1], []).append(row.out_refund_no)
    return await _ask_books(books, by_prefix, lambda book: book.refunds)


async def compare(
    day: date, trades: bills.Bill, refund_bill: bills.Bill, books: Iterable[Book]
) -> list[Mismatch]:
    """The mismatches between a day's bills and the books."""
    by_prefix = {b.prefix: b for b in books}
    start, end = clock.local_day_bounds_utc(day)
    found: list[Mismatch] = []
    confirmations = 0

    paid_rows = {r.out_trade_no: r for r in trades.rows if r.trade_state == "SUCCESS"}
    mall_paid = await _payments(by_prefix, paid_rows)
    for number, row in paid_rows.items():
        mine = mall_paid.get(number)
        if mine is None:
            found.append(Mismatch("paid_not_in_mall", number, wechat_fen=row.total_fen))
        elif mine.amount_fen != row.total_fen:
            found.append(
                Mismatch(
                    "amount_differs", number, wechat_fen=row.total_fen, mall_fen=mine.amount_fen
                )
            )
    for book in by_prefix.values():
        for mine in await book.paid_between(start, end):
            if mine.out_trade_no in paid_rows:
                continue
            confirmations += 1
            if confirmations > MAX_CONFIRMATIONS:
                found.append(
                    Mismatch(
                        "not_paid_at_wechat",
                        mine.out_trade_no,
                        "",
                        None,
                        mine.amount_fen,
                        "not in the bill; not asked",
                    )
                )
                continue
            problem = await _confirm_payment(day, mine)
            if problem:
                found.append(problem)

    refund_rows = [r for r in refund_bill.rows if r.out_refund_no]
    mall_refunds = await _refunds(by_prefix, refund_rows)
    for row in refund_rows:
        asked = row.applied_refund_fen or row.refund_fen
        mine_refund = mall_refunds.get(row.out_refund_no)
        if mine_refund is None:
            found.append(Mismatch("refund_not_in_mall", row.out_trade_no, row.out_refund_no, asked))
        elif mine_refund.amount_fen != asked:
            found.append(
                Mismatch(
                    "refund_amount_differs",
                    row.out_trade_no,
                    row.out_refund_no,
                    asked,
                    mine_refund.amount_fen,
                )
            )
        elif mine_refund.failed and row.refund_status == "SUCCESS":
            found.append(
                Mismatch(
                    "refund_status_differs",
                    row.out_trade_no,
                    row.out_refund_no,
                    asked,
                    mine_refund.amount_fen,
                    "refunded at WeChat, failed in the mall",
                )
            )
    listed = {r.out_refund_no for r in refund_rows}
    for book in by_prefix.values():
        for refund in await book.refunds_between(start, end):
            if refund.wechat_refund_no in listed:
                continue
            confirmations += 1
            if confirmations > MAX_CONFIRMATIONS:
                found.append(
                    Mismatch(
                        "refund_not_at_wechat",
                        refund.out_trade_no,
                        refund.wechat_refund_no,
                        None,
                        refund.amount_fen,
                        "not in the bill; not asked",
                    )
                )
                continue
            try:
                known = await pay.query_refund(refund.wechat_refund_no)
            except MallError as exc:
                found.append(
                    Mismatch(
                        "refund_not_at_wechat",
                        refund.out_trade_no,
                        refund.wechat_refund_no,
                        None,
                        refund.amount_fen,
                        f"not in the bill; query failed: {exc.code}",
                    )
                )
                continue
            if known is None:  # started on another day it would be known
                found.append(
                    Mismatch(
                        "refund_not_at_wechat",
                        refund.out_trade_no,
                        refund.wechat_refund_no,
                        None,
                        refund.amount_fen,
                    )
                )
    return found


async def _confirm_payment(day: date, mine: MallPayment) -> Mismatch | None:
    """The mall counts `mine` paid on `day` but the bill does not list it: ask WeChat."""
    try:
        result = await pay.query_payment(mine.out_trade_no)
    except MallError as exc:
        return Mismatch(
            "not_paid_at_wechat",
            mine.out_trade_no,
            "",
            None,
            mine.amount_fen,
            f"not in the bill; query failed: {exc.code}",
        )
    if result is None or result.trade_state not in ("SUCCESS", "REFUND"):
        state = "unknown to WeChat Pay" if result is None else result.trade_state
        return Mismatch("not_paid_at_wechat", mine.out_trade_no, "", None, mine.amount_fen, state)
    paid_on = result.success_time.astimezone(clock.SHANGHAI).date() if result.success_time else None
    if paid_on == day:
        return Mismatch(
            "not_paid_at_wechat",
            mine.out_trade_no,
            "",
            result.amount_total_fen,
            mine.amount_fen,
            "paid that day but not in the bill",
        )
    if result.amount_total_fen != mine.amount_fen:
        return Mismatch(
            "amount_differs", mine.out_trade_no, "", result.amount_total_fen, mine.amount_fen
        )
    return None  # on another day's bill


async def run(day: date, books: Iterable[Book]) -> PayReconciliation:
    """Fetch the day's bills, compare, and keep the result (replacing an earlier run's).
    A failure to fetch or read them is kept too (status failed) and raised. One run of a
    day at a time: another one meanwhile is RECONCILIATION_RUNNING."""
    async with lock.held(f"wechat:reconcile:{day.isoformat()}:run", RUN_LOCK_SECONDS) as mine:
        if not mine:
            raise RECONCILIATION_RUNNING(day=day.isoformat())
        return await _run(day, list(books))


async def _run(day: date, books: list[Book]) -> PayReconciliation:
    try:
        trades = await bills.download(day, "ALL")
        refund_bill = await bills.download(day, "REFUND")
    except MallError as exc:
        await _keep(day, FAILED, error=str(exc)[:255])
        raise
    mismatches = await compare(day, trades, refund_bill, books)
    for mismatch in mismatches:
        log.error("wechatpay reconciliation %s: %s", day, mismatch.line())
    paid = [r for r in trades.rows if r.trade_state == "SUCCESS"]
    refunds = [r for r in refund_bill.rows if r.out_refund_no]
    return await _keep(
        day,
        MISMATCH if mismatches else OK,
        payments=len(paid),
        paid_fen=sum(r.total_fen for r in paid),
        refunds=len(refunds),
        refunded_fen=sum(r.applied_refund_fen or r.refund_fen for r in refunds),
        mismatches=[asdict(m) for m in mismatches],
    )


async def _keep(day: date, status: str, **figures: Any) -> PayReconciliation:
    values: dict[str, Any] = {
        "status": status,
        "payments": 0,
        "paid_fen": 0,
        "refunds": 0,
        "refunded_fen": 0,
        "mismatches": [],
        "error": "",
        "ran_at": clock.now(),
        **figures,
    }
    row, _created = await PayReconciliation.update_or_create(defaults=values, bill_date=day)
    return row


async def latest() -> PayReconciliation | None:
    """The most recent day reconciled."""
    return await PayReconciliation.all().order_by("-bill_date").first()


async def recent(limit: int) -> list[PayReconciliation]:
    return await PayReconciliation.all().order_by("-bill_date").limit(limit)


async def of_day(day: date) -> PayReconciliation | None:
    return await PayReconciliation.get_or_none(bill_date=day)


async def references(numbers: Iterable[str], books: Iterable[Book]) -> dict[str, PayRef]:
    """What each out_trade_no is in the mall (an order, a top-up; its member), by number;
    numbers no book knows are left out."""
    grouped: dict[str, list[str]] = {}
    for number in sorted(set(numbers)):
        grouped.setdefault(number[:1], []).append(number)
    return await _ask_books({b.prefix: b for b in books}, grouped, lambda book: book.refs)
