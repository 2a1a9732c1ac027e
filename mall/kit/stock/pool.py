"""Pools, and what every domain does with one: warm, decide, give back, adjust, read,
reconcile. See the package docstring for the invariants."""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, Literal, Protocol, TypeVar

from mall.kit.stock.reply import COLD, OK, SHORT, Reply, parse
from mall.redis import Script, get_redis
from mall.redis import script as load_script

log = logging.getLogger("mall.kit.stock")

_KIT = "mall.kit.stock"
LIBRARY = (_KIT, "library")

T = TypeVar("T")


def script(package: str, name: str) -> Script:
    """A stock script, `<package>/lua/<name>.lua`, with the kit's Lua helpers prepended."""
    return load_script(package, name, library=LIBRARY)


# --- keys ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolKeys:
    """The keys of one pool, all under its hash tag (one cluster slot)."""

    tag: str  # "{sk:42}"

    def __call__(self, part: str) -> str:
        return f"{self.tag}:{part}"

    @property
    def meta(self) -> str:
        """Terms and `initial`; a pool without it is cold."""
        return f"{self.tag}:meta"

    @property
    def stock(self) -> str:
        """Units left (a number, or a hash unit -> units left)."""
        return f"{self.tag}:stock"

    @property
    def buyers(self) -> str:
        """Units per member (hash), for per-member limits."""
        return f"{self.tag}:buyers"

    @property
    def returned(self) -> str:
        """Reservation ids whose units were given back (set)."""
        return f"{self.tag}:returned"


K = TypeVar("K", bound=PoolKeys)


class Pool(Generic[K]):
    """One kind of Redis-held stock, e.g. `Pool("sk", PoolKeys)` for flash-sale items:
    the key layout `{sk:<id>}:<part>`. `keys` may be a subclass of PoolKeys naming a
    domain's own parts."""

    def __init__(self, prefix: str, keys: Callable[[str], K]) -> None:
        self.prefix = prefix
        self._keys = keys

    def tag(self, object_id: int) -> str:
        return f"{{{self.prefix}:{object_id}}}"

    def keys(self, object_id: int) -> K:
        return self._keys(self.tag(object_id))

    def key(self, object_id: int, part: str) -> str:
        return f"{{{self.prefix}:{object_id}}}:{part}"


# --- warm ---------------------------------------------------------------------------


class Warm:
    """What a warm writes, from the database's figures; `await plan.run()` -> cold?

    Terms go to `meta` on every warm. Counts are written only where missing, and by
    default only when the pool is cold, so a warm can never undo a decision made in
    Redis since the database was read."""

    def __init__(self, keys: PoolKeys) -> None:
        self.keys = keys
        self._key_list: list[str] = [keys.meta]
        self._args: list[Any] = []
        self._meta = False

    def _section(
        self,
        key: str,
        when: Literal["always", "cold"],
        how: Literal["hset", "hsetnx", "setnx"],
        values: Sequence[Any],
        ttl: int = 0,
    ) -> Warm:
        if key not in self._key_list:
            self._key_list.append(key)
        index = self._key_list.index(key) + 1
        self._args += [index, when, how, ttl, len(values), *values]
        if key == self.keys.meta and values:
            self._meta = True
        return self

    @staticmethod
    def _pairs(mapping: Mapping[Any, Any]) -> list[Any]:
        return [item for pair in mapping.items() for item in pair]

    def terms(self, **fields: Any) -> Warm:
        """Meta fields written on every warm (window, prices, limits, flags...)."""
        return self._section(self.keys.meta, "always", "hset", self._pairs(fields))

    def initial(self, units: int) -> Warm:
        """The units the database allots (`meta.initial`), when cold; `adjust` moves it."""
        return self._section(self.keys.meta, "cold", "hsetnx", ["initial", units])

    def stock(self, units: int) -> Warm:
        """Units left (a single-unit pool), when cold."""
        return self._section(self.keys.stock, "cold", "setnx", [units])

    def units(self, left: Mapping[str, int]) -> Warm:
        """Units left per kind (a several-unit pool), filled on every warm where a kind is
        missing, so a kind added later is loaded too."""
        return self._section(self.keys.stock, "always", "hsetnx", self._pairs(left))

    def counts(self, key: str, counts: Mapping[Any, int], *, ttl: int = 0) -> Warm:
        """A per-member counter (hash), when cold."""
        return self._section(key, "cold", "hsetnx", self._pairs(counts), ttl)

    def value(self, key: str, value: Any) -> Warm:
        """A plain counter, when cold."""
        return self._section(key, "cold", "setnx", [value])

    async def run(self) -> bool:
        """Write the plan in one script; True if the pool was cold."""
        if not self._meta:
            raise ValueError("a warm must write the pool's meta (terms or initial)")
        raw = await script(_KIT, "warm")(keys=self._key_list, args=self._args)
        return parse(raw).status == COLD


_warm_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


async def warm_cold(keys: PoolKeys, load: Callable[[], Awaitable[object]]) -> None:
    """Run `load` if the pool is cold, one caller per pool at a time in this process;
    the others wait, then find it warm."""
    lock = _warm_locks.get(keys.tag)
    if lock is None:
        lock = _warm_locks[keys.tag] = asyncio.Lock()
    async with lock:
        if await get_redis().exists(keys.meta):
            return
        await load()


# --- decide, give back ----------------------------------------------------------------


async def decide(run: Callable[[], Awaitable[str]], warm: Callable[[], Awaitable[object]]) -> str:
    """Warm-if-cold with one retry: run a decision script; if it answers `cold`, warm the
    pool and run it once more (a second `cold` is the caller's to answer)."""
    raw = await run()
    if raw != COLD:
        return raw
    await warm()
    return await run()


async def give_back(
    keys: PoolKeys,
    reservation_id: str,
    *,
    n: int = 1,
    member: int | str = "",
    unit: str = "",
    counters: Sequence[str] = (),
) -> Reply:
    """Hand `n` units of a reservation back, exactly once per reservation id; the
    member's `counters` (e.g. `keys.buyers`) go down by `n`. `cold`: the pool is not
    loaded and nothing was done (its next warm counts from the database); `dup`: given
    back before; `ok|left`."""
    raw = await script(_KIT, "give_back")(
        keys=[keys.meta, keys.stock, keys.returned, *counters],
        args=[reservation_id, unit, n, member],
    )
    return parse(raw)


# --- adjust and repair ----------------------------------------------------------------


async def _move(keys: PoolKeys, unit: str, delta: int, initial: bool, floor: int | None = 0) -> str:
    raw = await script(_KIT, "adjust_stock")(
        keys=[keys.meta, keys.stock],
        args=[unit, delta, "1" if initial else "0", "" if floor is None else floor],
    )
    return str(raw)


async def adjust(
    keys: PoolKeys,
    delta: int,
    commit: Callable[[], Awaitable[T]],
    *,
    refused: Callable[[int], Exception],
    warm: Callable[[], Awaitable[object]] | None = None,
    unit: str = "",
    floor: int | None = 0,
) -> T:
    """Change a pool's stock by `delta` in the database (`commit`, one transaction that
    raises to refuse) and in Redis, by the one rule: Redis never holds more than the
    database allows. A decrease goes to Redis first (refused there with
    `refused(units left)` when Redis has handed out too many) and is undone if the
    database refuses; an increase goes to Redis after the database commits. A crash in
    between leaves Redis short, never over; the reconciler repairs it. A cold pool is
    warmed first by `warm` if given, else left to its next warm (which reads the
    database). `floor`: the least units Redis may keep (None: a pool whose units left
    may go below zero, e.g. a coupon template whose total ops lowered below the number
    issued: it is sold out)."""
    if delta < 0:
        move = partial(_move, keys, unit, delta, True, floor)
        answer = parse(await (decide(move, warm) if warm is not None else move()))
        if answer.status == SHORT:
            raise refused(answer.number())
        try:
            return await commit()
        except BaseException:
            if answer.status == OK:
                await asyncio.shield(_undo(keys, unit, -delta))
            raise
    result = await commit()
    if delta > 0:
        try:
            # a cold pool is left cold: its next warm reads the committed figures
            await _move(keys, unit, delta, True)
        except Exception:
            log.exception("stock %s +%s committed but not in Redis; reconcile", keys.tag, delta)
    return result


async def _undo(keys: PoolKeys, unit: str, delta: int) -> None:
    try:
        await _move(keys, unit, delta, True)
    except Exception:
        log.exception("stock %s: decrease not undone in Redis; reconcile", keys.tag)


async def repair(keys: PoolKeys, drift: int, unit: str = "") -> Reply:
    """Move Redis units by a drift the reconciler measured (`Balance.drift` of a stable
    reading): a delta, not a SET, so decisions made since the reading stay counted."""
    return parse(await _move(keys, unit, drift, False))


# --- read and reconcile ---------------------------------------------------------------

Read = Literal["get", "hgetall", "xrange", "scard", "zcard"]


async def snapshot(reads: Sequence[tuple[str, Read]]) -> list[Any]:
    """Read keys of one pool at one instant: (key, how) each. A missing string is None,
    a missing hash or stream an empty list; a hash comes as a flat field/value list."""
    raw = await script(_KIT, "snapshot")(
        keys=[key for key, _how in reads], args=[how for _key, how in reads]
    )
    values = json.loads(parse(raw, 1).values[0])
    if values == {}:
        return []
    return [None if v is False else [] if v == {} else v for v in values]


@dataclass
class Balance:
    """One pool's reconcile equation, `redis + held + in_flight + returns_due ==
    initial`, plus what else the domain `found` wrong. `redis` None: not loaded, the
    database alone is the truth. `names` relabel the terms in the printed line (a flash
    sale's in-flight units are its stream backlog)."""

    name: str
    initial: int
    redis: int | None
    held: int
    in_flight: int = 0
    returns_due: int = 0
    found: list[str] = field(default_factory=list)
    names: tuple[str, str, str] = ("held", "in_flight", "returns_due")
    stable: bool = True
    floor: int | None = 0  # the least units Redis may hold (None: no floor)

    @property
    def counted(self) -> int:
        """The left-hand side: redis + held + in_flight + returns_due."""
        return (self.redis or 0) + self.held + self.in_flight + self.returns_due

    @property
    def drift(self) -> int:
        """Units Redis lacks (negative: has too many)."""
        return self.initial - self.counted

    @property
    def agrees(self) -> bool:
        return self.redis is None or (not self._below_floor and self.drift == 0)

    @property
    def _below_floor(self) -> bool:
        return self.redis is not None and self.floor is not None and self.redis < self.floor

    @property
    def problems(self) -> list[str]:
        """The equation if it fails, then what the domain found."""
        held, flying, due = self.names
        out = []
        if self.redis is not None and self.drift != 0:
            out.append(f"redis+{held}+{flying}+{due}={self.counted} != {self.initial}")
        if self._below_floor:
            out.append("redis below zero")
        out += self.found
        if out and not self.stable:
            out.append("no stable reading (busy?)")
        return out

    @property
    def ok(self) -> bool:
        return self.agrees and not self.found

    def figures(self) -> tuple[Any, ...]:
        figures = (self.initial, self.redis, self.held, self.in_flight, self.returns_due)
        return (*figures, *self.found)

    def line(self) -> str:
        held, flying, due = self.names
        text = (
            f"{self.name}: initial={self.initial} redis={self.redis} {held}={self.held} "
            f"{flying}={self.in_flight} {due}={self.returns_due}"
        )
        problems = self.problems
        return text + (" OK" if not problems else " -> " + "; ".join(problems))


class Reading(Protocol):
    """A Balance, or several read at one instant (e.g. every kind of unit of a pool)."""

    stable: bool

    @property
    def ok(self) -> bool: ...

    def figures(self) -> tuple[Any, ...]: ...


B = TypeVar("B", bound=Reading)


async def balance(read: Callable[[], Awaitable[B]], *, attempts: int = 5, pause: float = 0.05) -> B:
    """Judge a pool. A reading that balances is final; one that does not is read again
    until two readings in a row agree (a live sale moves between the Redis and the
    database reads), and that stable reading is judged. None stable within `attempts`:
    the last, marked `stable=False`."""
    previous = await read()
    if previous.ok:
        return previous
    for _attempt in range(attempts - 1):
        await asyncio.sleep(pause)
        current = await read()
        if current.figures() == previous.figures():
            return current
        previous = current
    previous.stable = False
    return previous


async def repair_persistent(keys: PoolKeys, reading: Balance, *, unit: str = "") -> bool:
    """The reconciler's repair of a pool whose Redis disagrees with the database (e.g. a
    crash between an adjust's two steps): only a stable reading, and only when the run
    before saw the very same figures (a write in flight between the Redis and the
    database reads shows once), then Redis moves by the drift. The caller decides first
    whether the database agrees with itself. True if it repaired."""
    if reading.redis is None or not reading.stable or reading.drift == 0:
        return False
    marker = keys(f"drift:{unit}" if unit else "drift")
    signature = repr(reading.figures())
    redis = get_redis()
    if await redis.get(marker) != signature:
        await redis.set(marker, signature, ex=3600)
        return False
    await redis.delete(marker)
    fixed = await repair(keys, reading.drift, unit)
    if fixed.status == OK:
        log.warning(
            "repaired Redis stock of %s by %+d: %s", keys.tag, reading.drift, reading.line()
        )
    return fixed.status == OK
