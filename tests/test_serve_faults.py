"""`mall serve` surviving faults, as an on-call engineer would see them: the embedded
redis-server killed mid flash sale, and SQLite shared by several processes under
concurrent writes. Each test runs real `mall` processes on 127.0.0.1 and stays bounded."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import schema_cache
from tests.process import Service, children, mall_env

pytestmark = [
    pytest.mark.nodb,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

ADMIN_PASSWORD = "correct-horse-battery-" + secrets.token_hex(4)
RECOVERY_SECONDS = 10.0  # /readyz answers 200 again this soon after the kill


def run_mall(data_dir: Path, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mall.cli", "--data-dir", str(data_dir), *argv],
        cwd=data_dir.parent,
        env=mall_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated database with an admin, made once (a first migration costs seconds)."""
    data_dir = tmp_path_factory.mktemp("template") / "data"
    schema_cache.lay_sqlite(data_dir / "mall.sqlite3")
    done = run_mall(
        data_dir, "admin", "create", "--username", "boss", "--password", ADMIN_PASSWORD,
        "--role", "admin",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return data_dir


def data_dir_from(template: Path, tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for db_file in template.glob("mall.sqlite3*"):
        shutil.copy(db_file, data_dir / db_file.name)
    return data_dir


def redis_child(service: Service) -> int:
    found = [
        pid
        for pid in children(service.proc.pid)
        if b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(found) == 1, found
    return found[0]


async def login_admin(client: httpx.AsyncClient) -> dict[str, str]:
    r = await client.post(
        "/api/admin/v1/login", json={"username": "boss", "password": ADMIN_PASSWORD}
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def login_members(client: httpx.AsyncClient, run: str, n: int) -> list[tuple[int, str]]:
    members = []
    for i in range(n):
        r = await client.post("/api/v1/auth/wechat-login", json={"code": f"dev:{run}-{i}"})
        assert r.status_code == 200, r.text
        members.append((int(r.json()["member"]["id"]), r.json()["token"]))
    return members


async def open_sale(
    client: httpx.AsyncClient, admin: dict[str, str], *, stock: int, limit: int
) -> tuple[int, int]:
    starts = datetime.now(UTC) - timedelta(seconds=5)
    r = await client.post(
        "/api/admin/v1/seckill/sessions",
        headers=admin,
        json={
            "name": "drill",
            "starts_at": starts.isoformat(),
            "ends_at": (starts + timedelta(hours=1)).isoformat(),
            "items": [{"title": "gift", "stock": stock, "per_member_limit": limit}],
        },
    )
    assert r.status_code == 201, r.text
    session_id, item_id = r.json()["id"], r.json()["items"][0]["id"]
    r = await client.post(f"/api/admin/v1/seckill/sessions/{session_id}/warm", headers=admin)
    assert r.status_code == 200, r.text
    return session_id, item_id


async def wait_backlog_empty(
    client: httpx.AsyncClient, admin: dict[str, str], session_id: int, within: float
) -> dict[str, Any]:
    """The live figures of the sale's item once every win is persisted."""
    deadline = time.monotonic() + within
    live: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = await client.get(f"/api/admin/v1/seckill/sessions/{session_id}", headers=admin)
        if r.status_code == 200:
            live = r.json()["items"][0]
            if live["backlog"] == 0:
                return live
        await asyncio.sleep(0.3)
    raise AssertionError(f"wins still not persisted after {within}s: {live}")


def orders(data_dir: Path, item_id: int) -> dict[str, tuple[int, str]]:
    """reservation id -> (member id, status) of the sale's orders, from the database."""
    with sqlite3.connect(data_dir / "mall.sqlite3", timeout=10) as db:
        rows = db.execute(
            "SELECT reservation_id, member_id, status FROM seckill_order WHERE item_id = ?",
            (item_id,),
        ).fetchall()
    return {rid: (member, status) for rid, member, status in rows}


@dataclass
class Burst:
    statuses: Counter[int] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)
    wins: list[tuple[int, str]] = field(default_factory=list)  # (member, reservation)
    errors: list[str] = field(default_factory=list)
    ten_wins: asyncio.Event = field(default_factory=asyncio.Event)


async def attempt_until_sold_out(
    client: httpx.AsyncClient,
    item_id: int,
    members: list[tuple[int, str]],
    burst: Burst,
    deadline: float,
    pause: float = 0.05,
) -> None:
    """Every member keeps attempting (through an outage too) until sold out or limited."""

    async def member_loop(member_id: int, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        while time.monotonic() < deadline:
            try:
                r = await client.post(f"/api/v1/seckill/items/{item_id}/attempt", headers=headers)
            except httpx.TransportError as exc:
                burst.errors.append(repr(exc))
                await asyncio.sleep(pause)
                continue
            burst.statuses[r.status_code] += 1
            if r.status_code == 200:
                answer = r.json()
                burst.results[answer["result"]] += 1
                if answer["result"] == "won":
                    burst.wins.append((member_id, answer["reservation_id"]))
                    if len(burst.wins) >= 10:
                        burst.ten_wins.set()
                if answer["result"] in ("sold_out", "limit_reached", "ended"):
                    return
            await asyncio.sleep(pause)

    await asyncio.gather(*(member_loop(m, t) for m, t in members))


def test_redis_killed_mid_flash_sale_is_restarted_without_oversell_or_lost_winners(
    tmp_path: Path, template: Path, processes: list[Service]
) -> None:
    data_dir = data_dir_from(template, tmp_path)
    # entries a consumer read but could not acknowledge before the kill are claimed soon
    service = Service(data_dir, env={"MALL_SECKILL_CLAIM_IDLE_SECONDS": "2"})
    processes.append(service)
    service.wait_ready()
    stock, limit = 40, 5

    async def drill() -> tuple[Burst, float, dict[str, Any], int, int]:
        async with httpx.AsyncClient(base_url=service.base, timeout=10) as client:
            admin = await login_admin(client)
            members = await login_members(client, "sk", 10)  # demand 50 > stock 40
            session_id, item_id = await open_sale(client, admin, stock=stock, limit=limit)
            first_redis = redis_child(service)
            burst = Burst()
            killed = asyncio.Event()
            recovered_after = -1.0

            async def killer() -> None:
                nonlocal recovered_after
                await burst.ten_wins.wait()  # mid-burst: some wins in, most stock left
                os.kill(first_redis, signal.SIGKILL)
                killed_at = time.monotonic()
                killed.set()
                while time.monotonic() - killed_at < RECOVERY_SECONDS:
                    r = await client.get("/readyz")
                    if r.status_code == 200 and time.monotonic() - killed_at > 0.2:
                        recovered_after = time.monotonic() - killed_at
                        return
                    await asyncio.sleep(0.1)

            deadline = time.monotonic() + 25
            await asyncio.gather(
                attempt_until_sold_out(client, item_id, members, burst, deadline), killer()
            )
            assert killed.is_set()
            live = await wait_backlog_empty(client, admin, session_id, within=15)
            return burst, recovered_after, live, item_id, first_redis

    burst, recovered_after, live, item_id, first_redis = asyncio.run(drill())
    assert 0 < recovered_after < RECOVERY_SECONDS, f"/readyz not back:\n{service.output}"
    new_redis = redis_child(service)
    assert new_redis != first_redis  # restarted, as a child of the service

    # the outage answered 503 (never 500), and the sale went on to sell out after it
    assert burst.errors == []
    assert set(burst.statuses) <= {200, 503}, burst.statuses
    assert burst.statuses[503] > 0, "the kill did not land mid-burst"
    assert burst.results["sold_out"] > 0, burst.results
    # no oversell, no lost winner: every win answered is an order of that member
    persisted = orders(data_dir, item_id)
    holding = [rid for rid, (_m, status) in persisted.items() if status != "released"]
    assert len(holding) <= stock and live["held"] == len(holding)
    assert len(burst.wins) <= stock
    for member_id, reservation in burst.wins:
        assert persisted.get(reservation, (None, ""))[0] == member_id, reservation
    assert max(Counter(m for m, _s in persisted.values()).values()) <= limit

    code, left = service.stop(signal.SIGTERM)
    assert code == 0, service.output
    assert left == [], f"children left running after SIGTERM: {left}"
    restarts = [line for line in service.lines if "redis-server exited" in line]
    assert len(restarts) == 1, service.output  # one line for the outage...
    assert "Traceback" not in service.output  # ...and no traceback per retry
    for said_once in ("Redis unreachable", "reachable again", "redis unavailable"):
        assert sum(said_once in line for line in service.lines) <= 1, service.output

    # what the restarted Redis wrote to its AOF agrees with the database
    check = run_mall(data_dir, "check", "seckill")
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"item {item_id} " in check.stdout and "MISMATCH" not in check.stdout, check.stdout


async def make_mug(client: httpx.AsyncClient, admin: dict[str, str]) -> int:
    r = await client.post(
        "/api/admin/v1/points-mall/items",
        headers=admin,
        json={"name": "Mug", "kind": "voucher", "points_price": 10, "total_stock": 100,
              "on_shelf": True},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def tally(statuses: Counter[int], request: Any) -> None:
    """Count the answer's status; 0 for a dropped connection (what followed a 500)."""
    try:
        statuses[(await request).status_code] += 1
    except httpx.TransportError:
        statuses[0] += 1


def grant(client: httpx.AsyncClient, admin: dict[str, str], member_id: int, n: int) -> Any:
    return client.post(
        f"/api/admin/v1/members/{member_id}/points",
        headers={**admin, "Idempotency-Key": f"grant-{member_id}-{n}"},
        json={"points": 100, "reason": "drill"},
    )


async def redeem_burst(
    client: httpx.AsyncClient, mug: int, token: str, statuses: Counter[int], times: int
) -> None:
    for _ in range(times):
        request = client.post(
            f"/api/v1/points-mall/items/{mug}/redeem",
            headers={"Authorization": f"Bearer {token}"},
            json={"quantity": 1},
        )
        await tally(statuses, request)


def _is_redis(pid: int) -> bool:
    try:
        return b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_two_serving_processes_survive_redis_kills_and_write_sqlite_at_once(
    tmp_path: Path, template: Path, processes: list[Service]
) -> None:
    """`mall serve --workers 2`: only the parent (the Redis owner) supervises, and the two
    workers write one SQLite file at once without `database is locked`."""
    data_dir = data_dir_from(template, tmp_path)
    service = Service(data_dir, args=["--workers", "2"])
    processes.append(service)
    service.wait_ready()
    for _kill in range(2):  # a second outage is recovered too
        os.kill(redis_child(service), signal.SIGKILL)
        deadline = time.monotonic() + RECOVERY_SECONDS
        time.sleep(0.3)
        while httpx.get(service.base + "/readyz", timeout=2).status_code != 200:
            assert time.monotonic() < deadline, service.output
            time.sleep(0.1)
    redis_child(service)  # exactly one, a child of `mall serve`

    async def drill() -> tuple[Counter[int], Counter[int]]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=service.base, timeout=30, limits=limits) as client:
            admin = await login_admin(client)
            members = await login_members(client, "w2", 8)
            mug = await make_mug(client, admin)
            grants: Counter[int] = Counter()
            # 16 concurrent grants, spread over both workers by the kernel
            await asyncio.gather(
                *(tally(grants, grant(client, admin, m, n)) for m, _t in members for n in (1, 2))
            )
            redeems: Counter[int] = Counter()
            await asyncio.gather(
                *(redeem_burst(client, mug, t, redeems, 6) for _m, t in members),
                *(tally(grants, grant(client, admin, m, n)) for m, _t in members for n in (3, 4)),
            )
            return grants, redeems

    grants, redeems = asyncio.run(drill())
    assert grants == Counter({201: 32}), grants
    assert redeems == Counter({202: 48}), redeems

    code, left = service.stop(signal.SIGTERM)
    assert code == 0, service.output
    assert left == []
    assert len([line for line in service.lines if "redis-server exited" in line]) == 2
    assert "database is locked" not in service.output, service.output


def test_sqlite_serve_beside_a_worker_persisting_wins_answers_no_500(
    tmp_path: Path, template: Path, processes: list[Service]
) -> None:
    """`mall serve` beside `mall worker` (the README's shape) on one SQLite file: a
    points-mall redeem burst and admin grants while the worker persists flash-sale wins."""
    data_dir = data_dir_from(template, tmp_path)
    service = Service(data_dir, env={"MALL_RUN_JOBS_IN_PROCESS": "false"})
    processes.append(service)
    service.wait_ready()
    worker = Service(data_dir, command=["worker"])  # uses the service's Redis
    processes.append(worker)
    deadline = time.monotonic() + 60
    while not any("mall worker running" in line for line in worker.lines):
        assert worker.proc.poll() is None and time.monotonic() < deadline, worker.output
        time.sleep(0.2)

    async def drill() -> tuple[Counter[int], Counter[int], Burst, dict[str, Any], int]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=service.base, timeout=30, limits=limits) as client:
            admin = await login_admin(client)
            members = await login_members(client, "wk", 8)
            mug = await make_mug(client, admin)
            grants: Counter[int] = Counter()
            await asyncio.gather(
                *(tally(grants, grant(client, admin, m, n)) for m, _t in members for n in (1, 2))
            )
            session_id, item_id = await open_sale(client, admin, stock=80, limit=20)
            redeems: Counter[int] = Counter()
            burst = Burst()
            await asyncio.gather(
                *(redeem_burst(client, mug, t, redeems, 8) for _m, t in members),
                attempt_until_sold_out(
                    client, item_id, members, burst, time.monotonic() + 30, pause=0.01
                ),
                *(tally(grants, grant(client, admin, m, n)) for m, _t in members for n in (3, 4)),
            )
            live = await wait_backlog_empty(client, admin, session_id, within=20)
            return grants, redeems, burst, live, item_id

    grants, redeems, burst, live, item_id = asyncio.run(drill())
    assert grants == Counter({201: 32}), grants
    assert redeems == Counter({202: 64}), redeems
    assert burst.errors == [] and set(burst.statuses) == {200}, burst.statuses
    assert burst.results["sold_out"] > 0, burst.results
    assert live["held"] == len(burst.wins) == 80
    assert len(orders(data_dir, item_id)) == 80
    for process in (service, worker):
        assert "database is locked" not in process.output, process.output
        assert "Traceback" not in process.output, process.output

    code, _left = worker.stop(signal.SIGTERM)
    assert code == 0, worker.output
    code, left = service.stop(signal.SIGTERM)
    assert code == 0, service.output
    assert left == []
