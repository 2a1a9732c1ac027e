"""One harness for tests that run mall as a real process (`python -m mall.cli ...`):
`mall serve`, `mall worker`, several app nodes. It keeps the process's output for the
failure message, waits for readiness, stops it with a signal, and never leaves a child
(the embedded redis-server, uvicorn workers) behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from mall.redis import EmbeddedRedis

START_TIMEOUT = 60.0  # generous: a loaded CI machine; a healthy start takes a few seconds
STOP_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    """Pids whose parent is `pid`, from /proc/*/stat."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ..."; comm may hold spaces and parentheses
        fields = text[text.rfind(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2] != "Z"  # a zombie has exited


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait for `pids` to exit; returns those still alive after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def mall_env(**settings: str) -> dict[str, str]:
    """This environment without MALL_* settings (nor a metrics folder of the test
    process), plus `settings` (e.g. MALL_WORKERS="2")."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALL_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return {**env, **settings}


class MallProcess:
    """`python -m mall.cli [--data-dir DIR] COMMAND...` with no MALL_* settings but
    `env`. For `serve`, a free 127.0.0.1 port is chosen (`base`)."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str] | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        argv = [sys.executable, "-m", "mall.cli"]
        if data_dir is not None:
            argv += ["--data-dir", str(data_dir)]
        argv += command
        if "serve" in command:
            argv += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,  # e.g. the data folder's parent: no stray .env from the checkout
            env=mall_env(**(env or {})),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:  # closed at the end of output: warnings are errors
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines[-80:])

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until `/readyz` answers 200 (the only request it makes: tests count them)."""
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

    def admin_login(self) -> tuple[str, str]:
        for line in self.lines:
            found = re.search(r"dev admin login: (\S+) / (\S+)", line)
            if found:
                return found.group(1), found.group(2)
        raise AssertionError(f"no dev admin login printed:\n{self.output}")

    def stop(
        self, sig: signal.Signals = signal.SIGTERM, timeout: float = STOP_TIMEOUT
    ) -> tuple[int, list[int]]:
        """Send `sig` (SIGTERM: graceful, in-flight requests finish); returns the exit
        code and the children still alive 5 s later (the caller asserts on them)."""
        kids = children(self.proc.pid) if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"ignored {sig.name} for {timeout}s:\n{self.output}") from None
        self._reader.join(5.0)
        return code, wait_gone(kids, 5.0)

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM; returns the exit code, with any child it left killed."""
        code, left = self.stop(signal.SIGTERM, timeout)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        return code

    def kill(self) -> None:
        """SIGKILL, and then every child it left."""
        kids = children(self.proc.pid) if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in wait_gone(kids, 5.0):
            os.kill(pid, signal.SIGKILL)
        self._reader.join(5.0)


class Service(MallProcess):
    """`mall --data-dir DIR serve [--demo] [ARGS]` (or `command`, e.g. `worker`), run
    from the data folder's parent."""

    def __init__(
        self,
        data_dir: Path,
        *,
        demo: bool = False,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        if command is None:
            command = ["serve", *(["--demo"] if demo else []), *args]
        super().__init__(command, cwd=data_dir.parent, env=env, data_dir=data_dir)

    def redis_socket(self) -> Path:
        return EmbeddedRedis(self.data_dir or Path()).socket
