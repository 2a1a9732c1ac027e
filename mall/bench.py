"""`mall bench`: measure the hot paths against a bare FastAPI app in the same run.

Starts `mall serve` (a fresh data folder; SQLite and the embedded Redis unless
--database-url / --redis-url or MALL_DATABASE_URL / MALL_REDIS_URL say otherwise) with a
`mall worker`, and the bare app (mall/bench_bare.py) under the same uvicorn settings and
worker count, both on 127.0.0.1. Sets up members, flash sales, a points-mall item and a
blind box through the HTTP API, then fires each burst with `wrk`, paired with a bare-app
burst just before it, at each --connections level, and prints requests/s, the ratio to
the bare app, p50/p99 next to the bare app's, non-2xx/5xx counts, and the persistence
lag (the seckill wins stream's, the points-mall redemption stream's and the blind-box
draw stream's backlog during and after each burst that decides something).
Machines here are noisy, so only ratios from one run are quoted in docs/BENCHMARKS.md.
Load only ever goes to 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from mall.bench_wrk import HOST as HOST
from mall.bench_wrk import LAG_HEAD as LAG_HEAD
from mall.bench_wrk import TABLE_HEAD as TABLE_HEAD
from mall.bench_wrk import Lag as Lag
from mall.bench_wrk import Result as Result
from mall.bench_wrk import Run as Run
from mall.bench_wrk import _free_port
from mall.bench_wrk import parse_wrk as parse_wrk
from mall.bench_wrk import wrk as wrk

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
SAMPLE_SECONDS = 0.5


@dataclass
class Setup:
    tokens: list[str]
    admin: dict[str, str]
    # per connection level: its own flash sale, so each level starts with fresh stock
    sessions: dict[int, int]
    items: dict[int, dict[str, int]]
    voucher: int
    box: int


async def _setup(base: str, admin_password: str, members: int, levels: list[int]) -> Setup:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        r = await client.post(
            "/api/admin/v1/login", json={"username": "admin", "password": admin_password}
        )
        r.raise_for_status()
        admin = {"Authorization": f"Bearer {r.json()['token']}"}
        tokens: list[str] = [""] * members
        gate = asyncio.Semaphore(16)

        async def member(i: int) -> None:
            async with gate:
                r = await client.post("/api/v1/auth/wechat-login", json={"code": f"dev:bench{i}"})
                r.raise_for_status()
                tokens[i], member_id = r.json()["token"], r.json()["member"]["id"]
                grant = await client.post(
                    f"/api/admin/v1/members/{member_id}/points",
                    headers={**admin, "Idempotency-Key": f"bench-grant-{i}"},
                    json={"points": 1_000_000, "reason": "benchmark"},
                )
                grant.raise_for_status()
                # blind boxes are sold to adults only (SAMR 2023): a birthday is required
                me = await client.patch(
                    "/api/v1/me",
                    headers={"Authorization": f"Bearer {tokens[i]}"},
                    json={"birthday": "1990-01-01"},
                )
                me.raise_for_status()

        await asyncio.gather(*(member(i) for i in range(members)))
        sessions: dict[int, int] = {}
        items: dict[int, dict[str, int]] = {}
        for level in levels:
            starts = datetime.now(UTC) - timedelta(seconds=5)
            r = await client.post(
                "/api/admin/v1/seckill/sessions",
                headers=admin,
                json={
                    "name": f"bench {level}",
                    "starts_at": starts.isoformat(),
                    "ends_at": (starts + timedelta(hours=6)).isoformat(),
                    "items": [
                        # every attempt runs the whole Lua decision (won, then limit_reached)
                        {"title": "bench: deep stock", "stock": 5_000_000, "per_member_limit": 1},
                        # every attempt wins (up to 1,000 per member): the persistence load
                        {"title": "bench: wins", "stock": 5_000_000, "per_member_limit": 1000},
                        # a few hundred units: sells out at once, then sold_out answers
                        {"title": "bench: 300 units", "stock": 300, "per_member_limit": 1},
                    ],
                },
            )
            r.raise_for_status()
            session = r.json()
            warm = await client.post(
                f"/api/admin/v1/seckill/sessions/{session['id']}/warm", headers=admin
            )
            warm.raise_for_status()
            sessions[level] = session["id"]
            ids = [i["id"] for i in session["items"]]
            items[level] = {"deep": ids[0], "wins": ids[1], "small": ids[2]}
        item = await client.post(
            "/api/admin/v1/points-mall/items",
            headers=admin,
            json={
                "name": "bench voucher",
                "kind": "voucher",
                "points_price": 1,
                "total_stock": 5_000_000,
                "on_shelf": True,
            },
        )
        item.raise_for_status()
        box = await client.post(
            "/api/admin/v1/blind-boxes",
            headers=admin,
            json={
                "name": "bench box",
                "points_cost": 1,
                "prizes": [{"name": "bench prize", "tier": "common", "weight": 1}],
            },
        )
        box.raise_for_status()
        on_sale = await client.patch(
            f"/api/admin/v1/blind-boxes/{box.json()['id']}",
            headers=admin,
            json={"status": "on_sale"},
        )
        on_sale.raise_for_status()
        return Setup(tokens, admin, sessions, items, item.json()["id"], box.json()["id"])


def _stock_left(base: str, admin: dict[str, str], session_id: int, item_id: int) -> int:
    r = httpx.get(f"{base}/api/admin/v1/seckill/sessions/{session_id}", headers=admin, timeout=60)
    r.raise_for_status()
    return int(next(i["stock_left"] for i in r.json()["items"] if i["id"] == item_id))


def _wins_key(item_id: int) -> str:
    # the item's wins stream: the app appends each win, the worker trims it after its
    # commit, so its length is the told-but-not-persisted backlog
    from mall.seckill.service import key

    return key(item_id, "wins")


def _pm_decided(base: str, admin: dict[str, str], item_id: int) -> int:
    """Units of the points-mall item decided in Redis so far (total - Redis stock)."""
    r = httpx.get(f"{base}/api/admin/v1/points-mall/items/{item_id}", headers=admin, timeout=60)
    r.raise_for_status()
    return int(r.json()["total_stock"]) - int(r.json()["redis_stock"] or 0)


def _decided(base: str, admin: dict[str, str], kind: str, session_id: int, item_id: int) -> int:
    """A count that grows by one per unit decided (seckill: minus the stock left)."""
    if kind == "pointsmall":
        return _pm_decided(base, admin, item_id)
    return -_stock_left(base, admin, session_id, item_id)


def _pm_stream_key(item_id: int) -> str:
    # the item's redemption stream: the decision appends, the worker deletes after its
    # commit, so its length is the told-but-not-written backlog
    from mall.pointsmall.stock import item_keys

    return item_keys(item_id).wins


async def _pm_agrees(base: str, admin: dict[str, str], item_id: int, wait: float) -> str:
    """Once the item's backlog is written: Redis and database stock agree?"""
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        deadline = time.monotonic() + wait
        while True:
            r = await client.get(f"/api/admin/v1/points-mall/items/{item_id}", headers=admin)
            item = r.json()
            if item["redis_stock"] == item["stock"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
    ok = item["redis_stock"] == item["stock"]
    return f"redis stock {item['redis_stock']}, database stock {item['stock']}: " + (
        "OK" if ok else "MISMATCH"
    )


def _draws_key(box_id: int) -> str:
    # the blind box's draw stream, trimmed by the worker after each batch's commit
    from mall.blindbox.stock import DRAWS

    return DRAWS.key(box_id)


async def _box_reconcile(base: str, admin: dict[str, str], box_id: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        r = await client.get(f"/api/admin/v1/blind-boxes/{box_id}/reconcile", headers=admin)
        return dict(r.json())


def _redis_client(url: str) -> Any:
    import redis
    from redis.cluster import RedisCluster

    from mall.redis import detect_cluster

    cluster = os.environ.get("MALL_REDIS_CLUSTER", "").lower()
    if cluster in ("1", "true", "yes") or (not cluster and detect_cluster(url)):
        return RedisCluster.from_url(url)
    return redis.Redis.from_url(url)


class BacklogSampler:
    """XLEN of one wins stream every `interval` seconds in a thread, during a burst."""

    def __init__(self, client: Any, stream: str, interval: float = SAMPLE_SECONDS) -> None:
        self.client, self.stream, self.interval = client, stream, interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> int | None:
        try:
            return int(self.client.xlen(self.stream))
        except Exception:  # a failover mid-burst: skip the sample, keep measuring
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            n = self.read()
            if n is not None:
                self.samples.append(n)
            self._stop.wait(self.interval)

    def __enter__(self) -> BacklogSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def drain(self, wait: float) -> float | None:
        """Seconds from now until the stream is empty; None if not within `wait`."""
        started = time.monotonic()
        while True:
            n = self.read()
            if n is not None:
                self.samples.append(n)
                if n == 0:
                    return time.monotonic() - started
            if time.monotonic() - started > wait:
                return None
            time.sleep(self.interval)


async def _reconcile(
    base: str, admin: dict[str, str], session_ids: list[int], wait: float
) -> list[dict[str, object]]:
    checks: list[dict[str, object]] = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        deadline = time.monotonic() + wait
        for session_id in session_ids:
            while time.monotonic() < deadline:
                live = (
                    await client.get(f"/api/admin/v1/seckill/sessions/{session_id}", headers=admin)
                ).json()
                if all(i["backlog"] == 0 for i in live["items"]):
                    break
                await asyncio.sleep(1)
            r = await client.get(
                f"/api/admin/v1/seckill/sessions/{session_id}/reconcile", headers=admin
            )
            checks.extend(r.json())
    return checks


def connection_levels(text: str) -> list[int]:
    """`64,256` -> [64, 256]: each level runs every burst."""
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not levels or any(not 1 <= n <= 10_000 for n in levels):
        raise argparse.ArgumentTypeError("connections are between 1 and 10000")
    return levels


def check_local(url: str) -> None:
    """Refuse a database or Redis that is not on this machine: the bench writes members,
    points and sales into it and drives it at full load (load only goes to 127.0.0.1)."""
    parts = urlsplit(url)
    if parts.scheme in ("unix", "sqlite") or (parts.scheme and not parts.netloc):
        return
    hosts = [h.rsplit("@", 1)[-1].rsplit(":", 1)[0] for h in parts.netloc.split(",")]
    for host in hosts:
        if host.strip("[]") not in LOCAL_HOSTS:
            raise ValueError(f"{redact(url)}: only a local database or Redis (127.0.0.1)")


def redact(url: str) -> str:
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mall bench", description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="length of each burst")
    parser.add_argument(
        "--connections",
        type=connection_levels,
        default=[64, 256],
        help="comma-separated; every burst runs at each (default 64,256)",
    )
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument(
        "--workers", type=int, default=1, help="server workers of mall and of the bare app"
    )
    parser.add_argument(
        "--server",
        choices=["uvicorn", "granian"],
        default="uvicorn",
        help="the ASGI server of mall and of the bare app (granian: the granian extra)",
    )
    parser.add_argument(
        "--database-url",
        help="a local, throwaway database, e.g. postgres://postgres@127.0.0.1:5432/bench "
        "(default: MALL_DATABASE_URL, else SQLite in a fresh folder)",
    )
    parser.add_argument(
        "--redis-url",
        help="a local, empty Redis or Redis Cluster node, e.g. redis://127.0.0.1:6379/0 "
        "(default: MALL_REDIS_URL, else the embedded redis-server)",
    )
    parser.add_argument(
        "--drain-wait",
        type=float,
        default=120.0,
        help="seconds to wait after a seckill or points-mall burst for its backlog to empty",
    )
    return parser


def _wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not shutil.which("wrk"):
        print("mall bench needs wrk (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    database_url = args.database_url or os.environ.get("MALL_DATABASE_URL")
    redis_url = args.redis_url or os.environ.get("MALL_REDIS_URL")
    try:
        for url in (database_url, redis_url):
            if url:
                check_local(url)
    except ValueError as e:
        print(f"mall bench: {e}", file=sys.stderr)
        return 2
    if redis_url:
        keys = int(_redis_client(redis_url).dbsize())
        if keys:
            # a previous run's item keys would meet a fresh database's item ids
            print(
                f"mall bench: Redis at {redact(redis_url)} holds {keys} keys; give it an "
                "empty one (FLUSHALL, if it is a throwaway)",
                file=sys.stderr,
            )
            return 2
    port, bare_port = _free_port(), _free_port()
    base = f"http://{HOST}:{port}"
    data = Path(tempfile.mkdtemp(prefix="mall-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALL_")}
    if "MALL_REDIS_CLUSTER" in os.environ:
        env["MALL_REDIS_CLUSTER"] = os.environ["MALL_REDIS_CLUSTER"]
    if database_url:
        env["MALL_DATABASE_URL"] = database_url
    if redis_url:
        env["MALL_REDIS_URL"] = redis_url
    # the production shape: the app only serves, a `mall worker` beside it persists
    # winners and runs the jobs (it shares the app's embedded Redis)
    env["MALL_RUN_JOBS_IN_PROCESS"] = "false"
    # the members log in from this one address, and their tokens outlive the run
    env["MALL_MEMBER_LOGIN_IP_MAX_ATTEMPTS"] = str(max(args.members * 2, 60))
    env["MALL_ACCESS_TOKEN_TTL_SECONDS"] = str(6 * 3600)
    # each member may tap a sale 5 times a second: at 10,000 attempts/s over 1,000
    # members most answers would be `rate_limited` (cheap, no win), and the winning
    # burst would not measure winning; the limit is still counted in the Lua, never hit
    env["MALL_SECKILL_ATTEMPTS_PER_WINDOW"] = "1000000"
    server = subprocess.Popen(
        [sys.executable, "-m", "mall.cli", "--data-dir", str(data), "serve", "--demo",
         "--port", str(port), "--workers", str(args.workers), "--server", args.server],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    # the reference: a bare FastAPI app, same uvicorn settings and worker count
    bare_app = subprocess.Popen(
        [sys.executable, "-m", "mall.bench_bare", "--port", str(bare_port),
         "--workers", str(args.workers), "--server", args.server],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    worker: subprocess.Popen[bytes] | None = None
    try:
        if not _wait_ready(f"{base}/readyz", server, 120):
            print("the server did not start", file=sys.stderr)
            return 1
        if not _wait_ready(f"http://{HOST}:{bare_port}/", bare_app, 60):
            print("the bare app did not start", file=sys.stderr)
            return 1
        # the worker's log is kept: its warnings are summed up at the end (a batch that
        # failed is retried after the claim idle time, which shows as a slow drain)
        with open(data / "worker.log", "wb") as worker_log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "mall.cli", "--data-dir", str(data), "worker"],
                env=env, stdout=worker_log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        password = (data / "dev-admin-password.txt").read_text().strip()
        print(
            f"setting up {args.members} members, {len(args.connections)} flash sale(s), "
            "a points-mall item and a blind box..."
        )
        setup = asyncio.run(_setup(base, password, args.members, args.connections))
        from mall.redis import EmbeddedRedis

        sampler_client = _redis_client(redis_url or EmbeddedRedis(data).url)
        tables: list[tuple[int, list[tuple[Result, Result]]]] = []
        lags: list[Lag] = []
        for level in args.connections:
            run = Run(connections=level, seconds=args.seconds)
            items = setup.items[level]
            attempt = "/api/v1/seckill/items/{}/attempt".format
            # the last field: whose stream to sample during the burst, or None
            targets: list[tuple[str, str, str, str, bool, tuple[str, int] | None]] = [
                ("seckill attempt, winning item (1,000 per member)", "POST",
                 attempt(items["wins"]), "", True, ("seckill", items["wins"])),
                ("seckill attempt, decided in Lua (won, then limit_reached)", "POST",
                 attempt(items["deep"]), "", True, ("seckill", items["deep"])),
                ("seckill attempt, 300-unit sale", "POST", attempt(items["small"]), "", True,
                 ("seckill", items["small"])),
                ("seckill attempt, sold out", "POST", attempt(items["small"]), "", False, None),
                ("seckill attempt, sold out, with Idempotency-Key", "POST",
                 attempt(items["small"]), "", True, None),
                ("points-mall redeem", "POST",
                 f"/api/v1/points-mall/items/{setup.voucher}/redeem", "{}", True,
                 ("pointsmall", setup.voucher)),
                ("blind-box draw", "POST", f"/api/v1/blind-boxes/{setup.box}/draw", "", True,
                 None),
                ("GET /healthz (extra line)", "GET", "/healthz", "", False, None),
            ]  # fmt: skip
            # each burst is paired with a bare-app burst right before it: the ratio of the
            # pair is what we quote, since the machine's speed drifts between bursts
            pairs: list[tuple[Result, Result]] = []
            for name, method, path, body, keys, stream in targets:
                print(f"{level} connections: {name}...", flush=True)
                bare = wrk("bare FastAPI app", bare_port, "GET", "/", [], keys=False, **run)
                burst_tokens = [] if method == "GET" else setup.tokens
                if path == f"/api/v1/blind-boxes/{setup.box}/draw":
                    # the box's draw stream: its length is the told-but-not-persisted draws
                    sampler = BacklogSampler(sampler_client, _draws_key(setup.box))
                    with sampler:
                        target = wrk(
                            name, port, method, path, burst_tokens, body=body, keys=keys, **run
                        )
                    during = max(sampler.samples, default=0)
                    drain = sampler.drain(args.drain_wait)
                    told = target.statuses.get(200, 0)
                    lags.append(
                        Lag(name, level, args.seconds, told, during, drain, len(sampler.samples))
                    )
                elif stream is None:
                    target = wrk(
                        name, port, method, path, burst_tokens, body=body, keys=keys, **run
                    )
                else:
                    kind, item_id = stream
                    session_id = setup.sessions[level]
                    before = _decided(base, setup.admin, kind, session_id, item_id)
                    key = _pm_stream_key(item_id) if kind == "pointsmall" else _wins_key(item_id)
                    sampler = BacklogSampler(sampler_client, key)
                    with sampler:
                        target = wrk(
                            name, port, method, path, burst_tokens, body=body, keys=keys, **run
                        )
                    during = max(sampler.samples, default=0)
                    drain = sampler.drain(args.drain_wait)
                    wins = _decided(base, setup.admin, kind, session_id, item_id) - before
                    lags.append(
                        Lag(name, level, args.seconds, wins, during, drain, len(sampler.samples))
                    )
                pairs.append((bare, target))
            tables.append((level, pairs))
        checks = asyncio.run(
            _reconcile(base, setup.admin, list(setup.sessions.values()), args.drain_wait)
        )
        pm_check = asyncio.run(_pm_agrees(base, setup.admin, setup.voucher, args.drain_wait))
        _report(args, database_url, redis_url, tables, lags, checks, pm_check)
        box = asyncio.run(_box_reconcile(base, setup.admin, setup.box))
        print("blind-box reconciliation: " + ("OK" if box.get("ok") else f"MISMATCH {box}"))
        ok = (
            bool(checks)
            and all(c.get("ok") for c in checks)
            and pm_check.endswith("OK")
            and bool(box.get("ok"))
        )
        return 0 if ok else 1
    finally:
        _stop(worker)
        _stop(bare_app)
        _stop(server)
        if worker is not None:
            print(worker_warnings(data / "worker.log"))
        shutil.rmtree(data, ignore_errors=True)


def worker_warnings(log_file: Path, shown: int = 10) -> str:
    """The worker log's warnings and errors (a traceback's lines follow its error), as a
    count and the first `shown` of them."""
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return "worker log: not found"
    found = [line for line in lines if re.search(r" (WARNING|ERROR|CRITICAL) ", line)]
    if not found:
        return "worker log: no warnings or errors"
    head = "\n".join(f"  {line[:300]}" for line in found[:shown])
    first = min(shown, len(found))
    return f"worker log: {len(found)} warnings or errors, the first {first}:\n{head}"


def _report(
    args: argparse.Namespace,
    database_url: str | None,
    redis_url: str | None,
    tables: list[tuple[int, list[tuple[Result, Result]]]],
    lags: list[Lag],
    checks: list[dict[str, object]],
    pm_check: str = "",
) -> None:
    from redis.utils import HIREDIS_AVAILABLE

    print()
    print(
        f"{args.seconds} s per burst, {args.workers} {args.server} worker(s), "
        f"database: {redact(database_url) if database_url else 'SQLite (fresh folder)'}, "
        f"Redis: {redact(redis_url) if redis_url else 'embedded'}, "
        f"hiredis: {'yes' if HIREDIS_AVAILABLE else 'no'}"
    )
    for level, pairs in tables:
        print()
        print(f"### {level} connections (ratio: requests/s over the paired bare app burst)")
        print(TABLE_HEAD)
        for bare, target in pairs:
            print(target.row(bare))
    print()
    print(
        f"### Persistence lag (stream length sampled every {SAMPLE_SECONDS} s: seckill wins, "
        "points-mall redemptions; seconds of traffic = backlog / the burst's decisions per "
        "second)"
    )
    print(LAG_HEAD)
    for lag in lags:
        print(lag.row(args.drain_wait))
    print()
    ok = bool(checks) and all(c.get("ok") for c in checks)
    for check in checks:
        print(f"seckill reconcile: {check}")
    print("seckill reconciliation: " + ("OK" if ok else "MISMATCH"))
    if pm_check:
        print("points-mall after the drain: " + pm_check)


if __name__ == "__main__":
    raise SystemExit(main())
