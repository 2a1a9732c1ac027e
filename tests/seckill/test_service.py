from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter
from datetime import timedelta

import pytest

from mall.config import Settings
from mall.kit import clock
from mall.points import service as points_service
from mall.redis import get_redis
from mall.seckill import service, tasks, winners
from mall.seckill.models import OrderStatus, SeckillItem, SeckillOrder
from mall.seckill.service import key
from tests.factories import make_member_ids
from tests.seckill.conftest import MakeItem


async def _gather_in_batches(
    calls: list[tuple[int, int]], batch: int = 500
) -> list[service.Attempt]:
    results: list[service.Attempt] = []
    for start in range(0, len(calls), batch):
        chunk = calls[start : start + batch]
        results.extend(await asyncio.gather(*(service.attempt(i, m) for i, m in chunk)))
    return results


async def _assert_reconciled(item_id: int) -> None:
    checks = await service.reconcile([item_id])
    assert checks and all(c.ok for c in checks), [c.line() for c in checks]


async def test_burst_5000_members_20000_attempts_stock_500(make_item: MakeItem) -> None:
    item = await make_item(stock=500, cash_price_fen=990, limit=1)
    members = await make_member_ids(5000)
    calls = [(item.id, m) for m in members for _ in range(4)]
    random.Random(5).shuffle(calls)

    results = await _gather_in_batches(calls)

    answers = Counter(r.result for r in results)
    assert len(results) == 20_000
    assert answers["won"] == 500, answers
    assert set(answers) <= {"won", "sold_out", "limit_reached"}, answers
    winners = Counter(m for (_i, m), r in zip(calls, results, strict=True) if r.result == "won")
    assert len(winners) == 500 and max(winners.values()) == 1
    assert len({r.reservation_id for r in results if r.result == "won"}) == 500
    # losers never touched the database
    assert await SeckillOrder.all().count() == 0
    assert int(await get_redis().get(key(item.id, "stock"))) == 0

    assert await service.drain() == 500
    orders = await SeckillOrder.filter(item_id=item.id)
    assert len(orders) == 500
    assert {o.member_id for o in orders} == set(winners)
    assert all(o.status == OrderStatus.PENDING_PAYMENT for o in orders)
    assert (await SeckillItem.get(id=item.id)).sold == 500
    await _assert_reconciled(item.id)
    report = await tasks.check_seckill()
    assert report.ok, report.lines


async def test_points_win_spends_points_and_a_short_member_loses_it(make_item: MakeItem) -> None:
    item = await make_item(stock=2, points_price=100)
    alice, bob, carol = await make_member_ids(3)
    await points_service.earn(alice, 150, idempotency_key="t:a", reason="test")
    await points_service.earn(bob, 50, idempotency_key="t:b", reason="test")
    await points_service.earn(carol, 100, idempotency_key="t:c", reason="test")

    won_a = await service.attempt(item.id, alice)
    won_b = await service.attempt(item.id, bob)
    assert won_a.result == won_b.result == "won"
    assert (await service.attempt(item.id, carol)).result == "sold_out"
    assert won_b.reservation_id
    assert (await service.reservation(bob, won_b.reservation_id)).status == "pending"

    await service.drain()
    assert await points_service.get_balance(alice) == 50
    assert await points_service.get_balance(bob) == 50  # nothing taken
    status_b = await service.reservation(bob, won_b.reservation_id)
    assert status_b.status == "released" and status_b.release_reason == "not_enough_points"
    assert won_a.reservation_id
    assert (await service.reservation(alice, won_a.reservation_id)).status == "confirmed"
    # the unit went back: stock 1 again, and the sold-out memory is forgotten
    assert int(await get_redis().get(key(item.id, "stock"))) == 1
    await _assert_reconciled(item.id)
    assert (await service.attempt(item.id, carol)).result == "won"
    await service.drain()
    assert await points_service.get_balance(carol) == 0
    assert await SeckillOrder.filter(item_id=item.id, status=OrderStatus.CONFIRMED).count() == 2
    await _assert_reconciled(item.id)


async def test_unpaid_cash_win_goes_back_after_the_deadline(
    make_item: MakeItem, settings: Settings
) -> None:
    item = await make_item(stock=2, cash_price_fen=1990)
    alice, bob, carol = await make_member_ids(3)
    won_a = await service.attempt(item.id, alice)
    won_b = await service.attempt(item.id, bob)
    assert won_a.reservation_id and won_b.reservation_id
    assert (await service.attempt(item.id, carol)).result == "sold_out"
    await service.drain()
    status_a = await service.reservation(alice, won_a.reservation_id)
    assert status_a.status == "pending_payment" and status_a.pay_deadline is not None
    await service.mark_paid(won_b.reservation_id)

    assert await service.expire_unpaid() == 0  # not due yet
    clock.advance(timedelta(seconds=settings.seckill_payment_seconds + 1))
    assert await service.expire_unpaid() == 1
    assert await service.expire_unpaid() == 0  # once
    assert (await service.reservation(alice, won_a.reservation_id)).status == "expired"
    assert (await service.reservation(bob, won_b.reservation_id)).status == "paid"
    with pytest.raises(Exception) as raised:
        await service.mark_paid(won_a.reservation_id)
    assert getattr(raised.value, "code", "") == "SECKILL_ORDER_NOT_PAYABLE"
    assert int(await get_redis().get(key(item.id, "stock"))) == 1
    assert (await SeckillItem.get(id=item.id)).sold == 1
    await _assert_reconciled(item.id)
    assert (await service.attempt(item.id, carol)).result == "won"


async def test_window_not_started_then_live_then_ended(make_item: MakeItem) -> None:
    item = await make_item(stock=5, starts_in=3600, lasts=600)
    (alice,) = await make_member_ids(1)
    assert (await service.attempt(item.id, alice)).result == "not_started"
    clock.advance(timedelta(seconds=3601))
    assert (await service.attempt(item.id, alice)).result == "won"
    clock.advance(timedelta(seconds=600))
    (bob,) = await make_member_ids(1, prefix="b")
    assert (await service.attempt(item.id, bob)).result == "ended"
    assert int(await get_redis().get(key(item.id, "stock"))) == 4


async def test_close_early_answers_ended(make_item: MakeItem) -> None:
    item = await make_item(stock=5)
    alice, bob = await make_member_ids(2)
    assert (await service.attempt(item.id, alice)).result == "won"
    await service.close_session(item.session_id, None)
    assert (await service.attempt(item.id, bob)).result == "ended"
    await service.drain()
    await _assert_reconciled(item.id)


async def test_rate_limited_per_member(make_item: MakeItem, settings: Settings) -> None:
    item = await make_item(stock=100, limit=100)
    alice, bob = await make_member_ids(2)
    old = settings.seckill_attempts_per_window
    settings.seckill_attempts_per_window = 2
    try:
        assert (await service.attempt(item.id, alice)).result == "won"
        assert (await service.attempt(item.id, alice)).result == "won"
        limited = await service.attempt(item.id, alice)
        assert limited.result == "rate_limited"
        assert limited.retry_after_ms and 0 < limited.retry_after_ms <= 1000
        assert (await service.attempt(item.id, bob)).result == "won"  # per member
    finally:
        settings.seckill_attempts_per_window = old
    assert int(await get_redis().get(key(item.id, "stock"))) == 97


async def test_idempotency_key_replays_the_same_win(make_item: MakeItem) -> None:
    item = await make_item(stock=1)
    alice, bob = await make_member_ids(2)
    first = await service.attempt(item.id, alice, "tap-1")
    again = await service.attempt(item.id, alice, "tap-1")
    assert first.result == again.result == "won"
    assert first.reservation_id == again.reservation_id
    assert (await service.attempt(item.id, bob, "tap-1")).result == "sold_out"  # keys per member
    # once sold out, the answer comes from process memory, but a keyed win still replays
    replay = await service.attempt(item.id, alice, "tap-1")
    assert replay.result == "won" and replay.reservation_id == first.reservation_id
    assert (await service.attempt(item.id, alice, "tap-2")).result == "sold_out"
    await service.drain()
    assert await SeckillOrder.all().count() == 1


async def test_limit_reached(make_item: MakeItem) -> None:
    item = await make_item(stock=10, limit=2)
    (alice,) = await make_member_ids(1)
    results = [(await service.attempt(item.id, alice)).result for _ in range(3)]
    assert results == ["won", "won", "limit_reached"]


async def test_consumer_killed_after_reading_and_committing_but_before_ack(
    make_item: MakeItem,
) -> None:
    item = await make_item(stock=100, points_price=10)
    members = await make_member_ids(100)
    for m in members:
        await points_service.earn(m, 10, idempotency_key=f"t:{m}", reason="test")
    results = await asyncio.gather(*(service.attempt(item.id, m) for m in members))
    wins = {r.reservation_id for r in results if r.result == "won"}
    assert len(wins) == 100

    # the doomed consumer read 60 entries, committed 30 of them, then died before acking
    entries = await service.read_entries(item.id, "doomed", count=60, claim_idle_ms=60_000)
    assert len(entries) == 60
    assert len(await winners.persist_batch(item.id, entries[:30])) == 30
    pending = await get_redis().xpending(key(item.id, "wins"), service.GROUP)
    assert pending["pending"] == 60
    # a healthy consumer does not steal entries that are not idle long enough
    assert await service.process_pending_once("rescuer", claim_idle_ms=60_000) == 40
    assert await SeckillOrder.all().count() == 70
    # after the idle time it claims them; the 30 already committed are not persisted twice
    assert await service.drain("rescuer", claim_idle_ms=0) == 60
    orders = await SeckillOrder.filter(item_id=item.id)
    assert {o.reservation_id for o in orders} == wins and len(orders) == 100
    assert all(o.status == OrderStatus.CONFIRMED for o in orders)
    for m in members[:5]:
        assert await points_service.get_balance(m) == 0  # spent once, not twice
    assert (await get_redis().xpending(key(item.id, "wins"), service.GROUP))["pending"] == 0
    assert await get_redis().xlen(key(item.id, "wins")) == 0
    await _assert_reconciled(item.id)


async def test_consumer_task_cancelled_mid_stream(
    make_item: MakeItem, monkeypatch: pytest.MonkeyPatch
) -> None:
    # batches of 500 (not the default's 2,000): the first commits, the rest are cut off
    monkeypatch.setattr(winners, "CONSUMER", dataclasses.replace(winners.CONSUMER, count=500))
    item = await make_item(stock=1200)
    members = await make_member_ids(1200)
    results = await asyncio.gather(*(service.attempt(item.id, m) for m in members))
    wins = {r.reservation_id for r in results if r.result == "won"}
    doomed = asyncio.create_task(service.drain("doomed"))
    # the first batch (of 500) committed; the next ones on their way
    while await SeckillOrder.all().count() < 500:  # noqa: ASYNC110 - polling the database
        await asyncio.sleep(0)
    # kill it wherever it is (mid-transaction, between commit and ack...); Python 3.11's
    # wait_for (used by redis-py) can swallow one cancel, so repeat until it is gone
    while not doomed.done():
        doomed.cancel()
        await asyncio.sleep(0)
    assert doomed.cancelled()
    persisted_before = await SeckillOrder.all().count()
    assert persisted_before < 1200
    await service.drain("rescuer", claim_idle_ms=0)
    orders = await SeckillOrder.filter(item_id=item.id)
    assert len(orders) == 1200 and {o.reservation_id for o in orders} == wins
    await _assert_reconciled(item.id)


async def test_rewarm_keeps_stock_and_cold_warm_counts_from_the_database(
    make_item: MakeItem,
) -> None:
    item = await make_item(stock=10)
    members = await make_member_ids(3)
    for m in members:
        assert (await service.attempt(item.id, m)).result == "won"
    await service.warm_session(item.session_id)  # a re-warm must not refill the stock
    assert int(await get_redis().get(key(item.id, "stock"))) == 7
    await service.drain()
    # Redis lost the item entirely (e.g. a new, empty Redis): warm from the record of truth
    await get_redis().delete(*[key(item.id, p) for p in ("meta", "stock", "buyers")])
    assert (await service.attempt(item.id, members[0])).result == "limit_reached"
    assert int(await get_redis().get(key(item.id, "stock"))) == 7
    await _assert_reconciled(item.id)


async def test_reconciler_reports_a_mismatch(make_item: MakeItem) -> None:
    item = await make_item(stock=10)
    (alice,) = await make_member_ids(1)
    await service.attempt(item.id, alice)
    report = await tasks.check_seckill()
    assert report.ok, report.lines  # an unpersisted win counts as backlog
    await service.drain()
    await get_redis().incr(key(item.id, "stock"))  # a unit appeared out of nowhere
    report = await tasks.check_seckill()
    assert not report.ok
    assert any("MISMATCH" in line and "!= 10" in line for line in report.lines), report.lines


async def test_database_guard_refuses_a_unit_redis_should_not_have(make_item: MakeItem) -> None:
    item = await make_item(stock=2)
    alice, bob, carol = await make_member_ids(3)
    await service.attempt(item.id, alice)
    await service.attempt(item.id, bob)
    await service.drain()
    await get_redis().set(key(item.id, "stock"), 1)  # e.g. Redis lost its last second
    assert (await service.attempt(item.id, carol)).result == "won"
    await service.drain()
    order = await SeckillOrder.get(member_id=carol)
    assert order.status == OrderStatus.RELEASED and order.release_reason == "oversell_guard"
    assert (await SeckillItem.get(id=item.id)).sold == 2
    assert int(await get_redis().get(key(item.id, "stock"))) == 0


async def test_unknown_item(make_item: MakeItem) -> None:
    (alice,) = await make_member_ids(1)
    with pytest.raises(Exception) as raised:
        await service.attempt(987654, alice)
    assert getattr(raised.value, "code", "") == "SECKILL_ITEM_NOT_FOUND"


async def test_the_reconcile_job_repairs_a_drift_that_persists(make_item: MakeItem) -> None:
    item = await make_item(stock=10)
    (alice,) = await make_member_ids(1)
    await service.attempt(item.id, alice)
    await service.drain()
    await get_redis().decr(key(item.id, "stock"))  # e.g. an increase lost between its steps
    job = next(j for j in tasks.JOBS if j.name == "seckill.reconcile")
    await job.run()
    assert int(await get_redis().get(key(item.id, "stock"))) == 8  # seen once: reported
    await job.run()
    assert int(await get_redis().get(key(item.id, "stock"))) == 9
    await _assert_reconciled(item.id)


@pytest.mark.nodb
def test_a_win_answer_is_the_bytes_pydantic_writes_in_every_locale() -> None:
    from mall.i18n import set_locale
    from mall.seckill.attempt import Attempt, answer_json

    for locale in ("zh_CN", "en"):
        set_locale(locale)
        for rid in ("12-0a1b2c3d4e5f6a7b", "9-x", 'odd"id\\', "é-1"):
            answer = Attempt("won", rid)
            assert answer_json(answer) == answer.out().model_dump_json().encode(), rid
    set_locale("zh_CN")


async def test_a_batch_that_fails_as_a_whole_is_written_in_halves(
    make_item: MakeItem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One win breaks every transaction it is in: the batch of 16 fails, its halves are
    tried and theirs; the other 15 orders are written, the bad one stays pending."""
    item = await make_item(stock=16)
    members = await make_member_ids(16)
    results = [await service.attempt(item.id, m) for m in members]
    bad = results[9].reservation_id
    tries: list[int] = []
    real = winners.persist_wins

    async def persist_wins(item_id: int, wins: list[winners.Win]) -> list[winners.Win]:
        tries.append(len(wins))
        if any(w.reservation_id == bad for w in wins):
            raise RuntimeError("deadlock detected")
        return await real(item_id, wins)

    monkeypatch.setattr(winners, "persist_wins", persist_wins)
    assert await winners.process_pending_once(count=16) == 15
    assert len(tries) <= 1 + 2 * 4  # the batch, then about 2 * log2(16); not 1 + 16
    orders = await SeckillOrder.filter(item_id=item.id)
    assert {o.reservation_id for o in orders} == {r.reservation_id for r in results} - {bad}
    monkeypatch.setattr(winners, "persist_wins", real)
    assert await winners.process_pending_once(count=16, claim_idle_ms=0) == 1
    assert await SeckillOrder.filter(item_id=item.id).count() == 16
    await _assert_reconciled(item.id)
