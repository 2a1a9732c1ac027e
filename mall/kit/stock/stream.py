"""A pool's stream of decisions and the consumer group that persists them, in batches.

A decision script appends what it decided (a win, a redemption, a draw) to the pool's
stream, `{<prefix>:<id>}:<part>` (XADD in the same atomic step as the decision), and the
member is answered at once. A `StreamConsumer` turns the entries into database rows: per
warm object (ids in the `active` set), it reads a batch with the consumer group and hands
the WHOLE batch to the domain's `persist_batch(object_id, entries)`, which returns the ids
of the entries it is done with (committed, or found persisted before).

Invariants:
- An entry leaves the stream only after `persist_batch` reported it done, i.e. after its
  commit: then it is acknowledged and deleted (XACK + XDEL, shielded from cancellation),
  so the stream's length (`backlog`) is the told-but-not-persisted decisions.
- `persist_batch` is idempotent per entry (the domain keys its rows by the reservation
  id): a crash between the commit and the acknowledgement replays the entry, and the
  replay makes nothing twice.
- An entry not reported done (or a batch whose `persist_batch` raised) stays pending on
  its consumer; after `claim_idle_ms` any consumer claims it (XAUTOCLAIM, read before new
  entries), so a dead consumer's entries are persisted by the others. The live consumer
  tries its own again sooner: after `retry_seconds`, doubling on each failure up to the
  idle time, so a passing fault (a deadlock, a dropped connection) delays those members'
  answers by a second, not by the idle time.
- Redis unreachable (`jobs.unreachable`): the pass ends by raising; the runner backs off.
- An entry deleted while pending comes back without fields: it is done, unseen by the
  domain.
- `persist_batch` should fail per entry, not per batch (e.g. a savepoint per entry):
  a batch that always raises is claimed again and again and holds the consumer up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis.exceptions import ResponseError

from mall.config import get_settings
from mall.kit import jobs
from mall.kit.stock.pool import Pool
from mall.redis import get_redis

log = logging.getLogger("mall.kit.stock")

Entry = tuple[str, dict[str, str]]  # (entry id, fields)
T = TypeVar("T")
PersistBatch = Callable[[int, list[Entry]], Awaitable[Sequence[str]]]


@dataclass(frozen=True)
class Stream:
    """Where a pool's decisions wait: `{<prefix>:<id>}:<part>` read by consumer group
    `group`; `active` is a Redis set of the ids whose streams are read (the warm ones)."""

    pool: Pool[Any]
    part: str  # "wins"
    group: str  # "orders"
    active: str  # "sk:active"

    def key(self, object_id: int) -> str:
        return self.pool.key(object_id, self.part)

    async def ensure_group(self, object_id: int) -> None:
        """Create the stream and its group (from the start) if missing."""
        try:
            await get_redis().xgroup_create(self.key(object_id), self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def active_ids(self) -> list[int]:
        return sorted(int(raw) for raw in await get_redis().smembers(self.active))

    async def backlog(self, object_id: int) -> int:
        """Entries not persisted yet (persisted ones are deleted): XLEN."""
        return int(await get_redis().xlen(self.key(object_id)))

    async def read(
        self,
        object_id: int,
        consumer: str,
        *,
        count: int,
        claim_idle_ms: int,
        own_pending: bool = False,
    ) -> list[Entry]:
        """Up to `count` entries for `consumer`: with `own_pending` first those pending on
        it already, then those idle longer than `claim_idle_ms` on another consumer
        (claimed), then new ones. They stay pending until acknowledged. A missing group
        is created (and nothing read this time)."""
        redis = get_redis()
        stream = self.key(object_id)
        entries: list[Entry] = []
        if own_pending:
            entries += await self._read_group(stream, consumer, "0", count)
            if len(entries) >= count:
                return entries
        try:
            claimed: Any = await redis.xautoclaim(
                stream,
                self.group,
                consumer,
                min_idle_time=claim_idle_ms,
                start_id="0-0",
                count=count - len(entries),
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group(object_id)
            return entries
        claimed_entries: list[Entry] = [
            (entry_id, fields or {}) for entry_id, fields in claimed[1] if entry_id is not None
        ]
        entries += claimed_entries
        if len(claimed_entries) < len(claimed[1]):
            entries += await self._deleted_pending(stream, consumer, count)
        # Redis 7 drops entries deleted while pending and names them: done, the same way
        entries += [(str(entry_id), {}) for entry_id in (claimed[2] if len(claimed) > 2 else [])]
        room = count - len(entries)
        if room > 0:
            entries += await self._read_group(stream, consumer, ">", room)
        return entries

    async def _read_group(self, stream: str, consumer: str, start: str, count: int) -> list[Entry]:
        """XREADGROUP from `start`: ">" new entries, "0" those pending on `consumer`."""
        found: Any = await get_redis().xreadgroup(
            self.group, consumer, {stream: start}, count=count
        )
        return [
            (entry_id, fields or {})
            for _stream, stream_entries in found or []
            for entry_id, fields in stream_entries
        ]

    async def _deleted_pending(self, stream: str, consumer: str, count: int) -> list[Entry]:
        """Redis 6.2 claims an entry deleted while pending as (nil, nil), and keeps it
        pending (Redis 7 drops it): find its id among `consumer`'s pending ones, as an
        entry without fields, so it is acknowledged."""
        redis = get_redis()
        pending: Any = await redis.xpending_range(
            stream, self.group, min="-", max="+", count=count, consumername=consumer
        )
        ids = [str(p["message_id"]) for p in pending]
        async with redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xrange(stream, entry_id, entry_id, count=1)
            found = await pipe.execute()
        return [(entry_id, {}) for entry_id, there in zip(ids, found, strict=True) if not there]

    async def acknowledge(self, object_id: int, entry_ids: Sequence[str]) -> None:
        """After the commit: acknowledge and drop, so the stream holds only the backlog."""
        if not entry_ids:
            return
        stream = self.key(object_id)
        async with get_redis().pipeline(transaction=True) as pipe:
            pipe.xack(stream, self.group, *entry_ids)
            pipe.xdel(stream, *entry_ids)
            await pipe.execute()


async def in_halves(
    entries: Sequence[T],
    write: Callable[[list[T]], Awaitable[None]],
    lost: Callable[[T, Exception], None],
    failed: Exception,
) -> None:
    """After `write(entries)` (one transaction) failed with `failed`: write each half
    the same way, and each half that fails in halves again, down to one entry, which is
    `lost` (the domain logs it; it stays pending and is tried again). A passing fault (a
    deadlock, a dropped connection) costs two writes, one bad entry about 2 * log2(n),
    where one entry per transaction would cost n. An unreachable Redis ends it (raised)."""
    if len(entries) == 1:
        lost(entries[0], failed)
        return
    half = len(entries) // 2
    for part in (entries[:half], entries[half:]):
        try:
            await write(list(part))
        except Exception as exc:
            if jobs.unreachable(exc):
                raise
            await in_halves(part, write, lost, exc)


@dataclass(frozen=True)
class StreamConsumer:
    """Persists a `Stream` through `persist_batch`, `count` entries per object at a time.
    `claim_idle_ms()` is read on every pass (settings may change)."""

    stream: Stream
    persist_batch: PersistBatch
    claim_idle_ms: Callable[[], int]
    # entries per batch: a batch's fixed cost (the reads, a transaction and its commit,
    # the acknowledgement) is paid once for all; with 2 app workers on PostgreSQL (fsync
    # on) a redeem burst's backlog emptied 5.5-7.5 s after it at 500, 1-4 s at 1,500 to
    # 3,000, and 22-37 s at 150 (docs/BENCHMARKS.md, round F)
    count: int = 2000
    name: str = "stream"  # for logs
    # between passes that found less than a full batch: what a decision waits at most
    # before its batch is read
    linger_seconds: float = 0.1
    # entries left pending by this consumer are read again after this, doubling
    retry_seconds: float = 1.0
    # (consumer, object id) -> (when its pending entries are due again, the last delay)
    _retries: dict[tuple[str, int], tuple[float, float]] = field(
        default_factory=dict, repr=False, compare=False
    )

    async def process_once(
        self, consumer: str = "local", *, count: int | None = None, claim_idle_ms: int | None = None
    ) -> int:
        """One pass over every active object's stream; returns how many entries are done."""
        count = self.count if count is None else count
        idle = self.claim_idle_ms() if claim_idle_ms is None else claim_idle_ms
        handled = 0
        for object_id in await self.stream.active_ids():
            retry = self._retries.get((consumer, object_id))
            own = retry is not None and retry[0] <= time.monotonic()
            entries = await self.stream.read(
                object_id, consumer, count=count, claim_idle_ms=idle, own_pending=own
            )
            if not entries:
                if own:  # nothing was pending after all (claimed by another consumer)
                    self._retries.pop((consumer, object_id), None)
                continue
            done = await self._persist(object_id, entries)
            handled += done
            if done < len(entries):
                delay = min(retry[1] * 2 if retry else self.retry_seconds, idle / 1000)
                self._retries[(consumer, object_id)] = (time.monotonic() + delay, delay)
            elif own:
                self._retries.pop((consumer, object_id), None)
        return handled

    async def _persist(self, object_id: int, entries: list[Entry]) -> int:
        done = [entry_id for entry_id, fields in entries if not fields]
        live = [(entry_id, fields) for entry_id, fields in entries if fields]
        try:
            if live:
                reported = set(await self.persist_batch(object_id, live))
                done += [entry_id for entry_id, _fields in live if entry_id in reported]
        except Exception as exc:
            if jobs.unreachable(exc):
                raise  # Redis is down: end the pass, the runner backs off quietly
            # left pending: claimed again after the idle time; the reconciler shows it
            log.exception(
                "%s %s: a batch of %d entries not persisted", self.name, object_id, len(live)
            )
        finally:
            await asyncio.shield(self.stream.acknowledge(object_id, done))
        if len(done) < len(entries):
            log.warning(
                "%s %s: %d of %d entries left pending",
                self.name,
                object_id,
                len(entries) - len(done),
                len(entries),
            )
        return len(done)

    async def drain(self, consumer: str = "local", *, claim_idle_ms: int | None = None) -> int:
        """Run passes until a pass finds nothing to do (tests, drills)."""
        total = 0
        while n := await self.process_once(consumer, claim_idle_ms=claim_idle_ms):
            total += n
        return total

    async def run(self, stop: asyncio.Event, tasks: int | None = None) -> None:
        """Persist until `stop` (a `jobs.Consumer`'s body) with `tasks` loops (default:
        the `stream_consumer_tasks` setting), each its own consumer of the group, so
        while one loop's batch is in the database another's is read and prepared. The
        domains' batches take their locks in one order (the object's row or the
        members' in id order first), so two loops take turns instead of deadlocking."""
        count = get_settings().consumer_tasks if tasks is None else tasks
        await asyncio.gather(*(self._loop(stop) for _ in range(count)))

    async def _loop(self, stop: asyncio.Event) -> None:
        """One loop of `run`: a unique consumer name per loop, so a dead process's
        pending entries are claimed by the others."""
        name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        while not stop.is_set():
            if await self.process_once(name) >= self.count:
                continue  # a full batch: more is waiting
            # Less than a batch: let the next one gather. Passes that each take what a
            # few milliseconds brought pay a batch's fixed cost (reads, a transaction,
            # the acknowledgement) for a handful of entries, on the app's cores.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.linger_seconds)
