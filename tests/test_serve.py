"""`mall serve` from an empty data folder with the embedded defaults (SQLite and a
redis-server child), and a stop that leaves no child process behind."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from mall.redis import EmbeddedRedis

pytestmark = pytest.mark.nodb

START_TIMEOUT = 60.0  # generous: a loaded CI machine; a healthy start takes a few seconds
STOP_TIMEOUT = 15.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
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


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2] != "Z"  # a zombie has exited


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def mall_env(**settings: str) -> dict[str, str]:
    """This environment without MALL_* settings, plus `settings` (e.g. MALL_WORKERS="2")."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("MALL_")}, **settings}


class Service:
    """`python -m mall.cli --data-dir DIR serve --port P [--demo] [ARGS]` with no MALL_*
    settings but `env`; `command` runs another long-running command (`worker`) instead."""

    def __init__(
        self,
        data_dir: Path,
        *,
        demo: bool = False,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        env = mall_env(**(env or {}))
        if command is None:
            command = ["serve", "--port", str(self.port), *(["--demo"] if demo else []), *args]
        self.proc = subprocess.Popen(
            [*(sys.executable, "-m", "mall.cli", "--data-dir", str(data_dir)), *command],
            cwd=data_dir.parent,  # no stray .env from the checkout
            env=env,
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
        return "\n".join(self.lines[-60:])

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"mall serve exited early:\n{self.output}"
            try:
                if (
                    httpx.get(self.base + "/healthz", timeout=1).status_code == 200
                    and httpx.get(self.base + "/readyz", timeout=2).status_code == 200
                ):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready within {START_TIMEOUT}s:\n{self.output}")

    def admin_login(self) -> tuple[str, str]:
        for line in self.lines:
            found = re.search(r"dev admin login: (\S+) / (\S+)", line)
            if found:
                return found.group(1), found.group(2)
        raise AssertionError(f"no dev admin login printed:\n{self.output}")

    def redis_socket(self) -> Path:
        return EmbeddedRedis(self.data_dir).socket

    def stop(self, sig: signal.Signals) -> tuple[int, list[int]]:
        """Send `sig`; returns the exit code and the children still alive afterwards."""
        children = _children(self.proc.pid)
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(
                f"mall serve ignored {sig.name} for {STOP_TIMEOUT}s:\n{self.output}"
            ) from None
        self._reader.join(2)
        return code, _wait_gone(children, 5.0)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:  # a failed test must not leave a server behind
        children = _children(service.proc.pid) if service.proc.poll() is None else []
        service.kill()
        for pid in _wait_gone(children, 5.0):
            os.kill(pid, signal.SIGKILL)


def _redis_answers(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(1)
        try:
            s.connect(str(path))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def test_serves_from_an_empty_folder_and_sigterm_leaves_no_child(
    tmp_path: Path, services: list[Service]
) -> None:
    data_dir = tmp_path / "data"
    assert not data_dir.exists()
    service = Service(data_dir, demo=True)
    services.append(service)
    service.wait_ready()

    ready = httpx.get(service.base + "/readyz").json()
    assert ready == {"status": "ok", "database": "ok", "redis": "ok"}
    assert httpx.get(service.base + "/docs").status_code == 200
    schema = httpx.get(service.base + "/openapi.json").json()
    assert "/api/v1/me" in schema["paths"]

    username, password = service.admin_login()
    login = httpx.post(
        service.base + "/api/admin/v1/login", json={"username": username, "password": password}
    )
    assert login.status_code == 200, login.text
    assert login.json()["staff"]["role"] == "admin"

    # a shopper can log in (dev login) and read their profile: requests reach the database
    member = httpx.post(service.base + "/api/v1/auth/wechat-login", json={"code": "dev:alice"})
    assert member.status_code == 200, member.text
    me = httpx.get(
        service.base + "/api/v1/me",
        headers={"Authorization": f"Bearer {member.json()['token']}"},
    )
    assert me.status_code == 200, me.text

    if importlib.util.find_spec("mall.catalog.demo") is not None:
        categories = httpx.get(service.base + "/api/v1/catalog/categories")
        assert categories.status_code == 200, categories.text
        assert categories.json(), "demo seeding left the category tree empty"

    # the embedded Redis is a child of the service, with AOF under the data folder
    children = _children(service.proc.pid)
    commands = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children}
    assert any(b"redis-server" in cmd for cmd in commands.values()), commands
    assert (data_dir / "mall.sqlite3").exists()
    assert _redis_answers(service.redis_socket())

    code, left = service.stop(signal.SIGTERM)
    assert code == 0, service.output
    assert left == [], f"children left running after SIGTERM: {left}"
    assert not _redis_answers(service.redis_socket())
    assert not service.redis_socket().exists()
    assert "mall stopped" in service.output
    assert any((data_dir / "redis").glob("appendonly.aof*")), "AOF persistence is off"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
def _member_id(service: Service, name: str) -> tuple[int, bool]:
    r = httpx.post(service.base + "/api/v1/auth/wechat-login", json={"code": f"dev:{name}"})
    assert r.status_code == 200, r.text
    return int(r.json()["member"]["id"]), bool(r.json()["is_new"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
def test_killed_service_takes_its_redis_along_and_restarts(
    tmp_path: Path, services: list[Service]
) -> None:
    data_dir = tmp_path / "data"
    first = Service(data_dir)
    services.append(first)
    first.wait_ready()
    member, is_new = _member_id(first, "bob")
    assert is_new
    children = _children(first.proc.pid)
    assert children

    first.proc.send_signal(signal.SIGKILL)  # no cleanup code runs in the service
    first.proc.wait(STOP_TIMEOUT)
    assert _wait_gone(children, 10.0) == [], "redis-server outlived a killed service"

    # the same folder starts again with the same data
    second = Service(data_dir)
    services.append(second)
    second.wait_ready()
    assert _member_id(second, "bob") == (member, False)

    code, left = second.stop(signal.SIGINT)
    assert code == 0, second.output
    assert left == [], f"children left running after SIGINT: {left}"
    assert not _redis_answers(second.redis_socket())
    assert "Traceback" not in second.output


@pytest.mark.parametrize(
    "argv",
    [
        ["--data-dir", "here", "check", "all"],
        ["check", "all", "--data-dir", "here"],
        ["worker", "--data-dir", "here"],
        ["serve", "--port", "9", "--data-dir", "here"],
        ["admin", "create", "--username", "u", "--password", "p", "--data-dir", "here"],
        ["--data-dir", "elsewhere", "demo", "--data-dir", "here"],  # after the command wins
    ],
)
def test_data_dir_is_accepted_before_or_after_the_command(argv: list[str]) -> None:
    from mall.cli import build_parser

    args = build_parser().parse_args(argv)
    assert (getattr(args, "data_dir_sub", None) or args.data_dir) == Path("here")


@pytest.mark.parametrize("command", ["serve", "worker", "demo"])
def test_production_refuses_unsafe_settings_and_demo_data(command: str, tmp_path: Path) -> None:
    from mall import cli
    from mall.config import ConfigError, Settings

    unsafe = Settings(env="production", data_dir=tmp_path)  # default secret, SQLite, ...
    args = cli.build_parser().parse_args([command, "--demo"] if command == "serve" else [command])
    with pytest.raises(ConfigError):
        args.func(args, unsafe)
    safe = unsafe.model_copy(
        update={
            "secret_key": "c2V0LWEtcmVhbC1zZWNyZXQtaW4tcHJvZHVjdGlvbg",
            "dev_login": False,
            "database_url": "postgres://u@127.0.0.1:1/x",
            "redis_url": "redis://127.0.0.1:1/0",
            "wechat_appid": "wx1",
            "wechat_secret": "s",
        }
    )
    safe.check_safe()
    if command != "worker":  # demo data never goes into a production database
        with pytest.raises(ConfigError, match="demo"):
            args.func(args, safe)
    assert not any(tmp_path.iterdir()), "nothing may be written before refusing"
