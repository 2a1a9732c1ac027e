"""Redis: the shared client (one node or a Redis Cluster), the embedded redis-server for
the zero-setup default, and Lua script loading.

`redis.asyncio` is the maintained successor of aioredis (merged into redis-py).

Cluster mode: every script and multi-key command keeps its keys in one slot through a
hash tag per hot object (`{sk:42}:stock`); `script()` and `AutoPipeline` refuse keys of
different slots on a single node too, so the single-node test suite proves the layout."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources
from typing import Any, TypeAlias

import redis as redis_sync
from hiredis import pack_command
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.exceptions import (
    ClusterError,
    MaxConnectionsError,
    NoScriptError,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as SyncRetry

from mall.embedded_redis import EmbeddedRedis as EmbeddedRedis
from mall.embedded_redis import _die_with_parent as _die_with_parent
from mall.embedded_redis import redis_server_binary as redis_server_binary

log = logging.getLogger("mall.redis")


# The shared client's type: code that needs a cluster-only feature checks isinstance.
RedisClient: TypeAlias = Redis | RedisCluster


class KeyLayoutUnknown(RedisError):
    """Redis holds a key layout this code does not know (a newer release migrated it, or
    a migration is under way): this process makes no Lua decision until it does."""


# Errors that mean "Redis cannot serve right now" (answered 503 + Retry-After): outages,
# on a cluster a failover in progress (CLUSTERDOWN, slots not covered, TRYAGAIN), and a
# node whose code does not know the key layout in Redis (a rolling deploy).
UNAVAILABLE: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterError,
    SlotNotCoveredError,
    TryAgainError,
    KeyLayoutUnknown,
)

# a call's connection dropped under it (sent again by the auto-pipeline on a cluster)
_DROPPED = (RedisConnectionError, RedisTimeoutError)

MAX_CONNECTIONS = 256  # per process (single node), per node of a cluster
POOL_WAIT_SECONDS = 5.0

_client: RedisClient | None = None


def _retry() -> Retry:
    # One quick retry, then fail fast: an outage answers 503 at once, not after seconds.
    return Retry(ExponentialBackoff(cap=0.2, base=0.02), 1)


def connect(url: str, *, cluster: bool | None = None) -> RedisClient:
    """Create the process-wide client (decoded strings, bounded connections).

    `cluster`: None takes `MALL_REDIS_CLUSTER`, and when that is unset too asks the
    server (`INFO cluster`); a Redis Cluster is then reached through any of its nodes."""
    global _client
    if cluster is None:
        from mall.config import get_settings

        cluster = get_settings().redis_cluster
    if cluster is None:
        cluster = detect_cluster(url)
    if cluster:
        _client = ClusterClient.from_url(
            url,
            decode_responses=True,
            max_connections=MAX_CONNECTIONS,
            health_check_interval=30,
            socket_connect_timeout=1,
            retry=_retry(),
        )
        return _client
    # A blocking pool waits for a free connection under a burst instead of failing.
    pool = BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_WAIT_SECONDS,
        health_check_interval=30,
        socket_connect_timeout=1,
        retry=_retry(),
    )
    _client = Redis.from_pool(pool)  # close() then closes the pool's connections too
    return _client


def detect_cluster(url: str) -> bool:
    """True when the server at `url` runs with `cluster-enabled yes`.

    A server that cannot be reached is taken for a single node (today's default, and
    readiness then reports the outage); `/readyz` also reports a single-node client that
    finds itself talking to a cluster, so set MALL_REDIS_CLUSTER=true on a cluster to
    start right even while Redis is down."""
    if url.startswith("unix:"):
        return False  # Redis Cluster speaks TCP only
    probe = redis_sync.Redis.from_url(
        url,
        socket_connect_timeout=1,
        socket_timeout=2,
        retry=SyncRetry(NoBackoff(), 0),
        decode_responses=True,
    )
    try:
        return bool(int(probe.info("cluster").get("cluster_enabled", 0)))
    except (redis_sync.RedisError, OSError) as exc:
        log.warning(
            "cannot reach Redis to tell a cluster from a single node (%s); using a "
            "single-node client. On a Redis Cluster set MALL_REDIS_CLUSTER=true.",
            exc,
        )
        return False
    finally:
        probe.close()


# Set while a pipeline holds its gate slot: the commands it sends again one by one after
# a MOVED/ASK redirect go through without waiting for a second slot (no self-deadlock).
_in_gate: contextvars.ContextVar[bool] = contextvars.ContextVar("mall_redis_in_gate", default=False)
_REDIRECT_HEADROOM = 32  # connections per node beyond the gate, for those redirects


class ClusterClient(RedisCluster):
    """redis-py's cluster client with the single-node pool's manners under a burst: a
    caller waits (up to POOL_WAIT_SECONDS) for one of MAX_CONNECTIONS in-flight commands
    or pipelines instead of getting MaxConnectionsError at once (on which redis-py's
    cluster pipeline would even drop every connection and rediscover the cluster)."""

    def __init__(self, **kwargs: Any) -> None:
        gate = int(kwargs.pop("max_connections", MAX_CONNECTIONS))
        super().__init__(max_connections=gate + _REDIRECT_HEADROOM, **kwargs)
        self.gate = asyncio.Semaphore(gate)

    async def enter_gate(self) -> None:
        if self.gate.locked():
            try:
                async with asyncio.timeout(POOL_WAIT_SECONDS):
                    await self.gate.acquire()
            except TimeoutError:
                raise MaxConnectionsError("no free Redis connection in time") from None
        else:
            await self.gate.acquire()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if _in_gate.get():
            return await super().execute_command(*args, **kwargs)
        await self.enter_gate()
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self.gate.release()

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused by redis-py
        return _GatedPipeline(self, transaction)  # type: ignore[abstract]


class _GatedPipeline(ClusterPipeline):
    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        client = self.cluster_client
        assert isinstance(client, ClusterClient)
        if _in_gate.get():
            return await super().execute(raise_on_error, allow_redirections)
        await client.enter_gate()
        token = _in_gate.set(True)
        try:
            return await super().execute(raise_on_error, allow_redirections)
        finally:
            _in_gate.reset(token)
            client.gate.release()


def is_cluster(client: RedisClient | None = None) -> bool:
    return isinstance(client or get_redis(), RedisCluster)


def set_client(client: RedisClient | None) -> None:
    global _client
    _client = client


def get_redis() -> RedisClient:
    if _client is None:
        raise RuntimeError("redis is not connected; call mall.redis.connect() first")
    return _client


async def close() -> None:
    global _client
    if _client is not None:
        await _client.aclose()
        _client = None


class ClusterStateNotOk(RuntimeError):
    """A cluster node reports cluster_state other than ok (e.g. a master is down)."""


class ClusterModeUndetected(RuntimeError):
    """A single-node client talks to a cluster node (set MALL_REDIS_CLUSTER=true)."""


async def check_ready() -> None:
    """Raise unless Redis can serve every key: a single node answers and is not a cluster
    node; on a cluster, every master reports `cluster_state:ok`; and the key layout in
    Redis is the one this code knows."""
    client = get_redis()
    if isinstance(client, RedisCluster):
        answers: Any = await client.cluster_info(target_nodes=RedisCluster.PRIMARIES)
        infos = [answers] if "cluster_state" in answers else list(answers.values())
        states = {str(info.get("cluster_state")) for info in infos}
        if states != {"ok"}:
            raise ClusterStateNotOk(", ".join(sorted(states)))
    else:
        info = await client.info("cluster")
        if int(info.get("cluster_enabled", 0)):
            raise ClusterModeUndetected()
    await layout_guard.refresh(client)  # a node on a layout it does not know: not ready


class CrossSlotKeys(ValueError):
    """A script or pipelined call was given keys of different cluster slots."""


def check_one_slot(keys: Sequence[Any]) -> None:
    """Refuse keys that a Redis Cluster would refuse together (CROSSSLOT)."""
    if len(keys) < 2:
        return
    first = keys[0]
    if isinstance(first, str) and first.startswith("{"):
        # the hot layout, `{tag}:part`: a key with the same leading `{tag}` has that tag
        end = first.find("}", 1)
        if end > 1:  # (`{}` is no tag: the whole key is hashed)
            prefix = first[: end + 1]
            if all(isinstance(k, str) and k.startswith(prefix) for k in keys[1:]):
                return
    tag = _tag(keys[0])
    if tag is not None and all(_tag(k) == tag for k in keys[1:]):
        return  # the usual case, one hash tag: no CRC needed (hot path)
    first = key_slot(_encode(keys[0]))
    for other in keys[1:]:
        if key_slot(_encode(other)) != first:
            raise CrossSlotKeys(f"keys in different cluster slots: {keys[0]!r} and {other!r}")


def _tag(key: Any) -> str | None:
    """The hash tag of a str key (`{...}`, first one, non-empty), else None."""
    if not isinstance(key, str):
        return None
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1 : end]


def _encode(key: Any) -> bytes:
    if isinstance(key, bytes):
        return key
    return str(key).encode()


# --- the key layout (rolling deploys) ---------------------------------------------
# The names and shapes of the hot keys (stock, buyers, reservations, streams ...) are a
# versioned layout. Redis holds the version in use under LAYOUT_KEY; a process makes Lua
# decisions only while that is the version its code knows, so an old and a new app node
# never decide on keys they read differently. A release that changes the layout bumps
# KEY_LAYOUT_VERSION and brings a migration (`mall layout migrate`, mall/ops/layout.py).
KEY_LAYOUT_VERSION = 1
LAYOUT_KEY = "mall:key-layout"
LAYOUT_RECHECK_SECONDS = 1.0
# Redis unreachable for the layout key alone (another master than the item's): keep the
# last good answer this long. `mall layout migrate` fences longer than this plus a recheck.
LAYOUT_STALE_SECONDS = 5.0


class _LayoutGuard:
    """The layout in Redis as this process last read it, re-read at most once a second
    (one GET per process per second, however many calls); a fresh Redis (empty, or
    restored and not warm yet) is claimed for this code's version."""

    def __init__(self) -> None:
        self._pending: asyncio.Future[None] | None = None
        self.forget()

    def forget(self) -> None:
        """Read again on the next call (tests; `mall layout migrate` in its own process)."""
        self.client: object | None = None
        self.ok = False
        self.seen: str | None = None
        self.fresh_until = 0.0
        self.good_at = 0.0  # when a read last said ok

    def fresh_ok(self, client: object) -> bool:
        return self.ok and client is self.client and time.monotonic() < self.fresh_until

    async def check(self, client: RedisClient) -> None:
        """Raise KeyLayoutUnknown unless the layout in Redis is this code's."""
        if client is self.client and time.monotonic() < self.fresh_until:
            if self.ok:
                return
            raise KeyLayoutUnknown(self._message())
        loop = asyncio.get_running_loop()
        pending = self._pending
        if pending is None or pending.done() or pending.get_loop() is not loop:
            pending = self._pending = loop.create_task(self._read(client))
        await asyncio.shield(pending)  # one read for every caller waiting on it

    async def refresh(self, client: RedisClient) -> None:
        """Read now (readiness)."""
        self.fresh_until = 0.0
        await self.check(client)

    async def _read(self, client: RedisClient) -> None:
        now = time.monotonic()
        try:
            value = await client.get(LAYOUT_KEY)
            if value is None:
                await client.set(LAYOUT_KEY, KEY_LAYOUT_VERSION, nx=True)
                value = await client.get(LAYOUT_KEY)
        except RedisError:
            if self.ok and client is self.client and now - self.good_at < LAYOUT_STALE_SECONDS:
                self.fresh_until = now + LAYOUT_RECHECK_SECONDS / 4
                return  # the item's own call will tell whether Redis is really down
            raise
        self.client, self.seen = client, None if value is None else str(value)
        self.ok = self.seen == str(KEY_LAYOUT_VERSION)
        self.fresh_until = now + LAYOUT_RECHECK_SECONDS
        if self.ok:
            self.good_at = now
            return
        log.error("%s", self._message())
        raise KeyLayoutUnknown(self._message())

    def _message(self) -> str:
        return (
            f"Redis key layout is {self.seen!r}; this code knows {KEY_LAYOUT_VERSION}: "
            "no hot-path decisions on this node (see docs/SCALING.md, rolling deploys)"
        )


layout_guard = _LayoutGuard()


@cache
def _lua_source(package: str, name: str) -> str:
    return resources.files(package).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


class Script(AsyncScript):
    """A registered Lua script whose keys are checked to share one cluster slot, on a
    single node too (Redis 7 in cluster mode refuses anything else)."""

    async def __call__(
        self,
        keys: Sequence[Any] | None = None,
        args: Iterable[Any] | None = None,
        client: Any = None,
    ) -> Any:
        check_one_slot(keys or ())
        if not layout_guard.fresh_ok(self.registered_client):
            await layout_guard.check(self.registered_client)
        return await super().__call__(keys, args, client)


_scripts: dict[tuple[int, str, str, tuple[str, str] | None], Script] = {}


def script(package: str, name: str, *, library: tuple[str, str] | None = None) -> Script:
    """The Lua script `<package>/lua/<name>.lua`, registered on the current client;
    `library` = (package, name) of a Lua file of shared helpers prepended to it (e.g.
    `mall.kit.stock`'s).

    redis-py's Script runs EVALSHA and falls back to EVAL after a server restart (on a
    cluster: SCRIPT LOAD on every master). A script touches only the keys it is given,
    which share one hash tag."""
    client = get_redis()
    key = (id(client), package, name, library)
    found = _scripts.get(key)
    if found is None or found.registered_client is not client:
        source = _lua_source(package, name)
        if library is not None:
            source = _lua_source(*library) + "\n" + source
        found = Script(client, source)
        _scripts[key] = found
    return found


# a queued call: the script (None for a plain command), the command sent, the script's
# keys and args (for the EVAL fallback), the caller's future
_Call: TypeAlias = tuple[
    AsyncScript | None, tuple[Any, ...], list[Any], list[Any], "asyncio.Future[Any]"
]


class AutoPipeline:
    """Send the script calls made in one event-loop tick as one pipeline round trip
    (what ioredis calls auto-pipelining). Under a burst, hundreds of requests wait on
    Redis at once; one write and one read for all of them costs far less in redis-py
    than a pooled connection each. Every EVALSHA is still atomic on the server; the
    pipeline is not a transaction. On a cluster, redis-py's cluster pipeline splits
    the batch per node (one round trip to each, in parallel) and follows redirects
    (MOVED/ASK during a resharding) call by call."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self._pending: list[_Call] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, lua: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        check_one_slot(keys)  # one caller's mistake must not fail the whole batch
        if not layout_guard.fresh_ok(self.client):
            await layout_guard.check(self.client)
        return await self._queue(lua, ("EVALSHA", lua.sha, len(keys), *keys, *args), keys, args)

    async def call(self, *command: Any) -> Any:
        """A plain one-key command (e.g. `"HGET", key, field`) in the same round trip as
        the tick's other calls: a hot read beside the scripts."""
        return await self._queue(None, command, [], [])

    def _queue(
        self, lua: AsyncScript | None, command: tuple[Any, ...], keys: list[Any], args: list[Any]
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((lua, command, keys, args, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        batch, self._pending, self._scheduled = self._pending, [], False
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            if isinstance(self.client, RedisCluster):
                results = await self._cluster_exchange([command for _l, command, *_r in batch])
            else:
                results = await self._exchange([command for _l, command, *_rest in batch])
        except BaseException as exc:
            for *_rest, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (lua, _command, keys, args, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if lua is not None and isinstance(result, NoScriptError):  # after a restart: EVAL
                try:
                    future.set_result(await lua(keys=keys, args=args))
                except Exception as exc:
                    future.set_exception(exc)
            elif isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _cluster_exchange(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """A cluster: redis-py's cluster pipeline, each node's calls on one of its
        connections. A call whose connection dropped (a node restarted, a proxy's idle
        cut) is sent again, as often as the client retries, the way the one-node
        exchange retries, after the nodes' idle connections are closed (they reconnect
        when next used); the pipeline itself, asked for every result, would hand the
        dropped connection's error to the caller."""
        client = self.client
        assert isinstance(client, RedisCluster)
        results: list[Any] = [None] * len(commands)
        todo = list(range(len(commands)))
        for _attempt in range(client.retry.get_retries() + 1):
            pipe = client.pipeline(transaction=False)
            for i in todo:
                # (redis-py blocks pipe.evalsha on a cluster in case the keys span
                # slots; run() has checked they do not)
                pipe.execute_command(*commands[i])
            for i, result in zip(todo, await pipe.execute(raise_on_error=False), strict=True):
                results[i] = result
            todo = [i for i in todo if isinstance(results[i], _DROPPED)]
            if not todo:
                break
            # the idle connections were most likely dropped with it: they reconnect
            # when next used, so the retry does not meet another dead one
            for node in client.get_nodes():
                await node.disconnect_free_connections()
        return results

    async def _exchange(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """One node: the batch written at once and its replies read in order, on one
        pooled connection; an error reply stands in for its call's result. What
        redis-py's pipeline does for this, less its per-call Python: the commands are
        packed by hiredis (C) and the replies read straight from the connection. A
        dropped connection is retried the way the client's pipeline retries it."""
        client = self.client
        assert isinstance(client, Redis)
        pool = client.connection_pool
        payload = b"".join([pack_command(command) for command in commands])
        callbacks = client.response_callbacks
        conn = await pool.get_connection()

        async def exchange() -> list[Any]:
            await conn.send_packed_command(payload)
            replies: list[Any] = []
            for command in commands:
                try:
                    reply = await conn.read_response()
                except ResponseError as error:
                    replies.append(error)
                    continue
                callback = callbacks.get(command[0])
                replies.append(reply if callback is None else callback(reply))
            return replies

        async def dropped(error: Exception) -> None:
            await conn.disconnect()

        try:
            return await conn.retry.call_with_retry(exchange, dropped)
        finally:
            await pool.release(conn)


_pipelines: dict[int, AutoPipeline] = {}


def auto_pipeline() -> AutoPipeline:
    """The auto-pipeline of the current client (hot paths: seckill attempts)."""
    client = get_redis()
    found = _pipelines.get(id(client))
    if found is None or found.client is not client:
        found = AutoPipeline(client)
        _pipelines[id(client)] = found
    return found
