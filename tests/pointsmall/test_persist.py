"""The consumer's batch: every column of the rows it writes, the settle of a whole batch in
one Redis call (units back once per reservation, in order) and its voucher codes."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime

import pytest

from mall.kit import clock
from mall.pointsmall import persist, stock
from mall.pointsmall import service as pm_service
from mall.pointsmall.models import PointsMallRedemption
from mall.pointsmall.stock import Settle, item_keys, parse_pending
from mall.redis import get_redis
from tests.pointsmall.conftest import MakeItem, NewMember, db_stock, redis_stock


@pytest.mark.clock
async def test_a_batch_writes_every_column_and_settles_in_one_call(
    make_item: MakeItem, new_member: NewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = await make_item(total_stock=10, points_price=100, limit_per_period=3, limit_period="day")
    rich = [(await new_member(points=1000))[0] for _ in range(3)]
    poor = (await new_member(points=50))[0]
    moment = datetime.fromisoformat("2026-11-30T23:58:00+08:00")
    clock.set_now(moment)
    answers = {m: await pm_service.redeem(m, item["id"], 1, None, f"k{m}") for m in [*rich, poor]}
    calls: list[int] = []
    settle_many = stock.settle_many

    async def counted(item_id: int, settles: list[Settle]) -> list[object]:
        calls.append(len(settles))
        return list(await settle_many(item_id, settles))

    monkeypatch.setattr(stock, "settle_many", counted)
    assert await persist.process_pending_once() == 4
    assert calls == [4]  # one Redis call for the batch

    rows = {r.member_id: r for r in await PointsMallRedemption.filter(item_id=item["id"])}
    for m in rich:
        r = rows[m]
        assert (r.reservation_id, r.status, r.release_reason) == (
            answers[m].reservation_id,
            "issued",
            "",
        )
        assert (r.item_name, r.kind, r.quantity, r.points_spent, r.period_label) == (
            "Mug",
            "voucher",
            1,
            100,
            "d20261130",
        )
        assert r.spend_key == f"pointsmall:redeem:{r.reservation_id}"
        assert r.voucher_code and re.fullmatch(
            r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}", r.voucher_code
        )
        assert r.coupon_ids is None and r.address is None and r.cash_fen == 0
        assert r.created_at == moment and r.updated_at == moment
        assert (r.carrier, r.cancel_reason, r.stock_returned, r.hold_id) == ("", "", False, None)
    released = rows[poor]
    assert (released.status, released.release_reason, released.points_spent) == (
        "released",
        "not_enough_points",
        0,
    )
    assert (released.spend_key, released.voucher_code, released.period_label) == (
        "",
        None,
        "d20261130",
    )
    assert released.created_at == moment
    # the released unit and its limits went back, once; nothing is pending any more
    keys = item_keys(item["id"], "d20261130")
    assert await redis_stock(item["id"]) == 7 and await db_stock(item["id"]) == 7
    assert await get_redis().hget(keys.buyers, str(poor)) is None
    assert await get_redis().hget(keys.period, str(poor)) is None
    assert await get_redis().hget(keys.period, str(rich[0])) == "1"
    assert await get_redis().hlen(keys.res) == 0
    assert await get_redis().xlen(keys.wins) == 0


async def test_settle_many_gives_back_once_in_order(
    make_item: MakeItem, new_member: NewMember
) -> None:
    item = await make_item(total_stock=10, points_price=100, limit_per_member=5)
    members = [(await new_member(points=1000))[0] for _ in range(3)]
    rids = [
        (await pm_service.redeem(m, item["id"], 2, None, f"k{m}")).reservation_id for m in members
    ]
    keys = item_keys(item["id"])
    infos = {rid: parse_pending(str(await get_redis().hget(keys.res, rid))) for rid in rids}
    assert await redis_stock(item["id"]) == 4
    replies = await stock.settle_many(
        item["id"],
        [
            Settle(rids[0], infos[rids[0]], give_back=True),
            Settle(rids[1], infos[rids[1]], give_back=False),
            Settle(rids[0], infos[rids[0]], give_back=True),  # a replay in the same call
            Settle(rids[2], infos[rids[2]], give_back=True),
        ],
    )
    assert [str(r) for r in replies] == ["ok|6", "ok|", "dup", "ok|8"]
    assert await get_redis().hlen(keys.res) == 0
    assert await get_redis().hget(keys.buyers, str(members[1])) == "2"
    assert await get_redis().hget(keys.buyers, str(members[0])) is None
    # a later batch replaying them gives nothing back twice
    again = await stock.settle_many(item["id"], [Settle(rids[2], infos[rids[2]], give_back=True)])
    assert [r.status for r in again] == ["dup"]
    assert await redis_stock(item["id"]) == 8
    await get_redis().delete(keys.meta)  # cold: nothing is given back into a cold pool
    cold = await stock.settle_many(item["id"], [Settle("x", infos[rids[1]], give_back=True)])
    assert [r.status for r in cold] == ["cold"]
    assert await stock.settle_many(item["id"], []) == []


async def test_settle_many_takes_a_batch_larger_than_lua_unpacks_at_once(
    make_item: MakeItem, new_member: NewMember
) -> None:
    item = await make_item(total_stock=10, points_price=100)
    member_id = (await new_member(points=1000))[0]
    rid = (await pm_service.redeem(member_id, item["id"], 1, None, "k")).reservation_id
    keys = item_keys(item["id"])
    info = parse_pending(str(await get_redis().hget(keys.res, rid)))
    fake = [f"{item['id']}-x{i}" for i in range(2500)]
    await get_redis().hset(keys.res, mapping=dict.fromkeys(fake, "1|1|100|0|"))
    settles = [Settle(r, info, give_back=False) for r in fake]
    replies = await stock.settle_many(item["id"], [*settles, Settle(rid, info, give_back=True)])
    assert len(replies) == 2501 and {str(r) for r in replies[:-1]} == {"ok|"}
    assert str(replies[-1]) == "ok|10"
    assert await get_redis().hlen(keys.res) == 0


def test_voucher_codes_use_the_whole_alphabet_evenly() -> None:
    codes = [persist._voucher_code() for _ in range(4000)]
    assert all(re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}", c) for c in codes)
    seen = Counter("".join(c.replace("-", "") for c in codes))
    assert set(seen) == set(persist._VOUCHER_ALPHABET)  # no 0/O, 1/I
    # 48,000 characters over 32: 1,500 each expected; far outside this is a biased mapping
    assert min(seen.values()) > 1_300 and max(seen.values()) < 1_700
    assert len(set(codes)) == len(codes)
