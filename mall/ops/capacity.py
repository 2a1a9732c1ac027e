"""The figures behind docs/SCALING.md, measured on this machine (only 127.0.0.1).

    python -m mall.ops.capacity slot      [--seconds 8] [--clients 2]
    python -m mall.ops.capacity app       [--attempts 20000]
    python -m mall.ops.capacity consumer  [--wins 3000]   (MALL_DATABASE_URL: PostgreSQL)

Machines here are shared and noisy, so each figure is a cost per CPU-second of the
process that pays it (read from /proc or Redis INFO), not a wall-clock rate:
- slot: the real seckill attempt script on a redis-server 7 (`/usr/bin/redis-server`),
  called by pipelining clients; calls per CPU-second of Redis, which is one core (a
  Redis shard runs commands on one thread, and one hot item lives in one slot).
- app: `mall serve` with one worker answering attempts over HTTP; attempts per
  CPU-second of the app process and of Redis, so app cores per Redis core.
- consumer: wins persisted per second by the existing stream consumer into the
  connected database, and the consumer's CPU-seconds per win; the same for points-mall
  redemptions (the redemption consumer)."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis as redis_sync

from mall.kit.stock.pool import LIBRARY
from mall.redis import _lua_source

SERVER = "/usr/bin/redis-server"
HOST = "127.0.0.1"


# --- a redis-server 7 of our own -----------------------------------------------------


@contextmanager
def redis_server(*, aof: bool) -> Iterator[str]:
    """A throwaway redis-server 7 on a unix socket; yields its socket path."""
    binary = SERVER if Path(SERVER).exists() else shutil.which("redis-server") or ""
    folder = Path(tempfile.mkdtemp(prefix="mall-capacity-"))
    sock = folder / "redis.sock"
    args = [
        binary, "--port", "0", "--unixsocket", str(sock), "--dir", str(folder),
        "--save", "", "--appendonly", "yes" if aof else "no", "--appendfsync", "everysec",
        "--daemonize", "no", "--loglevel", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis_sync.Redis(unix_socket_path=str(sock)).ping():
                    break
            except (redis_sync.ConnectionError, FileNotFoundError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield str(sock)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def _redis_cpu(client: redis_sync.Redis) -> float:
    info: dict[str, Any] = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _proc_cpu(pid: int) -> float:
    """CPU-seconds (user + system) of a process and its children that were waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


# --- slot: the attempt script alone ----------------------------------------------------

ITEM = 1
# attempt.lua's KEYS, in its order (attempt._item_keys + the member's rate-limit key)
KEYS_OF = ("meta", "stock", "buyers", "idem", "wins", "res", "booked", "flagged", "rl:{m}")


def _keys(member: int) -> list[str]:
    return [f"{{sk:{ITEM}}}:" + part.format(m=member) for part in KEYS_OF]


def _prepare(sock: str, stock: int) -> str:
    client = redis_sync.Redis(unix_socket_path=sock)
    client.flushall()
    now = int(time.time() * 1000)
    client.hset(
        f"{{sk:{ITEM}}}:meta",
        mapping={"item": ITEM, "start": now - 60_000, "end": now + 3_600_000, "limit": 1,
                 "closed": 0, "points": 0, "cash": 0, "initial": stock},
    )  # fmt: skip
    client.set(f"{{sk:{ITEM}}}:stock", stock)
    # as kit.stock.script loads it: the kit's Lua helpers first
    source = _lua_source(*LIBRARY) + "\n" + _lua_source("mall.seckill", "attempt")
    return str(client.script_load(source))


def _client_loop(
    sock: str, sha: str, first: int, step: int, cycle: int, seconds: float, out: Any
) -> None:
    """One client process: pipelines of 200 attempts by members first, first + step, ...
    (modulo `cycle` when it is not 0)."""
    client = redis_sync.Redis(unix_socket_path=sock)
    member, calls = first, 0
    deadline = time.monotonic() + seconds
    now = str(int(time.time() * 1000))
    while time.monotonic() < deadline:
        pipe = client.pipeline(transaction=False)
        for _ in range(200):
            rid = f"{ITEM}-{member}-{calls}"
            # no fair-sale rules: the token claims (ARGV 7-9) are not read
            pipe.evalsha(
                sha, len(KEYS_OF), *_keys(member), member, "", now, rid, 5, 1000, "", "", ""
            )
            member += step
            if cycle:
                member %= cycle
            calls += 1
        pipe.execute()
    out.put(calls)


def measure_slot(scenario: str, *, seconds: float, clients: int, aof: bool) -> dict[str, float]:
    """`won`: every call wins (deep stock, a new member each time); `limit`: members who
    already won try again; `sold_out`: stock 0."""
    with redis_server(aof=aof) as sock:
        stock = 0 if scenario == "sold_out" else 10**9
        sha = _prepare(sock, stock)
        client = redis_sync.Redis(unix_socket_path=sock)
        cycle = 200_000 if scenario == "limit" else 0
        if cycle:  # members 0..cycle-1 hold their one unit already
            client.hset(f"{{sk:{ITEM}}}:buyers", mapping={str(m): 1 for m in range(cycle)})
        ctx = multiprocessing.get_context("fork")
        queue: Any = ctx.Queue()
        before = _redis_cpu(client)
        started = time.monotonic()
        procs = [
            ctx.Process(target=_client_loop, args=(sock, sha, i, clients, cycle, seconds, queue))
            for i in range(clients)
        ]
        for p in procs:
            p.start()
        calls = sum(queue.get() for _ in procs)
        for p in procs:
            p.join()
        wall = time.monotonic() - started
        cpu = _redis_cpu(client) - before
        stats: dict[str, Any] = client.info("commandstats").get("cmdstat_evalsha", {})
        return {
            "calls": calls,
            "per_wall_second": calls / wall,
            "redis_cpu_seconds": cpu,
            "per_redis_cpu_second": calls / cpu if cpu else 0.0,
            "usec_per_call": float(stats.get("usec_per_call", 0.0)),
        }


def cmd_slot(args: argparse.Namespace) -> int:
    print(
        f"seckill attempt script on {SERVER}, {args.clients} pipelining client processes, "
        f"{args.seconds:g} s each"
    )
    print("| answer | AOF | calls/s (wall) | calls per Redis CPU-second | usec/call (Lua) |")
    print("|---|---|---|---|---|")
    for scenario in ("won", "limit", "sold_out"):
        for aof in (False, True):
            found = measure_slot(scenario, seconds=args.seconds, clients=args.clients, aof=aof)
            print(
                f"| {scenario} | {'everysec' if aof else 'off'} | {found['per_wall_second']:,.0f} "
                f"| {found['per_redis_cpu_second']:,.0f} | {found['usec_per_call']:.1f} |",
                flush=True,
            )
    return 0


# --- app: attempts over HTTP, CPU of the app process and of Redis ---------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def _app_setup(base: str, password: str, members: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        r = await http.post("/api/admin/v1/login", json={"username": "admin", "password": password})
        r.raise_for_status()
        admin = {"Authorization": f"Bearer {r.json()['token']}"}
        gate = asyncio.Semaphore(16)

        async def login(i: int) -> str:
            async with gate:
                r = await http.post("/api/v1/auth/wechat-login", json={"code": f"dev:cap{i}"})
                r.raise_for_status()
                return str(r.json()["token"])

        tokens = list(await asyncio.gather(*(login(i) for i in range(members))))
        starts = datetime.now(UTC) - timedelta(seconds=5)
        r = await http.post(
            "/api/admin/v1/seckill/sessions",
            headers=admin,
            json={
                "name": "capacity",
                "starts_at": starts.isoformat(),
                "ends_at": (starts + timedelta(hours=1)).isoformat(),
                "items": [
                    {"title": "deep", "stock": 10_000_000, "per_member_limit": 1},
                    {"title": "one", "stock": 1, "per_member_limit": 1},
                ],
            },
        )
        r.raise_for_status()
        session = r.json()
        warm = await http.post(
            f"/api/admin/v1/seckill/sessions/{session['id']}/warm", headers=admin
        )
        warm.raise_for_status()
        ids = [item["id"] for item in session["items"]]
        return {"tokens": tokens, "deep": ids[0], "one": ids[1]}


def measure_app(*, attempts: int, members: int, concurrency: int) -> list[dict[str, Any]]:
    from mall.kit.drill import asyncio_burst, bearer_requests

    with redis_server(aof=True) as sock:
        redis_client = redis_sync.Redis(unix_socket_path=sock)
        data = Path(tempfile.mkdtemp(prefix="mall-capacity-app-"))
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALL_")}
        env.update({"MALL_REDIS_URL": f"unix://{sock}", "MALL_RUN_JOBS_IN_PROCESS": "false"})
        server = subprocess.Popen(
            [sys.executable, "-m", "mall.cli", "--data-dir", str(data), "serve", "--demo",
             "--port", str(port), "--workers", "1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            base = f"http://{HOST}:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mall serve did not start")
                time.sleep(0.3)
            password = (data / "dev-admin-password.txt").read_text().strip()
            ids = asyncio.run(_app_setup(base, password, members))
            tokens: list[str] = ids["tokens"]
            owners = [i % len(tokens) for i in range(attempts)]
            deep = f"/api/v1/seckill/items/{ids['deep']}/attempt"
            one = f"/api/v1/seckill/items/{ids['one']}/attempt"
            rows = []
            for name, method, path in (
                ("GET /healthz", "GET", "/healthz"),
                ("attempt, decided in Lua (won, then limit_reached)", "POST", deep),
                ("attempt, sold out (answered in-process)", "POST", one),
            ):
                requests = bearer_requests(method, path, HOST, tokens, attempts)
                app_before, redis_before = _proc_cpu(server.pid), _redis_cpu(redis_client)
                burst = asyncio.run(asyncio_burst(name, HOST, port, requests, owners, concurrency))
                app_cpu = _proc_cpu(server.pid) - app_before
                redis_cpu = _redis_cpu(redis_client) - redis_before
                done = sum(burst.statuses.values())
                rows.append(
                    {
                        "name": name,
                        "requests": done,
                        "statuses": dict(burst.statuses),
                        "results": dict(burst.results),
                        "per_wall_second": burst.rate,
                        "per_app_cpu_second": done / app_cpu if app_cpu else 0.0,
                        "per_redis_cpu_second": done / redis_cpu if redis_cpu else 0.0,
                    }
                )
            return rows
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
            shutil.rmtree(data, ignore_errors=True)


def cmd_app(args: argparse.Namespace) -> int:
    rows = measure_app(attempts=args.attempts, members=args.members, concurrency=args.concurrency)
    print(
        f"`mall serve` (1 worker, Redis 7 with AOF), {args.attempts} requests per row "
        f"at concurrency {args.concurrency}, {args.members} members"
    )
    print("| requests | per wall second | per app CPU-second | per Redis CPU-second | "
          "app cores per Redis core |")  # fmt: skip
    print("|---|---|---|---|---|")
    for row in rows:
        redis_rate = row["per_redis_cpu_second"]
        ratio = redis_rate / row["per_app_cpu_second"] if row["per_app_cpu_second"] else 0
        print(
            f"| {row['name']} | {row['per_wall_second']:,.0f} | "
            f"{row['per_app_cpu_second']:,.0f} | {redis_rate:,.0f} | {ratio:.1f} |"
        )
        print(f"|   statuses {row['statuses']} results {row['results']} | | | | |", flush=True)
    return 0


# --- consumer: wins persisted into the database ---------------------------------------


@contextmanager
def _scratch_database(synchronous_commit: str = "") -> Iterator[str]:
    """MALL_DATABASE_URL's server with a database of our own (dropped after), else a
    SQLite file. `synchronous_commit`: that setting for the database (PostgreSQL)."""
    url = os.environ.get("MALL_DATABASE_URL", "")
    if not url.startswith("postgres"):
        folder = Path(tempfile.mkdtemp(prefix="mall-capacity-db-"))
        try:
            yield f"sqlite://{folder / 'mall.sqlite3'}?synchronous=NORMAL"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    import asyncpg

    base, _sep, _name = url.rpartition("/")
    name = f"mall_capacity_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    if synchronous_commit:
        asyncio.run(
            admin(f'ALTER DATABASE "{name}" SET synchronous_commit TO {synchronous_commit}')
        )
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _consume(dsn: str, sock: str, wins: int, consumers: list[int]) -> list[dict[str, Any]]:
    from mall import db
    from mall import redis as mall_redis
    from mall.config import Settings, set_settings
    from mall.kit import clock
    from mall.members.models import Member
    from mall.points import service as points_service
    from mall.seckill import service
    from mall.seckill.models import SeckillItem
    from mall.seckill.schemas import ItemIn, SessionIn

    settings = set_settings(
        Settings(database_url=dsn, redis_url=f"unix://{sock}", data_dir=Path(tempfile.gettempdir()))
    )
    await db.migrate(settings)
    await db.close_db()
    await db.init_db(settings)
    mall_redis.connect(settings.redis_url or "", cluster=False)
    rows: list[dict[str, Any]] = []
    empty = await _database_bytes()
    try:
        prefix = "cap"
        await Member.bulk_create(
            [Member(openid=f"{prefix}{i}", nickname=f"m{i}") for i in range(wins)],
            batch_size=1000,
        )
        found = await Member.filter(openid__startswith=prefix).order_by("id").values_list("id")
        members = [int(row[0]) for row in found]
        for member in members:
            await points_service.earn(member, 10_000, idempotency_key=f"cap-{member}", reason="cap")
        for label, points, cash in (("free gift", 0, 0), ("points-priced", 100, 0),
                                    ("cash-priced (pending payment)", 0, 990)):  # fmt: skip
            for n in consumers:
                start = clock.now() - timedelta(seconds=30)
                session = await service.create_session(
                    SessionIn(
                        name=f"{label} x{n}",
                        starts_at=start,
                        ends_at=start + timedelta(hours=1),
                        items=[ItemIn(title=label, stock=wins, points_price=points,
                                      cash_price_fen=cash, per_member_limit=1)],
                    ),
                    None,
                )  # fmt: skip
                await service.warm_session(session.id)
                item = await SeckillItem.get(session_id=session.id)
                answers = await asyncio.gather(*(service.attempt(item.id, m) for m in members))
                assert all(a.result == "won" for a in answers), {a.result for a in answers}
                cpu_before = time.process_time()
                started = time.perf_counter()
                done = await asyncio.gather(*(service.drain(f"cap-{k}") for k in range(n)))
                wall = time.perf_counter() - started
                cpu = time.process_time() - cpu_before
                assert sum(done) == wins, done
                [check] = await service.reconcile([item.id])
                assert check.ok, check.line()
                rows.append(
                    {"name": label, "consumers": n, "wins": wins, "per_second": wins / wall,
                     "consumer_cpu_ms_per_win": 1000 * cpu / wins}
                )  # fmt: skip
        rows += await _consume_redemptions(members, consumers)
        grown = await _database_bytes() - empty
        orders = wins * 3 * len(consumers)
        rows.append({"name": "size", "members": wins, "orders": orders, "bytes": grown})
    finally:
        await mall_redis.close()
        await db.close_db()
    return rows


async def _consume_redemptions(members: list[int], consumers: list[int]) -> list[dict[str, Any]]:
    """Points-mall redemptions (a voucher for 100 points), one per member, decided in
    Redis, then persisted by the redemption consumer (points spent per batch)."""
    from mall.members.models import Staff
    from mall.pointsmall import persist
    from mall.pointsmall import service as pm_service
    from mall.pointsmall.models import PointsMallRedemption
    from mall.pointsmall.schemas import ItemCreate

    staff = await Staff.create(username=f"cap_{secrets.token_hex(4)}", password_hash="-")
    rows: list[dict[str, Any]] = []
    for n in consumers:
        item = await pm_service.create_item(
            ItemCreate(
                name=f"voucher x{n}",
                kind="voucher",
                points_price=100,
                total_stock=len(members),
                on_shelf=True,
            ),
            staff,
        )
        answers = await asyncio.gather(
            *(pm_service.redeem(m, item.id, 1, None, f"cap-{item.id}-{m}") for m in members)
        )
        assert all(a.status == "pending" for a in answers), {a.status for a in answers}
        cpu_before = time.process_time()
        started = time.perf_counter()
        done = await asyncio.gather(*(persist.drain(f"cap-{k}") for k in range(n)))
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        assert sum(done) == len(members), done
        issued = await PointsMallRedemption.filter(item_id=item.id, status="issued").count()
        assert issued == len(members), issued
        rows.append(
            {"name": "points-mall redeem (voucher, 100 points)", "consumers": n,
             "wins": len(members), "per_second": len(members) / wall,
             "consumer_cpu_ms_per_win": 1000 * cpu / len(members)}
        )  # fmt: skip
    return rows


async def _database_bytes() -> int:
    """The database's size on disk (PostgreSQL; SQLite: the file's pages)."""
    from tortoise import connections

    conn = connections.get("default")
    if conn.capabilities.dialect == "postgres":
        _n, rows = await conn.execute_query("SELECT pg_database_size(current_database())")
        return int(rows[0][0])
    _n, rows = await conn.execute_query(
        "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
    )
    return int(rows[0][0])


def cmd_consumer(args: argparse.Namespace) -> int:
    with redis_server(aof=True) as sock, _scratch_database(args.synchronous_commit) as dsn:
        kind = "PostgreSQL" if dsn.startswith("postgres") else "SQLite"
        if args.synchronous_commit and kind == "PostgreSQL":
            kind += f" (synchronous_commit={args.synchronous_commit})"
        consumers = [int(c) for c in args.consumers.split(",")]
        rows = asyncio.run(_consume(dsn, sock, args.wins, consumers))
    print(
        f"{args.wins} wins (redemptions) per row persisted by the seckill (points-mall) "
        f"consumer into {kind}"
    )
    print("| win | consumers (asyncio tasks, one process) | wins persisted/s | "
          "consumer CPU ms per win |")  # fmt: skip
    print("|---|---|---|---|")
    for row in rows:
        if row["name"] == "size":
            continue
        print(
            f"| {row['name']} | {row['consumers']} | {row['per_second']:,.0f} | "
            f"{row['consumer_cpu_ms_per_win']:.2f} |"
        )
    size = rows[-1]
    print(
        f"database growth: {size['bytes'] / 1e6:.1f} MB for {size['members']} members with a "
        f"points grant each and {size['orders']} flash-sale orders (with their ledger entries)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mall.ops.capacity", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    slot = sub.add_parser("slot", help="seckill attempt Lua calls per Redis CPU-second")
    slot.add_argument("--seconds", type=float, default=8.0)
    slot.add_argument("--clients", type=int, default=2)
    slot.set_defaults(func=cmd_slot)
    app = sub.add_parser("app", help="attempts per CPU-second of the app and of Redis")
    app.add_argument("--attempts", type=int, default=20_000)
    app.add_argument("--members", type=int, default=2_000)
    app.add_argument("--concurrency", type=int, default=128)
    app.set_defaults(func=cmd_app)
    consumer = sub.add_parser("consumer", help="wins persisted per second (MALL_DATABASE_URL)")
    consumer.add_argument("--wins", type=int, default=3_000)
    consumer.add_argument("--consumers", default="1,4", help="comma-separated counts to try")
    consumer.add_argument(
        "--synchronous-commit", choices=["on", "off", "local"], default="", help="PostgreSQL"
    )
    consumer.set_defaults(func=cmd_consumer)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
