"""Wins persisted in batches: one transaction per batch, the points in one spend_many."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from mall.config import get_settings
from mall.kit import clock
from mall.members.models import Member
from mall.points import service as points_service
from mall.redis import get_redis
from mall.seckill import service, stock, winners
from mall.seckill.models import OrderStatus, SeckillItem, SeckillOrder
from mall.seckill.service import key
from tests.factories import make_member_ids
from tests.seckill.conftest import MakeItem


async def _assert_reconciled(item_id: int) -> None:
    checks = await service.reconcile([item_id])
    assert checks and all(c.ok for c in checks), [c.line() for c in checks]


async def _stock(item_id: int) -> int:
    return int(await get_redis().get(key(item_id, "stock")))


async def _win_all(item_id: int, members: list[int]) -> list[str]:
    rids = []
    for m in members:  # in order, so the stream holds them in this order
        won = await service.attempt(item_id, m)
        assert won.result == "won" and won.reservation_id
        rids.append(won.reservation_id)
    return rids


async def test_a_member_short_of_points_releases_only_that_win(make_item: MakeItem) -> None:
    item = await make_item(stock=10, points_price=100)
    members = await make_member_ids(6)
    short = members[3]
    for m in members:
        if m != short:
            await points_service.earn(m, 100, idempotency_key=f"t:{m}", reason="test")
    rids = await _win_all(item.id, members)
    assert await _stock(item.id) == 4

    assert await service.process_pending_once("c") == 6  # one batch
    orders = {o.member_id: o for o in await SeckillOrder.filter(item_id=item.id)}
    assert orders[short].status == OrderStatus.RELEASED
    assert orders[short].release_reason == "not_enough_points" and orders[short].stock_returned
    assert all(orders[m].status == OrderStatus.CONFIRMED for m in members if m != short)
    for m in members:
        assert await points_service.get_balance(m) == 0  # the others spent; short had none
    assert (await SeckillItem.get(id=item.id)).sold == 5
    assert await _stock(item.id) == 5  # its unit came back
    assert await get_redis().sismember(key(item.id, "returned"), rids[3])

    # the same batch persisted again: nothing spent twice, the unit not returned twice
    entries = [
        (f"0-{i}", _fields(item.id, m, r))
        for i, (m, r) in enumerate(zip(members, rids, strict=True))
    ]
    assert len(await winners.persist_batch(item.id, entries)) == 6
    assert await SeckillOrder.filter(item_id=item.id).count() == 6
    assert await _stock(item.id) == 5
    assert (await SeckillItem.get(id=item.id)).sold == 5
    await _assert_reconciled(item.id)


async def test_a_member_winning_twice_with_points_for_one_keeps_the_first(
    make_item: MakeItem,
) -> None:
    item = await make_item(stock=10, points_price=30, limit=2)
    members = await make_member_ids(3)
    twice = members[1]
    for m in members:
        await points_service.earn(m, 50, idempotency_key=f"t:{m}", reason="test")
    rids = await _win_all(item.id, [members[0], twice, members[2], twice])
    assert await service.process_pending_once("c") == 4  # one batch, one spend_many
    orders = {o.reservation_id: o for o in await SeckillOrder.filter(item_id=item.id)}
    assert orders[rids[1]].status == OrderStatus.CONFIRMED  # the earlier win is paid for
    assert orders[rids[3]].status == OrderStatus.RELEASED
    assert orders[rids[3]].release_reason == "not_enough_points"
    assert [await points_service.get_balance(m) for m in members] == [20, 20, 20]
    assert (await SeckillItem.get(id=item.id)).sold == 3
    assert await _stock(item.id) == 7
    await _assert_reconciled(item.id)


def _fields(item_id: int, member: int, rid: str, points: int = 100) -> dict[str, str]:
    return {
        "rid": rid,
        "member": str(member),
        "item": str(item_id),
        "points": str(points),
        "cash": "0",
        "ts": "1800000000000",
    }


async def test_a_batch_replayed_after_a_crash_between_commit_and_ack_makes_no_duplicates(
    make_item: MakeItem,
) -> None:
    points_item = await make_item(stock=50, points_price=10)
    cash_item = await make_item(stock=50, cash_price_fen=990)
    members = await make_member_ids(40)
    for m in members[:-5]:  # the last five cannot pay in points
        await points_service.earn(m, 10, idempotency_key=f"t:{m}", reason="test")
    await _win_all(points_item.id, members)
    await _win_all(cash_item.id, members)

    # the doomed consumer committed both batches, then died before acknowledging them
    for item_id in (points_item.id, cash_item.id):
        entries = await service.read_entries(item_id, "doomed", count=100, claim_idle_ms=60_000)
        assert len(entries) == 40
        assert len(await winners.persist_batch(item_id, entries)) == 40
        assert (await get_redis().xpending(key(item_id, "wins"), service.GROUP))["pending"] == 40
    stock_after_commit = await _stock(points_item.id)
    assert stock_after_commit == 15  # 50 - 40 + the five released

    assert await service.drain("rescuer", claim_idle_ms=0) == 80  # replayed
    assert await SeckillOrder.filter(item_id=points_item.id).count() == 40
    assert await SeckillOrder.filter(item_id=cash_item.id).count() == 40
    held = await SeckillOrder.filter(item_id=points_item.id, status=OrderStatus.CONFIRMED).count()
    assert held == 35
    assert (await SeckillItem.get(id=points_item.id)).sold == 35
    assert (await SeckillItem.get(id=cash_item.id)).sold == 40
    assert await _stock(points_item.id) == stock_after_commit  # no unit returned twice
    for m in members:
        assert await points_service.get_balance(m) == 0  # spent once (or never)
    for item_id in (points_item.id, cash_item.id):
        assert await get_redis().xlen(key(item_id, "wins")) == 0
        await _assert_reconciled(item_id)


async def test_units_the_database_lacks_are_refused_win_by_win_in_a_batch(
    make_item: MakeItem,
) -> None:
    item = await make_item(stock=3)
    members = await make_member_ids(5)
    await _win_all(item.id, members[:2])
    await service.drain()
    await get_redis().set(key(item.id, "stock"), 3)  # Redis believes in 2 units too many
    rids = await _win_all(item.id, members[2:])
    assert await service.process_pending_once("c") == 3
    orders = {o.reservation_id: o for o in await SeckillOrder.filter(item_id=item.id)}
    assert orders[rids[0]].status == OrderStatus.CONFIRMED  # the first in the stream won
    for rid in rids[1:]:
        assert orders[rid].status == OrderStatus.RELEASED
        assert orders[rid].release_reason == "oversell_guard"
    assert (await SeckillItem.get(id=item.id)).sold == 3
    assert await _stock(item.id) == 0


async def test_an_order_written_meanwhile_leaves_the_rest_of_the_batch_whole(
    make_item: MakeItem,
) -> None:
    item = await make_item(stock=10, cash_price_fen=500)
    members = await make_member_ids(3)
    await _win_all(item.id, members)
    entries = await service.read_entries(item.id, "a", count=10, claim_idle_ms=60_000)
    wins = [winners.Win.of(entry_id, fields) for entry_id, fields in entries]
    # another consumer persisted the second win after this one looked
    assert await winners.persist_wins(item.id, [wins[1]]) == [wins[1]]
    made, unresolved = await winners._write(item.id, wins)
    assert set(made) == {wins[0].reservation_id, wins[2].reservation_id}
    assert unresolved == [wins[1]]
    assert (await SeckillItem.get(id=item.id)).sold == 3  # the batch's unit for it put back
    assert await SeckillOrder.filter(item_id=item.id).count() == 3


async def test_a_drained_burst_of_several_hundred_wins_reconciles(make_item: MakeItem) -> None:
    points_item = await make_item(stock=400, points_price=5, limit=2)
    cash_item = await make_item(stock=300, cash_price_fen=100)
    members = await make_member_ids(300)
    broke = set(members[::10])
    for m in members:
        if m not in broke:
            await points_service.earn(m, 10, idempotency_key=f"t:{m}", reason="test")
    calls = [(points_item.id, m) for m in members] + [(cash_item.id, m) for m in members]
    calls += [(points_item.id, m) for m in members[:100]]  # a second unit for some
    results = await asyncio.gather(*(service.attempt(i, m) for i, m in calls))
    assert all(r.result == "won" for r in results)

    done = await asyncio.gather(*(service.drain(f"c{k}") for k in range(2)))
    assert sum(done) == 700
    confirmed = await SeckillOrder.filter(item_id=points_item.id, status=OrderStatus.CONFIRMED)
    released = await SeckillOrder.filter(item_id=points_item.id, status=OrderStatus.RELEASED)
    lost = len(broke) + len(broke & set(members[:100]))  # 30 + 10
    assert len(confirmed) == 400 - lost and len(released) == lost
    assert {o.member_id for o in released} == broke
    assert (await SeckillItem.get(id=points_item.id)).sold == len(confirmed)
    assert await _stock(points_item.id) == lost
    pending = await SeckillOrder.filter(item_id=cash_item.id, status=OrderStatus.PENDING_PAYMENT)
    assert len(pending) == 300 and all(o.pay_deadline and o.created_at for o in pending)
    for item_id in (points_item.id, cash_item.id):
        await _assert_reconciled(item_id)
    report = await service.reconcile()
    assert all(c.ok for c in report), [c.line() for c in report]


@pytest.mark.clock
async def test_a_batch_writes_every_column_as_the_orm_did(make_item: MakeItem) -> None:
    """The orders are inserted as plain rows: defaults, the clock's created_at and
    updated_at, the cash wins' payment deadline, the released win's reason."""
    moment = datetime(2028, 2, 29, 15, 59, 58, 250000, tzinfo=UTC)  # Shanghai midnight nears
    clock.set_now(moment)
    cash_item = await make_item(stock=10, cash_price_fen=990, points_price=20)
    members = await make_member_ids(3)
    for m in members[:2]:
        await points_service.earn(m, 20, idempotency_key=f"t:{m}", reason="test")
    await _win_all(cash_item.id, members)
    entries = await service.read_entries(cash_item.id, "c", count=10, claim_idle_ms=60_000)
    clock.set_now(moment + timedelta(seconds=3))
    assert len(await winners.persist_batch(cash_item.id, entries)) == 3
    deadline = moment + timedelta(seconds=3 + get_settings().seckill_payment_seconds)
    rows = {r["member_id"]: r for r in await SeckillOrder.filter(item_id=cash_item.id).values()}
    for (_entry_id, fields), m in zip(entries, members, strict=True):
        row = rows[m]
        assert row["reservation_id"] == fields["rid"]
        assert row["won_at"] == datetime.fromtimestamp(int(fields["ts"]) / 1000, tz=UTC)
        assert row["created_at"] == row["updated_at"] == moment + timedelta(seconds=3)
        assert (row["points_price"], row["cash_price_fen"]) == (20, 990)
        assert row["mall_order_id"] is None
    for m in members[:2]:
        assert rows[m]["status"] == OrderStatus.PENDING_PAYMENT
        assert rows[m]["pay_deadline"] == deadline
        assert (rows[m]["release_reason"], rows[m]["stock_returned"]) == ("", False)
    short = rows[members[2]]
    assert short["status"] == OrderStatus.RELEASED and short["pay_deadline"] is None
    assert short["release_reason"] == "not_enough_points"
    assert short["stock_returned"] is True  # given back after the commit
    assert (await SeckillItem.get(id=cash_item.id)).sold == 2
    await _assert_reconciled(cash_item.id)


async def test_a_free_win_whose_member_is_gone_leaves_the_rest_of_the_batch_whole(
    make_item: MakeItem,
) -> None:
    item = await make_item(stock=10)
    members = await make_member_ids(3)
    rids = await _win_all(item.id, members)
    await Member.filter(id=members[1]).delete()
    assert await service.process_pending_once("c") == 3  # the gone member's win is done
    orders = await SeckillOrder.filter(item_id=item.id).values_list("reservation_id", "status")
    assert sorted(orders) == sorted(
        [(rids[0], OrderStatus.CONFIRMED), (rids[2], OrderStatus.CONFIRMED)]
    )
    assert (await SeckillItem.get(id=item.id)).sold == 2  # the batch's unit for it put back
    assert await _stock(item.id) == 8  # and its Redis unit
    assert await get_redis().sismember(key(item.id, "returned"), rids[1])


async def test_two_consumers_spending_the_same_members_in_two_orders_never_deadlock(
    make_item: MakeItem, caplog: pytest.LogCaptureFixture
) -> None:
    """Two items' batches written at once (the worker's two consumer tasks). One item has
    fewer units in the database than Redis handed out, so its batch goes win by win and
    spends in the stream's order (here: highest member id first); the other spends its
    batch in one `spend_many` (id order). The win-by-win batch locks its members in id
    order first, so one waits for the other instead of deadlocking (PostgreSQL)."""
    short_item = await make_item(stock=10, points_price=100)
    other_item = await make_item(stock=10, points_price=100)
    low, mid, high = await make_member_ids(3)
    for m in (low, mid, high):
        await points_service.earn(m, 1000, idempotency_key=f"t:{m}", reason="test")
    await SeckillItem.filter(id=short_item.id).update(stock=2)  # room for 2 of 3
    await _win_all(short_item.id, [high, mid, low])
    await _win_all(other_item.id, [mid, high])
    batches = [
        (item.id, await winners.read_entries(item.id, name, count=10, claim_idle_ms=60_000))
        for item, name in ((short_item, "one"), (other_item, "two"))
    ]
    with caplog.at_level("WARNING", logger="mall.seckill"):
        done = await asyncio.gather(*(winners.persist_batch(i, e) for i, e in batches))
    # (the short item's oversell is logged as an error, as it should be)
    assert not [r.getMessage() for r in caplog.records if "halves" in r.getMessage()]
    assert [len(d) for d in done] == [3, 2]
    short = {o.member_id: o for o in await SeckillOrder.filter(item_id=short_item.id)}
    assert [short[m].status for m in (high, mid, low)] == [
        OrderStatus.CONFIRMED,
        OrderStatus.CONFIRMED,
        OrderStatus.RELEASED,
    ]
    assert [await points_service.get_balance(m) for m in (low, mid, high)] == [1000, 800, 800]


async def test_a_backlog_of_more_wins_than_one_statement_takes_is_checked(
    make_item: MakeItem,
) -> None:
    # the worker down through a big sale: the wins stream's backlog can hold more
    # reservations than one statement's parameters (PostgreSQL: 32,767)
    item = await make_item(stock=10)
    async with get_redis().pipeline(transaction=False) as pipe:
        for n in range(40_000):
            pipe.xadd(key(item.id, "wins"), {"rid": f"backlog{n}"})
        await pipe.execute()
    check = await stock.check_item(item)
    assert check.in_flight == 40_000
