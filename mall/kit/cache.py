"""Per-process copies of rarely changed rows that hot paths read on every request (an
item's terms, a series' prizes).

A plain expiring copy makes a burst wait on the database whenever it expires: every
request that finds it stale reads (hundreds of reads at once) or queues behind one read.
`Refreshing` loads a key once at a time, and once a value is known, a request that
finds it expired still gets it while one background task loads the next; so under a
burst the database is read once per key per `seconds`, by nobody's request but the
first. A copy is at most `seconds` plus one load old; what must never be stale is
decided elsewhere (the Lua decides on Redis's copy)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

log = logging.getLogger("mall.kit.cache")


class Refreshing(Generic[K, V]):
    def __init__(
        self, load: Callable[[K], Awaitable[V]], seconds: float, *, max_size: int = 4096
    ) -> None:
        self._load = load
        self._seconds = seconds
        self._max_size = max_size
        self._values: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Task[V]] = {}

    async def get(self, key: K) -> V:
        """The value of `key`: loaded now when unknown, else the copy (reloaded in the
        background once it has expired)."""
        found = self._values.get(key)
        if found is None:
            return await self.reload(key)
        if found[0] <= time.monotonic() and self._pending(key) is None:
            self._start(key).add_done_callback(_log_failure)
        return found[1]

    async def reload(self, key: K) -> V:
        """Load `key` now (joining a load under way) and return what it read."""
        task = self._pending(key) or self._start(key)
        return await asyncio.shield(task)

    def forget(self, key: K | None = None) -> None:
        """Drop one key's copy, or all (ops changed the rows; tests)."""
        if key is None:
            self._values.clear()
            self._loading.clear()
        else:
            self._values.pop(key, None)
            self._loading.pop(key, None)

    def _pending(self, key: K) -> asyncio.Task[V] | None:
        task = self._loading.get(key)
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            return None
        return task

    def _start(self, key: K) -> asyncio.Task[V]:
        task = asyncio.get_running_loop().create_task(self._fetch(key))
        self._loading[key] = task
        return task

    async def _fetch(self, key: K) -> V:
        value = await self._load(key)
        if self._loading.get(key) is not asyncio.current_task():
            return value  # forgotten meanwhile: answer the caller, keep nothing
        if key not in self._values and len(self._values) >= self._max_size:
            self._values.clear()
        self._values[key] = (time.monotonic() + self._seconds, value)
        return value


def _log_failure(task: asyncio.Task[object]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("background reload failed; the last copy is kept: %r", exc)


_MISSING: Any = object()


class Batching(Generic[K, V]):
    """Reads asked for in one event-loop tick, sent as one: `load_many(keys)` returns
    what it found by key (a key it leaves out answers `missing`). A burst's first
    requests each need a row of their own (a member's birthday): hundreds of reads at once
    become a few queries.

    One load is in flight at a time: the keys asked for while it runs wait and go out
    together when it ends. Under a burst the requests arrive a few to a tick, and a load
    per tick queued on the one database connection (SQLite) behind the others: a blind
    box's first draws waited tens of milliseconds for their members' birthdays."""

    def __init__(self, load_many: Callable[[list[K]], Awaitable[dict[K, V]]]) -> None:
        self._load_many = load_many
        self._waiting: dict[K, list[asyncio.Future[V]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loading = False

    async def get(self, key: K, missing: V) -> V:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V] = loop.create_future()
        if not self._waiting and not self._loading:
            loop.call_soon(self._flush)
        self._waiting.setdefault(key, []).append(future)
        found = await future
        return missing if found is _MISSING else found

    def _flush(self) -> None:
        if self._loading or not self._waiting:
            return
        batch, self._waiting = self._waiting, {}
        self._loading = True
        task = asyncio.get_running_loop().create_task(self._load(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, batch: dict[K, list[asyncio.Future[V]]]) -> None:
        try:
            found = await self._load_many(list(batch))
        except Exception as exc:
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        finally:
            # what was asked for meanwhile goes out as the next load
            self._loading = False
            self._flush()
        for key, futures in batch.items():
            value = found.get(key, _MISSING)
            for future in futures:
                if not future.done():
                    future.set_result(value)
