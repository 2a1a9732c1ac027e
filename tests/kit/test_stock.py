"""The hot-stock kit on real Redis: warm-if-cold, give-back once, the adjust rule, the
reconcile equation."""

from __future__ import annotations

import asyncio

import pytest

from mall.kit import stock as kit
from mall.redis import get_redis

POOL = kit.Pool("kt", kit.PoolKeys)


class Refused(Exception):
    def __init__(self, left: int) -> None:
        super().__init__(left)
        self.left = left


async def _warm(object_id: int, *, left: int, initial: int, buyers: dict[int, int]) -> bool:
    keys = POOL.keys(object_id)
    return await (
        kit.Warm(keys).terms(limit=2).initial(initial).stock(left).counts(keys.buyers, buyers).run()
    )


async def _stock(object_id: int) -> int:
    return int(await get_redis().get(POOL.key(object_id, "stock")))


# --- layout and replies ---------------------------------------------------------------


@pytest.mark.nodb
def test_keys_share_one_hash_tag() -> None:
    keys = POOL.keys(42)
    assert keys.tag == "{kt:42}"
    assert [keys.meta, keys.stock, keys.buyers, keys.returned, keys("wins")] == [
        "{kt:42}:meta",
        "{kt:42}:stock",
        "{kt:42}:buyers",
        "{kt:42}:returned",
        "{kt:42}:wins",
    ]
    assert POOL.key(42, "stock") == keys.stock


@pytest.mark.nodb
def test_one_reply_format() -> None:
    assert kit.parse("sold_out") == kit.Reply("sold_out", ())
    assert kit.parse("ok|7").number() == 7
    assert kit.parse("ok|a|b|c", 2) == kit.Reply("ok", ("a", "b|c"))
    assert str(kit.parse("won|3-abc")) == "won|3-abc"


# --- warm-if-cold ----------------------------------------------------------------------


async def test_a_cold_warm_loads_counts_and_a_rewarm_keeps_them() -> None:
    assert await _warm(1, left=5, initial=8, buyers={7: 2, 9: 1}) is True
    redis = get_redis()
    keys = POOL.keys(1)
    assert await _stock(1) == 5
    assert await redis.hgetall(keys.buyers) == {"7": "2", "9": "1"}
    assert await redis.hget(keys.meta, "initial") == "8"
    # units were taken in Redis since; a re-warm from older figures must not undo that
    await redis.decrby(keys.stock, 3)
    await redis.hset(keys.buyers, "11", 3)
    assert (
        await kit.Warm(keys).terms(limit=5).initial(99).stock(99).counts(keys.buyers, {7: 0}).run()
        is False
    )
    assert await _stock(1) == 2
    assert await redis.hgetall(keys.buyers) == {"7": "2", "9": "1", "11": "3"}
    assert await redis.hget(keys.meta, "initial") == "8"
    assert await redis.hget(keys.meta, "limit") == "5"  # terms are refreshed


async def test_a_warm_fills_kinds_of_unit_added_later() -> None:
    keys = POOL.keys(2)
    assert await kit.Warm(keys).terms(conf="x").units({"a": 3}).run() is True
    await get_redis().hincrby(keys.stock, "a", -1)
    assert await kit.Warm(keys).terms(conf="y").units({"a": 3, "b": 4}).run() is False
    assert await get_redis().hgetall(keys.stock) == {"a": "2", "b": "4"}


async def test_a_warm_must_write_the_meta() -> None:
    with pytest.raises(ValueError):
        await kit.Warm(POOL.keys(3)).stock(1).run()


async def test_decide_warms_a_cold_pool_and_retries_once() -> None:
    answers = iter(["cold", "ok|4"])
    warmed: list[int] = []

    async def run() -> str:
        return next(answers)

    async def warm() -> None:
        warmed.append(1)

    assert await kit.decide(run, warm) == "ok|4"
    assert warmed == [1]
    # still cold after the warm (e.g. the object is gone): the caller gets `cold`
    colds = iter(["cold", "cold"])

    async def cold() -> str:
        return next(colds)

    assert await kit.decide(cold, warm) == kit.COLD
    assert warmed == [1, 1]


async def test_concurrent_callers_warm_a_cold_pool_once() -> None:
    loads: list[int] = []

    async def load() -> None:
        loads.append(1)
        await asyncio.sleep(0.01)
        await _warm(4, left=1, initial=1, buyers={})

    await asyncio.gather(*(kit.warm_cold(POOL.keys(4), load) for _ in range(20)))
    assert loads == [1]
    await kit.warm_cold(POOL.keys(4), load)  # warm: nothing to do
    assert loads == [1]


# --- give back ---------------------------------------------------------------------------


async def test_give_back_happens_once_per_reservation() -> None:
    await _warm(5, left=0, initial=3, buyers={7: 2, 8: 1})
    keys = POOL.keys(5)
    first = await kit.give_back(keys, "r1", member=7, counters=[keys.buyers])
    assert first == kit.Reply(kit.OK, ("1",))
    again = await kit.give_back(keys, "r1", member=7, counters=[keys.buyers])
    assert again.status == kit.DUP
    assert await _stock(5) == 1
    assert await get_redis().hget(keys.buyers, "7") == "1"
    await kit.give_back(keys, "r2", member=8, counters=[keys.buyers])
    assert await get_redis().hexists(keys.buyers, "8") == 0  # a count of 0 is dropped
    assert await _stock(5) == 2
    # several at once, of one kind of unit
    await kit.Warm(POOL.keys(6)).terms(conf="x").units({"a": 0, "b": 1}).run()
    answer = await kit.give_back(POOL.keys(6), "r3", n=2, unit="a")
    assert answer.number() == 2
    assert await get_redis().hgetall(POOL.keys(6).stock) == {"a": "2", "b": "1"}


async def test_give_back_to_a_cold_pool_does_nothing_and_stays_possible() -> None:
    keys = POOL.keys(7)
    assert (await kit.give_back(keys, "r1", member=1)).status == kit.COLD
    assert not await get_redis().exists(keys.returned, keys.stock)
    await _warm(7, left=0, initial=1, buyers={1: 1})
    assert (await kit.give_back(keys, "r1", member=1, counters=[keys.buyers])).status == kit.OK
    assert await _stock(7) == 1


# --- the adjust rule ------------------------------------------------------------------


async def test_a_decrease_goes_to_redis_first_and_is_undone_if_the_database_refuses() -> None:
    await _warm(8, left=5, initial=5, buyers={})
    keys = POOL.keys(8)
    seen: list[int] = []

    async def commit() -> str:
        seen.append(await _stock(8))  # Redis has already moved
        return "done"

    assert await kit.adjust(keys, -2, commit, refused=Refused) == "done"
    assert seen == [3] and await _stock(8) == 3
    assert await get_redis().hget(keys.meta, "initial") == "3"

    async def failing() -> None:
        seen.append(await _stock(8))
        raise RuntimeError("database said no")

    with pytest.raises(RuntimeError):
        await kit.adjust(keys, -1, failing, refused=Refused)
    assert seen[-1] == 2
    assert await _stock(8) == 3  # undone
    assert await get_redis().hget(keys.meta, "initial") == "3"


async def test_a_decrease_redis_cannot_cover_is_refused_before_the_database() -> None:
    await _warm(9, left=2, initial=5, buyers={})
    called: list[int] = []

    async def commit() -> None:
        called.append(1)

    with pytest.raises(Refused) as refused:
        await kit.adjust(POOL.keys(9), -3, commit, refused=Refused)
    assert refused.value.left == 2 and called == []
    assert await _stock(9) == 2


async def test_an_increase_goes_to_redis_after_the_database_commits() -> None:
    await _warm(10, left=1, initial=1, buyers={})
    keys = POOL.keys(10)
    seen: list[int] = []

    async def commit() -> None:
        seen.append(await _stock(10))  # not yet moved

    await kit.adjust(keys, 4, commit, refused=Refused)
    assert seen == [1] and await _stock(10) == 5
    assert await get_redis().hget(keys.meta, "initial") == "5"

    async def failing() -> None:
        raise RuntimeError("database said no")

    with pytest.raises(RuntimeError):
        await kit.adjust(keys, 4, failing, refused=Refused)
    assert await _stock(10) == 5  # Redis never saw it


async def test_adjusting_a_cold_pool_leaves_it_to_its_next_warm() -> None:
    keys = POOL.keys(11)

    async def commit() -> None:
        pass

    await kit.adjust(keys, -1, commit, refused=Refused)
    await kit.adjust(keys, 3, commit, refused=Refused)
    assert not await get_redis().exists(keys.meta, keys.stock)
    # with a warm: loaded first, then moved
    await kit.adjust(
        keys,
        -1,
        commit,
        refused=Refused,
        warm=lambda: _warm(11, left=4, initial=4, buyers={}),
    )
    assert await _stock(11) == 3


async def test_repair_moves_by_the_measured_drift_without_touching_initial() -> None:
    await _warm(12, left=2, initial=5, buyers={})
    keys = POOL.keys(12)
    assert (await kit.repair(keys, 3)).number() == 5
    assert (await kit.repair(keys, -9)).status == kit.SHORT
    assert await _stock(12) == 5
    assert await get_redis().hget(keys.meta, "initial") == "5"


# --- snapshot and the reconcile equation -------------------------------------------------


async def test_snapshot_reads_a_pool_at_one_instant() -> None:
    await _warm(13, left=4, initial=6, buyers={7: 2})
    keys = POOL.keys(13)
    await get_redis().xadd(keys("wins"), {"rid": "13-a", "member": "7"})
    stock, buyers, wins, missing, returned = await kit.snapshot(
        [
            (keys.stock, "get"),
            (keys.buyers, "hgetall"),
            (keys("wins"), "xrange"),
            (keys("nothing"), "hgetall"),
            (keys.returned, "scard"),
        ]
    )
    assert stock == "4" and buyers == ["7", "2"] and missing == [] and returned == 0
    assert [fields for _id, fields in wins] == [["rid", "13-a", "member", "7"]]
    assert (await kit.snapshot([(keys("gone"), "get")])) == [None]


@pytest.mark.nodb
def test_the_equation_and_its_line() -> None:
    good = kit.Balance("item 1", initial=10, redis=4, held=3, in_flight=2, returns_due=1)
    assert good.ok and good.drift == 0
    assert good.line() == ("item 1: initial=10 redis=4 held=3 in_flight=2 returns_due=1 OK")
    bad = kit.Balance("item 1", initial=10, redis=5, held=3, in_flight=2, returns_due=1)
    assert not bad.ok and bad.drift == -1
    assert bad.problems == ["redis+held+in_flight+returns_due=11 != 10"]
    named = kit.Balance("s", 3, 2, 0, names=("drawn", "backlog", "due"), found=["odd"])
    assert not named.ok
    assert named.line().endswith("-> redis+drawn+backlog+due=2 != 3; odd")
    cold = kit.Balance("item 2", initial=10, redis=None, held=3)
    assert cold.ok  # not loaded: the database alone is the truth
    below = kit.Balance("item 3", initial=0, redis=-1, held=1)
    assert not below.ok and "redis below zero" in below.problems


async def test_balance_rereads_until_two_readings_agree() -> None:
    readings = iter([11, 12, 13, 13, 99])

    async def read() -> kit.Balance:
        return kit.Balance("item", initial=10, redis=next(readings), held=0)

    judged = await kit.balance(read, pause=0)
    assert judged.redis == 13 and judged.stable and not judged.ok

    calls: list[int] = []

    async def fine() -> kit.Balance:
        calls.append(1)
        return kit.Balance("item", initial=10, redis=10, held=0)

    assert (await kit.balance(fine, pause=0)).ok and calls == [1]  # one reading suffices

    moving = iter(range(20, 40))

    async def busy() -> kit.Balance:
        return kit.Balance("item", initial=10, redis=next(moving), held=0)

    judged = await kit.balance(busy, attempts=4, pause=0)
    assert not judged.stable and judged.problems[-1] == "no stable reading (busy?)"


async def test_the_reconciler_repairs_a_drift_seen_on_two_runs_in_a_row() -> None:
    await _warm(14, left=3, initial=5, buyers={})
    keys = POOL.keys(14)

    def reading(redis: int) -> kit.Balance:
        return kit.Balance("item 14", initial=5, redis=redis, held=1)

    # Redis short by 1 (e.g. an increase committed, then the process died)
    assert await kit.repair_persistent(keys, reading(3)) is False  # seen once
    assert await kit.repair_persistent(keys, reading(3)) is True
    assert await _stock(14) == 4
    assert await get_redis().hget(keys.meta, "initial") == "5"
    # a passing difference (different figures each run) is never repaired
    assert await kit.repair_persistent(keys, reading(5)) is False
    assert await kit.repair_persistent(keys, reading(6)) is False
    assert await _stock(14) == 4
    unstable = reading(6)
    unstable.stable = False
    assert await kit.repair_persistent(keys, unstable) is False
    assert await kit.repair_persistent(keys, reading(4)) is False  # agrees: nothing to do
