"""mall on more than one process: `/metrics` of a node with several workers, and (below)
several app nodes sharing one database and one Redis Cluster."""

from __future__ import annotations

import asyncio
import os
import random
import re
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests import schema_cache
from tests.process import MallProcess
from tests.redis_cluster import RedisClusterHarness, cluster_binary

pytestmark = pytest.mark.nodb  # every process here has its own database and Redis

START_TIMEOUT = 60.0


@pytest.fixture
def nodes(processes: list[MallProcess]) -> list[MallProcess]:
    return processes


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_sum_every_worker_of_a_node(tmp_path: Path, nodes: list[MallProcess]) -> None:
    """`mall serve --workers 2`: whichever worker answers a scrape, it counts the
    requests both workers served (prometheus-client's multiprocess mode)."""
    data = tmp_path / "data"
    data.mkdir()
    stale = data / "metrics" / "counter_1.db"  # a previous run's file is wiped on start
    stale.parent.mkdir()
    stale.write_bytes(b"\0" * 64)
    schema_cache.lay_sqlite(data / "mall.sqlite3")  # not about a first start
    node = MallProcess(["--data-dir", str(data), "serve", "--workers", "2"], cwd=tmp_path)
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
    assert node.terminate() == 0, node.output


# --- several app nodes ----------------------------------------------------------------

PG_URL = os.environ.get("MALL_TEST_DATABASE_URL", "")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterHarness]:
    """Three Redis 7 masters of this test's own (Debian's redis-server)."""
    try:
        cluster_binary()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    harness = RedisClusterHarness(tmp_path / "redis-cluster")
    harness.start()
    try:
        yield harness
    finally:
        harness.stop()


@pytest.fixture
def shared_database(tmp_path: Path) -> Iterator[str]:
    """A database of this test's own: a fresh PostgreSQL database when
    MALL_TEST_DATABASE_URL is set (CI's PostgreSQL pass), else a SQLite file."""
    if not PG_URL:
        schema_cache.lay_sqlite(tmp_path / "shared.sqlite3")
        yield f"sqlite://{tmp_path / 'shared.sqlite3'}?synchronous=NORMAL"
        return
    import asyncpg

    base, _sep, _name = PG_URL.rpartition("/")
    name = f"mall_scale_{secrets.token_hex(4)}"

    async def admin(act: Callable[[asyncpg.Connection], Awaitable[object]]) -> None:
        conn = await asyncpg.connect(PG_URL.replace("postgres://", "postgresql://", 1))
        try:
            await act(conn)
        finally:
            await conn.close()

    asyncio.run(admin(lambda conn: schema_cache.create_postgres_database(conn, name)))
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(
            admin(lambda conn: conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        )


@dataclass
class Mall:
    """Two `mall serve` nodes and a `mall worker`, sharing one database and one cluster."""

    env: dict[str, str]
    cwd: Path
    nodes: list[MallProcess]
    admin: dict[str, str]

    def start(self, args: list[str], url: str) -> MallProcess:
        node = MallProcess(args, cwd=self.cwd, env={**self.env, "MALL_REDIS_URL": url})
        self.nodes.append(node)
        return node

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALL_")}
        env.update(self.env)
        return subprocess.run(
            [sys.executable, "-m", "mall.cli", *args],
            cwd=self.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


ADMIN_PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def mall(
    tmp_path: Path, cluster: RedisClusterHarness, shared_database: str, nodes: list[MallProcess]
) -> Mall:
    env = {
        "MALL_DATABASE_URL": shared_database,
        "MALL_REDIS_URL": cluster.url,
        # tokens signed by one node are read by the other
        "MALL_SECRET_KEY": "scale-" + secrets.token_hex(24),
        "MALL_RUN_JOBS_IN_PROCESS": "false",  # the worker runs jobs and consumers
        # 80 members log in from one address in seconds: above the per-address default
        "MALL_MEMBER_LOGIN_IP_MAX_ATTEMPTS": "10000",
        "MALL_DATA_DIR": str(tmp_path / "worker-data"),
    }
    shared = Mall(env, tmp_path, nodes, {})
    created = shared.run(
        "admin", "create", "--username", "boss", "--password", ADMIN_PASSWORD, "--role", "admin"
    )
    assert created.returncode == 0, created.stdout + created.stderr
    return shared


def _serve(mall: Mall, name: str, redis_port: int) -> MallProcess:
    """An app node with its own data folder, reaching the cluster through `redis_port`."""
    data = mall.cwd / f"data-{name}"
    return mall.start(
        ["--data-dir", str(data), "serve", "--workers", "1"], f"redis://127.0.0.1:{redis_port}/0"
    )


async def _login_members(bases: list[str], prefix: str, n: int) -> list[str]:
    """Dev logins spread over the nodes; each token works on every node."""
    async with httpx.AsyncClient(timeout=30) as http:

        async def one(i: int) -> str:
            base = bases[i % len(bases)]
            r = await http.post(
                f"{base}/api/v1/auth/wechat-login", json={"code": f"dev:{prefix}{i}"}
            )
            assert r.status_code == 200, r.text
            return str(r.json()["token"])

        return list(await asyncio.gather(*(one(i) for i in range(n))))


async def _burst(
    calls: list[tuple[str, int, str]],
    *,
    connections: int = 64,
    stop: tuple[MallProcess, int] | None = None,
) -> list[tuple[int, str]]:
    """Every (node base, item, token) attempt at once; (status, result) each, status 0
    when the node could not be reached. `stop=(node, n)`: SIGTERM `node` once it has
    answered n attempts, while the rest of the burst is still on its way."""
    limits = httpx.Limits(max_connections=connections)
    answered: Counter[str] = Counter()
    stopping: list[asyncio.Task[int]] = []
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:

        async def one(base: str, item_id: int, token: str) -> tuple[int, str]:
            try:
                r = await http.post(
                    f"{base}/api/v1/seckill/items/{item_id}/attempt",
                    headers={"Authorization": f"Bearer {token}"},
                )
            except httpx.TransportError as exc:  # a node going away
                return 0, type(exc).__name__
            answered[base] += 1
            if stop is not None and not stopping and answered[stop[0].base] >= stop[1]:
                stopping.append(asyncio.create_task(asyncio.to_thread(stop[0].terminate)))
            result = r.json().get("result", "") if r.status_code == 200 else r.text
            return r.status_code, str(result)

        answers = list(await asyncio.gather(*(one(*call) for call in calls)))
        if stopping:
            assert await stopping[0] == 0, stop and stop[0].output
        return answers


def _admin_headers(base: str) -> dict[str, str]:
    r = httpx.post(
        base + "/api/admin/v1/login", json={"username": "boss", "password": ADMIN_PASSWORD}
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _new_sale(base: str, admin: dict[str, str], stock: int) -> tuple[int, int]:
    starts = datetime.now(UTC) - timedelta(seconds=5)
    body = {
        "name": "two nodes",
        "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(hours=1)).isoformat(),
        "items": [{"title": "hot gift", "stock": stock, "per_member_limit": 1}],
    }
    r = httpx.post(base + "/api/admin/v1/seckill/sessions", json=body, headers=admin)
    assert r.status_code == 201, r.text
    session_id, item_id = int(r.json()["id"]), int(r.json()["items"][0]["id"])
    r = httpx.post(f"{base}/api/admin/v1/seckill/sessions/{session_id}/warm", headers=admin)
    assert r.status_code == 200, r.text
    return session_id, item_id


def _wait_persisted(base: str, admin: dict[str, str], session_id: int, held: int) -> None:
    deadline = time.monotonic() + 30
    item: dict[str, object] = {}
    while time.monotonic() < deadline:
        r = httpx.get(f"{base}/api/admin/v1/seckill/sessions/{session_id}", headers=admin)
        item = r.json()["items"][0]
        if item["backlog"] == 0 and item["held"] == held:
            return
        time.sleep(0.2)
    raise AssertionError(f"the worker did not persist every win: {item}")


def test_two_app_nodes_and_a_worker_sell_exactly_the_stock_across_a_rolling_restart(
    mall: Mall, cluster: RedisClusterHarness
) -> None:
    """Two `mall serve` processes (each reaching the cluster through another master) and
    a `mall worker`: a burst split over both nodes, every member trying on both at once,
    sells exactly the stock, each member at most once; every reconciler is clean. Then a
    rolling deploy during a second sale: node A stops (SIGTERM) in the middle of a burst
    and a new node takes its place while B keeps answering; the stock stays exact."""
    started = time.monotonic()
    a = _serve(mall, "a", cluster.ports[0])
    b = _serve(mall, "b", cluster.ports[1])
    worker = mall.start(["worker"], f"redis://127.0.0.1:{cluster.ports[2]}/0")
    a.wait_ready()
    b.wait_ready()
    worker.wait_line(r"mall worker running \d+ jobs")
    admin = _admin_headers(a.base)
    stock, members = 25, 80
    session_id, item_id = _new_sale(b.base, admin, stock)
    tokens = asyncio.run(_login_members([a.base, b.base], "twonodes", members))

    calls = [(base, item_id, token) for token in tokens for base in (a.base, b.base)]
    random.Random(7).shuffle(calls)
    answers = asyncio.run(_burst(calls))
    assert {status for status, _r in answers} == {200}, Counter(answers).most_common(5)
    results = Counter(result for _s, result in answers)
    assert results["won"] == stock, results
    assert set(results) <= {"won", "sold_out", "limit_reached"}, results
    winners = Counter(
        token for (_b, _i, token), (_s, r) in zip(calls, answers, strict=True) if r == "won"
    )
    assert max(winners.values()) == 1  # the per-member limit held across the nodes
    per_node = Counter(base for (base, _i, _t), (_s, r) in zip(calls, answers, strict=True))
    assert per_node[a.base] == per_node[b.base] == members

    _wait_persisted(a.base, admin, session_id, stock)
    sales = [(item_id, stock)]

    # --- a rolling restart of node A during a second sale
    stock = 30
    session_id, item_id = _new_sale(b.base, admin, stock)
    sales.append((item_id, stock))
    first = [(base, item_id, token) for token in tokens for base in (a.base, b.base)]
    random.Random(8).shuffle(first)
    # few connections, so that A still has attempts queued when its SIGTERM lands
    answers = asyncio.run(_burst(first, connections=8, stop=(a, 10)))
    assert a.proc.poll() == 0
    on_b = [ans for (base, _i, _t), ans in zip(first, answers, strict=True) if base == b.base]
    assert {status for status, _r in on_b} == {200}, Counter(on_b).most_common(5)
    on_a = Counter(
        st for (base, _i, _t), (st, _r) in zip(first, answers, strict=True) if base == a.base
    )
    assert set(on_a) <= {200, 0}, on_a  # answered, or refused once A stopped listening

    a2 = _serve(mall, "a2", cluster.ports[2])  # the new release's node, same key layout
    a2.wait_ready()
    second = [(base, item_id, token) for token in tokens for base in (a2.base, b.base)]
    random.Random(9).shuffle(second)
    later = asyncio.run(_burst(second))
    assert {status for status, _r in later} == {200}, Counter(later).most_common(5)
    won = [
        token
        for (_b, _i, token), (_s, r) in zip(first + second, answers + later, strict=True)
        if r == "won"
    ]
    assert len(won) <= stock and len(set(won)) == len(won)  # a win A never sent is held
    _wait_persisted(b.base, admin, session_id, stock)  # sold out exactly: 80 members tried

    checked = mall.run("check", "all")  # every reconciler, both sales
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for sold_item, sold in sales:
        line = rf"item {sold_item} .*redis=0 held={sold} backlog=0 returns_due=0 OK"
        assert re.search(line, checked.stdout), checked.stdout

    for node in (a2, b, worker):
        assert node.terminate() == 0, node.output
    print(f"two nodes and a rolling restart: {time.monotonic() - started:.1f}s")
