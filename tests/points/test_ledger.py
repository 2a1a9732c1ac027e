from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from tortoise.transactions import in_transaction

from mall.errors import MallError
from mall.kit import clock
from mall.members.models import Member
from mall.points import service
from mall.points.models import LevelChange, PointsEntry, PointsHold, PointsLot
from mall.points.tasks import check_ledger
from tests.points.helpers import assert_ledger_ok, new_member


async def test_earn_spend_and_idempotency() -> None:
    m = await new_member()
    e1 = await service.earn(m.id, 100, idempotency_key="e1", reason="test")
    again = await service.earn(m.id, 100, idempotency_key="e1", reason="test")
    assert again.id == e1.id and e1.balance_after == 100
    s1 = await service.spend(m.id, 30, idempotency_key="s1", reason="redeem")
    s1b = await service.spend(m.id, 30, idempotency_key="s1", reason="redeem")
    assert s1b.id == s1.id and s1.delta == -30 and s1.balance_after == 70
    assert await service.get_balance(m.id) == 70
    assert await PointsEntry.filter(member_id=m.id).count() == 2
    await assert_ledger_ok()


async def test_spend_short_changes_nothing() -> None:
    m = await new_member()
    await service.earn(m.id, 10, idempotency_key="e", reason="t")
    with pytest.raises(MallError) as info:
        await service.spend(m.id, 11, idempotency_key="s", reason="t")
    assert info.value.code == "NOT_ENOUGH_POINTS"
    assert info.value.params == {"balance": 10, "cost": 11}
    with pytest.raises(MallError):
        await service.hold(m.id, 11, idempotency_key="h", reason="t")
    assert await service.get_balance(m.id) == 10
    assert await PointsEntry.filter(member_id=m.id).count() == 1
    assert not await PointsHold.exists()
    # the key of the refused spend is still free to use
    await service.spend(m.id, 10, idempotency_key="s", reason="t")
    assert await service.get_balance(m.id) == 0
    await assert_ledger_ok()


async def test_spend_rolls_back_with_the_callers_transaction() -> None:
    m = await new_member()
    await service.earn(m.id, 50, idempotency_key="e", reason="t")

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with in_transaction():
            await service.spend(m.id, 20, idempotency_key="s", reason="t")
            await service.hold(m.id, 10, idempotency_key="h", reason="t")
            raise Boom()
    assert await service.get_balance(m.id) == 50
    assert await PointsEntry.filter(member_id=m.id).count() == 1
    # a caller that catches NOT_ENOUGH_POINTS keeps the rest of its transaction
    async with in_transaction():
        await service.spend(m.id, 20, idempotency_key="s2", reason="t")
        with pytest.raises(MallError):
            await service.spend(m.id, 31, idempotency_key="s3", reason="t")
    assert await service.get_balance(m.id) == 30
    await assert_ledger_ok()


@pytest.mark.clock
async def test_lots_spent_soonest_expiring_first() -> None:
    m = await new_member()
    late = datetime(2031, 1, 1, tzinfo=UTC)
    soon = datetime(2030, 1, 1, tzinfo=UTC)
    await service.earn(m.id, 50, idempotency_key="late", reason="t", expires_at=late)
    await service.earn(m.id, 50, idempotency_key="soon", reason="t", expires_at=soon)
    await service.spend(m.id, 60, idempotency_key="s", reason="t")
    lots = {lot.expires_at: lot.remaining for lot in await PointsLot.filter(member_id=m.id)}
    assert lots == {soon: 0, late: 40}
    # giving back part of the spend refills what it took, latest-expiring lot first
    await service.reverse("s", idempotency_key="r", reason="refund", points=15)
    lots = {lot.expires_at: lot.remaining for lot in await PointsLot.filter(member_id=m.id)}
    assert lots == {soon: 5, late: 50}
    await service.reverse("s", idempotency_key="r2", reason="refund")
    lots = {lot.expires_at: lot.remaining for lot in await PointsLot.filter(member_id=m.id)}
    assert lots == {soon: 50, late: 50}
    with pytest.raises(MallError) as info:
        await service.reverse("s", idempotency_key="r3", reason="refund", points=1)
    assert info.value.code == "POINTS_REVERSE_TOO_LARGE"
    await assert_ledger_ok()


@pytest.mark.clock
async def test_default_expiry_is_end_of_following_year_shanghai() -> None:
    m = await new_member()
    # 2025-12-31 20:00 UTC is already 2026-01-01 in Shanghai
    clock.set_now(datetime(2025, 12, 31, 20, 0, tzinfo=UTC))
    await service.earn(m.id, 5, idempotency_key="e", reason="t")
    lot = await PointsLot.get(member_id=m.id)
    assert lot.expires_at == datetime(2028, 1, 1, tzinfo=clock.SHANGHAI)


async def test_hold_capture_void() -> None:
    m = await new_member()
    await service.earn(m.id, 100, idempotency_key="e", reason="t")
    h = await service.hold(m.id, 40, idempotency_key="h1", reason="checkout", reference="o:1")
    assert (await service.hold(m.id, 40, idempotency_key="h1", reason="checkout")).id == h.id
    assert await service.get_balance(m.id) == 60
    await service.void(h.id, idempotency_key="v1")
    await service.void(h.id, idempotency_key="v1")
    assert await service.get_balance(m.id) == 100
    with pytest.raises(MallError) as info:
        await service.capture(h.id, idempotency_key="c1")
    assert info.value.code == "POINTS_HOLD_CLOSED"

    h2 = await service.hold(m.id, 70, idempotency_key="h2", reason="checkout")
    await service.capture(h2.id, idempotency_key="c2")
    await service.capture(h2.id, idempotency_key="c2")
    assert await service.get_balance(m.id) == 30
    with pytest.raises(MallError):
        await service.void(h2.id, idempotency_key="v2")
    # a captured hold is refunded with reverse
    await service.reverse("h2", idempotency_key="refund-h2", reason="refund", points=20)
    assert await service.get_balance(m.id) == 50
    h3 = await service.hold(m.id, 5, idempotency_key="h3", reason="checkout")
    with pytest.raises(MallError) as info:
        await service.reverse("h3", idempotency_key="r-h3", reason="x")
    assert info.value.code == "POINTS_NOT_REVERSIBLE"
    await service.void(h3.id, idempotency_key="v3")
    assert [e.kind for e in await PointsEntry.filter(member_id=m.id).order_by("id")] == [
        "earn", "hold", "void", "hold", "reverse", "hold", "void",
    ]  # fmt: skip
    await assert_ledger_ok()


async def test_claw_back_an_earn_never_goes_negative_and_takes_growth() -> None:
    m = await new_member()
    await service.earn(m.id, 600, idempotency_key="order-1", reason="order")
    member = await Member.get(id=m.id)
    assert member.growth_value == 600 and member.level == 1
    await service.spend(m.id, 500, idempotency_key="s", reason="t")
    entry = await service.reverse("order-1", idempotency_key="refund-1", reason="refund")
    assert entry.delta == -100 and entry.balance_after == 0
    member = await Member.get(id=m.id)
    assert member.points_balance == 0
    assert member.growth_value == 500  # 100/600 of the growth went back
    assert member.level == 1
    await service.earn(m.id, 10, idempotency_key="e2", reason="t", counts_for_growth=False)
    assert (await Member.get(id=m.id)).growth_value == 500
    await service.reverse("order-1", idempotency_key="refund-2", reason="refund", points=1)
    member = await Member.get(id=m.id)
    assert member.growth_value == 499 and member.level == 0
    changes = (
        await LevelChange.filter(member_id=m.id)
        .order_by("id")
        .values_list("from_level", "to_level")
    )
    assert changes == [(0, 1), (1, 0)]
    await assert_ledger_ok()


async def test_grant_for_order_rounds_down() -> None:
    m = await new_member()
    assert await service.grant_for_order(m.id, 999, idempotency_key="o0", reference="o0") is None
    e = await service.grant_for_order(m.id, 12_345, idempotency_key="o1", reference="order:1")
    assert e is not None and e.delta == 12
    again = await service.grant_for_order(m.id, 12_345, idempotency_key="o1", reference="order:1")
    assert again is not None and again.id == e.id
    assert await service.get_balance(m.id) == 12


async def test_bad_amounts_and_unknown_member() -> None:
    m = await new_member()
    for bad in (0, -5):
        with pytest.raises(MallError) as info:
            await service.spend(m.id, bad, idempotency_key="x", reason="t")
        assert info.value.code == "POINTS_AMOUNT_INVALID"
    with pytest.raises(MallError) as info:
        await service.earn(999_999, 5, idempotency_key="y", reason="t")
    assert info.value.code == "MEMBER_NOT_FOUND"


async def test_fifty_concurrent_spends_of_ten_against_a_hundred() -> None:
    m = await new_member()
    await service.earn(m.id, 60, idempotency_key="a", reason="t")
    await service.earn(m.id, 40, idempotency_key="b", reason="t")

    async def attempt(i: int) -> bool:
        try:
            await service.spend(m.id, 10, idempotency_key=f"s{i}", reason="t")
        except MallError as exc:
            assert exc.code == "NOT_ENOUGH_POINTS"
            return False
        return True

    results = await asyncio.gather(*(attempt(i) for i in range(50)))
    assert sum(results) == 10
    assert await service.get_balance(m.id) == 0
    assert await PointsEntry.filter(member_id=m.id, kind="spend").count() == 10
    report = await check_ledger()
    assert report.ok, report.lines


async def test_concurrent_same_key_spends_write_one_entry() -> None:
    m = await new_member()
    await service.earn(m.id, 100, idempotency_key="a", reason="t")
    entries = await asyncio.gather(
        *(service.spend(m.id, 10, idempotency_key="same", reason="t") for _ in range(20))
    )
    assert len({e.id for e in entries}) == 1
    assert await service.get_balance(m.id) == 90
    await assert_ledger_ok()


@pytest.mark.clock
async def test_expiry_job_consumes_the_right_lots() -> None:
    m = await new_member()
    other = await new_member()
    start = datetime(2025, 3, 1, 4, 0, tzinfo=UTC)
    clock.set_now(start)
    await service.earn(
        m.id, 30, idempotency_key="old", reason="t", expires_at=start + timedelta(days=10)
    )
    await service.earn(
        m.id, 50, idempotency_key="mid", reason="t", expires_at=start + timedelta(days=20)
    )
    await service.earn(m.id, 70, idempotency_key="new", reason="t")  # end of 2026
    await service.earn(
        other.id, 5, idempotency_key="o", reason="t", expires_at=start + timedelta(days=10)
    )
    await service.spend(m.id, 40, idempotency_key="s", reason="t")  # all of old, 10 of mid
    h = await service.hold(m.id, 20, idempotency_key="h", reason="t")  # 20 more of mid
    assert await service.expire_lapsed_lots() == 0

    clock.advance(timedelta(days=10))  # old lapses: nothing left in it
    assert await service.expire_lapsed_lots() == 5  # only the other member's lot
    assert await service.get_balance(m.id) == 90
    clock.advance(timedelta(days=10))  # mid lapses with 20 left
    assert await service.expire_lapsed_lots() == 20
    assert await service.get_balance(m.id) == 70
    assert await service.expire_lapsed_lots() == 0  # never twice
    # voiding the hold gives 20 back to the lapsed lot; the next run expires them
    await service.void(h.id, idempotency_key="v")
    assert await service.get_balance(m.id) == 90
    assert await service.expire_lapsed_lots() == 20
    assert await service.get_balance(m.id) == 70
    expired = await PointsEntry.filter(kind="expire").order_by("id").values_list("delta", flat=True)
    assert expired == [-5, -20, -20]
    lots = await PointsLot.filter(member_id=m.id).order_by("id").values_list("remaining", flat=True)
    assert lots == [0, 0, 70]
    await assert_ledger_ok()


async def test_check_ledger_reports_a_tampered_balance() -> None:
    m = await new_member()
    await service.earn(m.id, 10, idempotency_key="e", reason="t")
    assert (await check_ledger()).ok
    await Member.filter(id=m.id).update(points_balance=11)
    report = await check_ledger()
    assert not report.ok
    assert any(f"member {m.id}" in line and "MISMATCH" in line for line in report.lines)
