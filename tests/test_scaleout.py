"""mall on more than one process: `/metrics` of a node with several workers, and (below)
several app nodes sharing one database and one Redis Cluster."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_serve import _children, _free_port, _wait_gone

START_TIMEOUT = 60.0


class Node:
    """`python -m mall.cli ARGS` in a subprocess with exactly `env` as MALL_* settings,
    its output kept for the failure message."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MALL_")}
        full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        full_env.update(env)
        argv = [sys.executable, "-m", "mall.cli", *args]
        if "serve" in args:
            argv += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines[-80:])

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"exited early:\n{self.output}"
            try:
                if httpx.get(self.base + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready within {timeout}s:\n{self.output}")

    def wait_line(self, pattern: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in self.lines):
                return
            assert self.proc.poll() is None, f"exited early:\n{self.output}"
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} within {timeout}s:\n{self.output}")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (graceful: in-flight requests finish), then the exit code."""
        children = _children(self.proc.pid) if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"ignored SIGTERM for {timeout}s:\n{self.output}") from None
        for pid in _wait_gone(children, 5.0):
            os.kill(pid, signal.SIGKILL)
        return code

    def kill(self) -> None:
        children = _children(self.proc.pid) if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in _wait_gone(children, 5.0):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in reversed(started):  # a failed test leaves no process behind
        node.kill()


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.nodb
def test_metrics_sum_every_worker_of_a_node(tmp_path: Path, nodes: list[Node]) -> None:
    """`mall serve --workers 2`: whichever worker answers a scrape, it counts the
    requests both workers served (prometheus-client's multiprocess mode)."""
    data = tmp_path / "data"
    data.mkdir()
    stale = data / "metrics" / "counter_1.db"  # a previous run's file is wiped on start
    stale.parent.mkdir()
    stale.write_bytes(b"\0" * 64)
    node = Node(["--data-dir", str(data), "serve", "--workers", "2"], {}, tmp_path)
    nodes.append(node)
    node.wait_ready()
    assert not stale.exists()

    def writers() -> set[str]:
        return {p.name.rsplit("_", 1)[1] for p in (data / "metrics").glob("counter_*.db")}

    def burst(n: int) -> None:  # concurrent connections: the kernel spreads them
        def one() -> None:
            assert httpx.get(node.base + "/healthz", timeout=10).status_code == 200

        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    calls = 0
    while len(writers()) < 2 and calls < 400:
        burst(20)
        calls += 20
    assert len(writers()) >= 2, "the requests never reached the second worker"
    labels = {"method": "GET", "route": "/healthz", "status": "200"}
    for _ in range(6):  # several scrapes, answered by either worker: the same sum
        text = httpx.get(node.base + "/metrics", timeout=5).text
        assert _sample(text, "mall_http_requests_total", **labels) == calls, text[:2000]
        assert _sample(text, "mall_http_request_seconds_count", method="GET", route="/healthz")
    assert node.stop() == 0, node.output
