"""`mall serve` from an empty data folder with the embedded defaults (SQLite and a
redis-server child), and a stop that leaves no child process behind."""

from __future__ import annotations

import importlib.util
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

from tests import schema_cache
from tests.process import STOP_TIMEOUT, Service, children, wait_gone

pytestmark = pytest.mark.nodb


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
    tmp_path: Path, processes: list[Service]
) -> None:
    data_dir = tmp_path / "data"
    assert not data_dir.exists()
    service = Service(data_dir, demo=True)
    processes.append(service)
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
    kids = children(service.proc.pid)
    commands = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in kids}
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
    tmp_path: Path, processes: list[Service]
) -> None:
    data_dir = tmp_path / "data"
    schema_cache.lay_sqlite(data_dir / "mall.sqlite3")  # not about a first start
    first = Service(data_dir)
    processes.append(first)
    first.wait_ready()
    member, is_new = _member_id(first, "bob")
    assert is_new
    kids = children(first.proc.pid)
    assert kids

    first.proc.send_signal(signal.SIGKILL)  # no cleanup code runs in the service
    first.proc.wait(STOP_TIMEOUT)
    assert wait_gone(kids, 10.0) == [], "redis-server outlived a killed service"

    # the same folder starts again with the same data
    second = Service(data_dir)
    processes.append(second)
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


def test_serves_under_granian_and_stops_cleanly(tmp_path: Path, processes: list[Service]) -> None:
    """`--server granian` (the option beside uvicorn): the same app answers, and SIGTERM
    runs the lifespan's shutdown and leaves no child behind."""
    schema_cache.lay_sqlite(tmp_path / "data" / "mall.sqlite3")  # not about a first start
    service = Service(tmp_path / "data", args=["--server", "granian", "--workers", "2"])
    processes.append(service)
    service.wait_ready()
    # both workers up: granian does not stop a worker still starting when SIGTERM comes
    service.wait_line(r"Started worker-2")
    service.wait_line(r"Started worker-1")
    member = httpx.post(service.base + "/api/v1/auth/wechat-login", json={"code": "dev:gran"})
    assert member.status_code == 200, member.text
    token = member.json()["token"]
    me = httpx.get(service.base + "/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    # the raw-ASGI fast path answers under granian too (an unknown item: its 404 envelope)
    attempt = httpx.post(
        service.base + "/api/v1/seckill/items/999999/attempt",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert attempt.status_code == 404, attempt.text
    assert attempt.json()["error"]["code"] == "SECKILL_ITEM_NOT_FOUND"

    code, left = service.stop(signal.SIGTERM)
    assert code == 0, service.output
    assert left == [], f"children left running after SIGTERM: {left}"
    assert "mall stopped" in service.output
    assert "Traceback" not in service.output
