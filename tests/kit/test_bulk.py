"""kit.bulk.insert_rows writes what Tortoise's bulk_create writes, on SQLite and
PostgreSQL, in the open transaction, with Tortoise's errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from tortoise.exceptions import IntegrityError

from mall.kit import bulk, clock, tx
from mall.seckill.models import OrderStatus, SeckillItem, SeckillOrder, SeckillSession
from tests.factories import make_members

WON = datetime(2026, 2, 28, 16, 30, 0, 123456, tzinfo=UTC)


async def _item() -> SeckillItem:
    session = await SeckillSession.create(name="s", starts_at=WON, ends_at=WON.replace(hour=23))
    return await SeckillItem.create(session=session, title="t", stock=10)


def _columns(row: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in row.items() if k not in {"id", "reservation_id"}}


async def test_rows_equal_bulk_create_rows_defaults_and_clock_included() -> None:
    a, b = await make_members(2)
    item = await _item()
    with clock.frozen_at(WON):
        await SeckillOrder.bulk_create(
            [
                SeckillOrder(reservation_id="orm-1", item_id=item.id, member_id=a.id,
                             status=OrderStatus.CONFIRMED, won_at=WON),
                SeckillOrder(reservation_id="orm-2", item_id=item.id, member_id=b.id,
                             points_price=5, status=OrderStatus.PENDING_PAYMENT,
                             pay_deadline=WON, won_at=WON),
            ]
        )  # fmt: skip
        await bulk.insert_rows(
            SeckillOrder,
            [
                {"reservation_id": "raw-1", "item_id": item.id, "member_id": a.id,
                 "status": OrderStatus.CONFIRMED, "won_at": WON, "pay_deadline": None,
                 "points_price": 0},
                {"reservation_id": "raw-2", "item_id": item.id, "member_id": b.id,
                 "status": OrderStatus.PENDING_PAYMENT, "won_at": WON, "pay_deadline": WON,
                 "points_price": 5},
            ],
        )  # fmt: skip
    orm = await SeckillOrder.filter(reservation_id__startswith="orm").order_by("id").values()
    raw = await SeckillOrder.filter(reservation_id__startswith="raw").order_by("id").values()
    assert [_columns(r) for r in raw] == [_columns(r) for r in orm]
    assert raw[1]["status"] == OrderStatus.PENDING_PAYMENT
    assert raw[0]["created_at"] == WON and raw[0]["stock_returned"] is False
    # text order is time order on SQLite: a filter by time finds the raw rows too
    assert await SeckillOrder.filter(won_at__gte=WON).count() == 4


async def test_in_a_transaction_a_duplicate_raises_integrity_error_and_rolls_back() -> None:
    (a,) = await make_members(1)
    item = await _item()
    row = {"reservation_id": "dup", "item_id": item.id, "member_id": a.id,
           "status": OrderStatus.CONFIRMED, "won_at": WON}  # fmt: skip
    with pytest.raises(IntegrityError):
        async with tx.transaction():
            await bulk.insert_rows(SeckillOrder, [row, {**row, "reservation_id": "other"}])
            await bulk.insert_rows(SeckillOrder, [row])
    assert await SeckillOrder.all().count() == 0


async def test_a_required_field_left_out_or_an_unknown_one_is_refused() -> None:
    with pytest.raises(TypeError, match="won_at"):
        await bulk.insert_rows(SeckillOrder, [{"reservation_id": "x", "item_id": 1,
                                               "member_id": 1, "status": "confirmed"}])  # fmt: skip
    with pytest.raises(TypeError, match="nope"):
        await bulk.insert_rows(SeckillOrder, [{"nope": 1}])
    await bulk.insert_rows(SeckillOrder, [])  # nothing to do


async def test_a_json_field_left_out_gets_its_default_encoded() -> None:
    from mall.members.models import Member

    await bulk.insert_rows(Member, [{"openid": "o_bulk", "nickname": "bulk"}])
    member = await Member.get(openid="o_bulk")
    assert member.tags == []


async def test_select_in_reads_the_columns_of_the_rows_named() -> None:
    a, b = await make_members(2)
    item = await _item()
    rows = [
        {"reservation_id": f"r-{i}", "item_id": item.id, "member_id": (a.id, b.id)[i % 2],
         "status": OrderStatus.CONFIRMED if i % 3 else OrderStatus.RELEASED, "won_at": WON}
        for i in range(2500)
    ]  # fmt: skip
    await bulk.insert_rows(SeckillOrder, rows)
    wanted = [f"r-{i}" for i in range(0, 2500, 2)] + ["r-none"]  # more than one chunk
    found = await bulk.select_in(
        SeckillOrder, "reservation_id", wanted, ["reservation_id", "member_id", "status"]
    )
    assert sorted(found) == sorted(
        (r["reservation_id"], r["member_id"], r["status"].value) for r in rows[::2]
    )
    async with tx.transaction():  # the transaction's own rows
        await bulk.insert_rows(SeckillOrder, [{**rows[0], "reservation_id": "in-tx"}])
        assert await bulk.select_in(SeckillOrder, "reservation_id", ["in-tx"], ["item_id"]) == [
            (item.id,)
        ]
    assert await bulk.select_in(SeckillOrder, "reservation_id", [], ["id"]) == []
    with pytest.raises(TypeError, match="nope"):
        await bulk.select_in(SeckillOrder, "nope", ["x"], ["id"])


async def test_created_and_updated_at_are_one_moment_per_call() -> None:
    (a,) = await make_members(1)
    item = await _item()
    row = {"item_id": item.id, "member_id": a.id, "status": OrderStatus.CONFIRMED, "won_at": WON}
    await bulk.insert_rows(SeckillOrder, [{**row, "reservation_id": f"t-{i}"} for i in range(50)])
    stamps = await SeckillOrder.all().values_list("created_at", "updated_at")
    assert len({stamp for pair in stamps for stamp in pair}) == 1


async def test_outside_a_transaction_a_duplicate_writes_none_of_the_rows() -> None:
    (a,) = await make_members(1)
    item = await _item()
    row = {"reservation_id": "first", "item_id": item.id, "member_id": a.id,
           "status": OrderStatus.CONFIRMED, "won_at": WON}  # fmt: skip
    await bulk.insert_rows(SeckillOrder, [row])
    with pytest.raises(IntegrityError):
        await bulk.insert_rows(SeckillOrder, [{**row, "reservation_id": "second"}, row])
    assert await SeckillOrder.all().values_list("reservation_id", flat=True) == ["first"]


async def test_a_json_field_given_is_written_as_the_orm_writes_it() -> None:
    from mall.members.models import Member

    tags = ["vip", "新客", {"nested": [1, 2]}]
    await bulk.insert_rows(Member, [{"openid": "o_json", "nickname": "n", "tags": tags}])
    await Member.create(openid="o_orm", nickname="n", tags=tags)
    written = await Member.filter(openid__in=["o_json", "o_orm"]).values_list("tags", flat=True)
    assert written == [tags, tags]
