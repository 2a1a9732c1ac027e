"""The kit's stream consumer on real Redis: whole batches to the domain, acknowledged and
deleted only when done, the rest pending and claimed after the idle time."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from mall.kit import stock as kit
from mall.redis import get_redis

POOL = kit.Pool("kt", kit.PoolKeys)
STREAM = kit.Stream(POOL, "wins", group="orders", active="kt:active")


class Domain:
    """A persist_batch that records the batches it saw and refuses some entries."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.batches: list[tuple[int, list[str]]] = []
        self.refuse = set(refuse)
        self.raises: Exception | None = None

    async def persist_batch(self, object_id: int, entries: list[kit.Entry]) -> Sequence[str]:
        self.batches.append((object_id, [fields["rid"] for _id, fields in entries]))
        if self.raises is not None:
            raise self.raises
        return [entry_id for entry_id, fields in entries if fields["rid"] not in self.refuse]


def _consumer(domain: Domain, count: int = 50) -> kit.StreamConsumer:
    return kit.StreamConsumer(STREAM, domain.persist_batch, lambda: 60_000, count=count)


async def _push(object_id: int, n: int, start: int = 0) -> None:
    redis = get_redis()
    await STREAM.ensure_group(object_id)
    await redis.sadd("kt:active", object_id)
    for i in range(start, start + n):
        await redis.xadd(STREAM.key(object_id), {"rid": f"{object_id}-{i}"})


async def test_whole_batches_go_to_the_domain_and_done_entries_leave_the_stream() -> None:
    await _push(1, 120)
    await _push(2, 3)
    domain = Domain()
    consumer = _consumer(domain)
    assert await STREAM.backlog(1) == 120
    assert await consumer.process_once("a") == 53  # 50 of item 1, 3 of item 2
    assert [(i, len(rids)) for i, rids in domain.batches] == [(1, 50), (2, 3)]
    assert await STREAM.backlog(1) == 70 and await STREAM.backlog(2) == 0
    assert await consumer.drain("a") == 70
    seen = [rid for i, rids in domain.batches if i == 1 for rid in rids]
    assert seen == [f"1-{k}" for k in range(120)]  # in order, each once
    assert (await get_redis().xpending(STREAM.key(1), "orders"))["pending"] == 0


async def test_entries_not_done_stay_pending_and_are_claimed_after_the_idle_time() -> None:
    await _push(1, 5)
    domain = Domain(refuse={"1-1", "1-3"})
    consumer = _consumer(domain)
    assert await consumer.drain("doomed") == 3
    assert await STREAM.backlog(1) == 2
    assert (await get_redis().xpending(STREAM.key(1), "orders"))["pending"] == 2
    domain.refuse.clear()
    assert await consumer.process_once("rescuer") == 0  # not idle long enough
    assert await consumer.process_once("rescuer", claim_idle_ms=0) == 2
    assert domain.batches[-1] == (1, ["1-1", "1-3"])
    assert await STREAM.backlog(1) == 0


async def test_a_batch_that_raises_is_left_pending_whole() -> None:
    await _push(1, 4)
    domain = Domain()
    domain.raises = RuntimeError("database said no")
    consumer = _consumer(domain)
    assert await consumer.process_once("a") == 0
    assert await STREAM.backlog(1) == 4
    assert (await get_redis().xpending(STREAM.key(1), "orders"))["pending"] == 4
    domain.raises = None
    assert await consumer.drain("a", claim_idle_ms=0) == 4
    assert await STREAM.backlog(1) == 0


async def test_an_unreachable_redis_ends_the_pass() -> None:
    await _push(1, 2)
    domain = Domain()
    domain.raises = RedisConnectionError("gone")
    with pytest.raises(RedisConnectionError):
        await _consumer(domain).process_once("a")
    assert await STREAM.backlog(1) == 2


async def test_entries_deleted_while_pending_are_done_unseen() -> None:
    await _push(1, 3)
    read = await STREAM.read(1, "doomed", count=10, claim_idle_ms=60_000)
    assert len(read) == 3
    await get_redis().xdel(STREAM.key(1), read[0][0])  # e.g. trimmed by hand
    domain = Domain()
    assert await _consumer(domain).process_once("rescuer", claim_idle_ms=0) == 3
    assert domain.batches == [(1, ["1-1", "1-2"])]
    assert (await get_redis().xpending(STREAM.key(1), "orders"))["pending"] == 0


async def test_a_missing_group_is_created() -> None:
    await get_redis().sadd("kt:active", 7)
    assert await _consumer(Domain()).process_once("a") == 0
    await get_redis().xadd(STREAM.key(7), {"rid": "7-0"})
    assert await _consumer(Domain()).process_once("a") == 1


async def test_run_reads_full_batches_back_to_back_and_lets_a_trickle_gather() -> None:
    domain = Domain()
    consumer = kit.StreamConsumer(
        STREAM, domain.persist_batch, lambda: 60_000, count=50, linger_seconds=0.3
    )
    await _push(7, 120)  # a backlog: 50, 50, then 20
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop, tasks=1))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if sum(len(r) for _i, r in domain.batches) == 120:
            break
    assert [len(r) for _i, r in domain.batches] == [50, 50, 20]  # no wait between them
    # a trickle while the consumer lingers: gathered into one batch, not one pass each
    for i in range(5):
        await _push(7, 1, start=1000 + i)
    await asyncio.sleep(0.45)
    stop.set()
    await running
    assert [len(r) for _i, r in domain.batches][3:] == [5]
    assert await STREAM.backlog(7) == 0


async def test_a_live_consumer_tries_its_own_pending_entries_again_soon() -> None:
    """A batch that failed once (a deadlock, a dropped connection) is taken again by the
    same consumer after `retry_seconds`, doubling while it fails, not after the claim
    idle time (60 s here); fresh entries keep flowing meanwhile."""
    await _push(1, 3)
    domain = Domain()
    domain.raises = RuntimeError("deadlock detected")
    consumer = kit.StreamConsumer(
        STREAM, domain.persist_batch, lambda: 60_000, count=50, retry_seconds=0.2
    )
    assert await consumer.process_once("a") == 0
    await _push(1, 1, start=3)
    domain.raises = None
    assert await consumer.process_once("a") == 1  # the fresh one; the three wait
    assert domain.batches[-1] == (1, ["1-3"])
    assert await STREAM.backlog(1) == 3
    await asyncio.sleep(0.25)
    domain.raises = RuntimeError("deadlock again")
    assert await consumer.process_once("a") == 0
    assert domain.batches[-1] == (1, ["1-0", "1-1", "1-2"])  # its own, again
    domain.raises = None
    await asyncio.sleep(0.25)
    assert await consumer.process_once("a") == 0  # the delay doubled: 0.4 s
    await asyncio.sleep(0.2)
    assert await consumer.process_once("a") == 3
    assert await STREAM.backlog(1) == 0
    assert (await get_redis().xpending(STREAM.key(1), "orders"))["pending"] == 0
    # another consumer's pending entries are not taken before the idle time
    await _push(1, 2, start=10)
    domain.raises = RuntimeError("once more")
    assert await consumer.process_once("b") == 0
    domain.raises = None
    await asyncio.sleep(0.25)
    assert await consumer.process_once("a") == 0
    assert await STREAM.backlog(1) == 2


@pytest.mark.nodb
async def test_a_failed_batch_is_written_in_halves_down_to_the_bad_entry() -> None:
    writes: list[list[int]] = []
    written: list[int] = []
    lost: list[int] = []
    poison = {13}

    async def write(part: list[int]) -> None:
        writes.append(part)
        if poison & set(part):
            raise RuntimeError("this entry breaks every transaction it is in")
        written.extend(part)

    def note_lost(entry: int, _why: Exception) -> None:
        lost.append(entry)

    entries = list(range(100))
    await kit.in_halves(entries, write, note_lost, RuntimeError("batch"))
    assert lost == [13] and sorted(written) == [e for e in entries if e != 13]
    assert len(writes) <= 2 * 7  # about 2 * log2(100) transactions, not 100
    # a passing fault (the batch failed, its halves go through): two transactions
    for seen in (writes, written, lost, poison):
        seen.clear()
    await kit.in_halves(entries, write, note_lost, RuntimeError("deadlock detected"))
    assert writes == [entries[:50], entries[50:]] and written == entries and lost == []
    # a batch of one that failed is lost at once; an unreachable Redis ends it all
    await kit.in_halves([7], write, note_lost, RuntimeError("alone"))
    assert lost == [7]
    poison.add(0)

    async def redis_gone(part: list[int]) -> None:
        raise RedisConnectionError("gone")

    with pytest.raises(RedisConnectionError):
        await kit.in_halves(entries, redis_gone, note_lost, RuntimeError("batch"))


async def test_a_retry_fills_the_rest_of_its_batch_with_new_entries() -> None:
    """Its own pending entries first, then new ones up to the batch: the room is counted
    once, not twice."""
    await _push(1, 3)
    domain = Domain()
    domain.raises = RuntimeError("deadlock detected")
    consumer = kit.StreamConsumer(
        STREAM, domain.persist_batch, lambda: 60_000, count=6, retry_seconds=0.05
    )
    assert await consumer.process_once("a") == 0
    await _push(1, 5, start=3)
    domain.raises = None
    await asyncio.sleep(0.1)
    assert await consumer.process_once("a") == 6
    assert domain.batches[-1] == (1, ["1-0", "1-1", "1-2", "1-3", "1-4", "1-5"])
    assert await STREAM.backlog(1) == 2


async def test_run_with_two_tasks_persists_two_batches_at_once_each_entry_once() -> None:
    """Each task is its own consumer of the group: while one batch waits (on the
    database, in a domain), the other task's batch is read and written."""
    seen: list[str] = []
    in_flight = most = 0

    async def persist_batch(object_id: int, entries: list[kit.Entry]) -> Sequence[str]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.02)  # a transaction's round trips
        seen.extend(fields["rid"] for _id, fields in entries)
        in_flight -= 1
        return [entry_id for entry_id, _fields in entries]

    consumer = kit.StreamConsumer(STREAM, persist_batch, lambda: 60_000, count=10)
    await _push(8, 100)
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop, tasks=2))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if len(seen) == 100:
            break
    stop.set()
    await running
    assert sorted(seen) == sorted(f"8-{i}" for i in range(100))  # each once
    assert most == 2
    consumers = await get_redis().xinfo_consumers(STREAM.key(8), "orders")
    assert len(consumers) == 2 and all(c["pending"] == 0 for c in consumers)
    assert await STREAM.backlog(8) == 0


def test_two_tasks_by_default_on_postgresql_one_on_sqlite() -> None:
    from mall.config import Settings

    assert Settings(database_url="postgres://u@h/db").consumer_tasks == 2
    assert Settings(database_url="sqlite:///tmp/x.sqlite3").consumer_tasks == 1
    assert (
        Settings(database_url="sqlite:///tmp/x.sqlite3", stream_consumer_tasks=3).consumer_tasks
        == 3
    )
