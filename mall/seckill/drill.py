"""`mall drill seckill`: rehearse a flash sale against a running mall on this machine.

Creates members (dev login) and a live session through the HTTP API, warms it, fires a
burst of attempts over pre-issued tokens, and prints attempts/s, latency p50/p99, wins,
and the oversell and reconciliation verdicts (exit 1 if either fails). The load comes
from `wrk` with a Lua script when it is on PATH, else from a small keep-alive asyncio
HTTP/1.1 client built in here (httpx costs too much CPU to load a server on the same
box). It refuses any host but 127.0.0.1/localhost."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Burst:
    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)
    wins_by_member: Counter[int] = field(default_factory=Counter)
    p50_ms: float | None = None
    p99_ms: float | None = None
    rate: float = 0.0

    def finish(self) -> None:
        total = sum(self.statuses.values())
        self.rate = total / self.seconds if self.seconds else 0.0
        if self.latencies:
            ordered = sorted(self.latencies)
            self.p50_ms = statistics.median(ordered) * 1000
            self.p99_ms = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000

    def line(self) -> str:
        p50 = f"{self.p50_ms:.1f}" if self.p50_ms is not None else "?"
        p99 = f"{self.p99_ms:.1f}" if self.p99_ms is not None else "?"
        return (
            f"{self.name}: {sum(self.statuses.values())} requests in {self.seconds:.2f}s = "
            f"{self.rate:.0f}/s, p50 {p50} ms, p99 {p99} ms, "
            f"status {dict(self.statuses)}, results {dict(self.results)}"
        )


_RESULT = re.compile(rb'"result":"([a-z_]+)"')


async def _connection(
    host: str, port: int, requests: list[bytes], owners: list[int], cursor: list[int], burst: Burst
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            index = cursor[0]
            if index >= len(requests):
                return
            cursor[0] = index + 1
            started = time.perf_counter()
            writer.write(requests[index])
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _sep, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            burst.latencies.append(time.perf_counter() - started)
            burst.statuses[status] += 1
            found = _RESULT.search(body)
            if found:
                result = found.group(1).decode()
                burst.results[result] += 1
                if result == "won":
                    burst.wins_by_member[owners[index]] += 1
    finally:
        writer.close()


async def _asyncio_burst(
    name: str, host: str, port: int, requests: list[bytes], owners: list[int], concurrency: int
) -> Burst:
    burst = Burst(name)
    cursor = [0]
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _connection(host, port, requests, owners, cursor, burst)
            for _ in range(min(concurrency, len(requests)))
        )
    )
    burst.seconds = time.perf_counter() - started
    burst.finish()
    return burst


_WRK_LUA = """
local tokens = {}
for line in io.lines(os.getenv("DRILL_TOKENS")) do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i + 1
  local t = tokens[(i % #tokens) + 1]
  return wrk.format(os.getenv("DRILL_METHOD"), os.getenv("DRILL_PATH"),
    {["Authorization"] = "Bearer " .. t, ["Content-Length"] = "0"})
end
"""


def _wrk_burst(
    name: str, base_url: str, method: str, path: str, tokens: list[str], concurrency: int,
    seconds: int,
) -> Burst:  # fmt: skip
    """wrk is duration based; wins are counted on the server side afterwards."""
    burst = Burst(name)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "drill.lua"
        script.write_text(_WRK_LUA)
        token_file = Path(tmp) / "tokens.txt"
        token_file.write_text("\n".join(tokens) + "\n")
        env = {**os.environ, "DRILL_TOKENS": str(token_file), "DRILL_METHOD": method}
        env["DRILL_PATH"] = path
        out = subprocess.run(
            ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", str(script),
             base_url + path],
            capture_output=True, text=True, env=env, check=True,
        ).stdout  # fmt: skip
    burst.seconds = float(seconds)
    total = re.search(r"(\d+) requests in", out)
    burst.statuses[200] = int(total.group(1)) if total else 0
    burst.finish()
    for label, attr in (("50%", "p50_ms"), ("99%", "p99_ms")):
        found = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)", out)
        if found:
            value = float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]
            setattr(burst, attr, value)
    return burst


def _admin_login(args: argparse.Namespace) -> tuple[str, str]:
    user = args.admin_user or os.environ.get("MALL_DRILL_ADMIN_USER") or "admin"
    password = args.admin_password or os.environ.get("MALL_DRILL_ADMIN_PASSWORD")
    if not password:
        data_dir = Path(os.environ.get("MALL_DATA_DIR", ".mall-data"))
        pw_file = data_dir / "dev-admin-password.txt"
        if pw_file.exists():
            password = pw_file.read_text().strip()
    if not password:
        raise SystemExit(
            "no admin password: pass --admin-password, set MALL_DRILL_ADMIN_PASSWORD, "
            "or run `mall serve --demo` (it writes .mall-data/dev-admin-password.txt)"
        )
    return user, password


async def _issue_tokens(client: httpx.AsyncClient, run: str, members: int) -> list[str]:
    tokens: list[str] = [""] * members
    semaphore = asyncio.Semaphore(32)

    async def login(i: int) -> None:
        async with semaphore:
            r = await client.post("/api/v1/auth/wechat-login", json={"code": f"dev:{run}-{i}"})
            if r.status_code == 429:
                raise SystemExit(
                    "dev login was rate-limited: the service allows "
                    "MALL_MEMBER_LOGIN_IP_MAX_ATTEMPTS logins per address a minute (60); "
                    f"start it with MALL_MEMBER_LOGIN_IP_MAX_ATTEMPTS={members} for a drill, "
                    "or pass fewer --members"
                )
            if r.status_code != 200:
                raise SystemExit(f"dev login failed ({r.status_code}): {r.text[:200]}")
            tokens[i] = r.json()["token"]

    await asyncio.gather(*(login(i) for i in range(members)))
    return tokens


def _requests(method: str, path: str, host: str, tokens: list[str], n: int) -> list[bytes]:
    return [
        (
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {tokens[i % len(tokens)]}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        for i in range(n)
    ]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mall drill seckill", description=__doc__)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--stock", type=int, default=100)
    parser.add_argument("--limit", type=int, default=1, help="per-member limit")
    parser.add_argument("--attempts", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--admin-user")
    parser.add_argument("--admin-password")
    parser.add_argument(
        "--compare-healthz",
        action="store_true",
        help="also measure GET /healthz and a sold-out burst the same way; print the ratios",
    )
    parser.add_argument("--wrk-seconds", type=int, default=10, help="burst length with wrk")
    parser.add_argument("--no-wrk", action="store_true", help="use the built-in client")
    return parser.parse_args(argv)


async def main(argv: list[str]) -> int:
    args = parse(argv)
    url = urlsplit(args.base_url)
    host = url.hostname or ""
    if url.scheme != "http" or host not in LOCAL_HOSTS:
        print(f"refusing to drill {args.base_url!r}: only http://127.0.0.1 or localhost")
        return 2
    port = url.port or 80
    use_wrk = bool(shutil.which("wrk")) and not args.no_wrk
    run = f"drill{secrets.token_hex(3)}"
    user, password = _admin_login(args)

    async with httpx.AsyncClient(base_url=args.base_url, timeout=30) as client:
        r = await client.post("/api/admin/v1/login", json={"username": user, "password": password})
        if r.status_code != 200:
            print(f"admin login failed ({r.status_code}): {r.text[:200]}")
            return 2
        admin = {"Authorization": f"Bearer {r.json()['token']}"}
        print(f"[{run}] issuing {args.members} member tokens (dev login)...", flush=True)
        tokens = await _issue_tokens(client, run, args.members)
        starts = datetime.now(UTC) - timedelta(seconds=5)
        r = await client.post(
            "/api/admin/v1/seckill/sessions",
            headers=admin,
            json={
                "name": f"drill {run}",
                "starts_at": starts.isoformat(),
                "ends_at": (starts + timedelta(hours=1)).isoformat(),
                "items": [
                    {"title": f"drill gift {run}", "stock": args.stock,
                     "per_member_limit": args.limit},
                ],
            },
        )  # fmt: skip
        if r.status_code != 201:
            print(f"creating the session failed ({r.status_code}): {r.text[:300]}")
            return 2
        session_id = r.json()["id"]
        item_id = r.json()["items"][0]["id"]
        await client.post(f"/api/admin/v1/seckill/sessions/{session_id}/warm", headers=admin)
        attempt_path = f"/api/v1/seckill/items/{item_id}/attempt"
        owners = [i % len(tokens) for i in range(args.attempts)]
        print(
            f"[{run}] session {session_id} item {item_id}: stock {args.stock}, limit "
            f"{args.limit}; {args.attempts} attempts at concurrency {args.concurrency} "
            f"({'wrk' if use_wrk else 'built-in asyncio client'})",
            flush=True,
        )

        async def burst(name: str, method: str, path: str) -> Burst:
            if use_wrk:
                return await asyncio.to_thread(
                    _wrk_burst, name, args.base_url, method, path, tokens, args.concurrency,
                    args.wrk_seconds,
                )  # fmt: skip
            requests = _requests(method, path, host, tokens, args.attempts)
            return await _asyncio_burst(name, host, port, requests, owners, args.concurrency)

        bursts = []
        if args.compare_healthz:
            bursts.append(await burst("healthz", "GET", "/healthz"))
        bursts.append(await burst("attempts", "POST", attempt_path))
        if args.compare_healthz:
            bursts.append(await burst("sold-out attempts", "POST", attempt_path))
        for b in bursts:
            print(b.line())
        if args.compare_healthz:
            base = bursts[0].rate or 1.0
            print(f"ratio attempts/healthz: {bursts[1].rate / base:.2f}")
            print(f"ratio sold-out attempts/healthz: {bursts[2].rate / base:.2f}")

        # wait for the consumer to persist every win, then check
        live: dict[str, Any] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            live = (
                await client.get(f"/api/admin/v1/seckill/sessions/{session_id}", headers=admin)
            ).json()["items"][0]
            if live["backlog"] == 0:
                break
            await asyncio.sleep(0.5)
        checks = (
            await client.get(
                f"/api/admin/v1/seckill/sessions/{session_id}/reconcile", headers=admin
            )
        ).json()

    attempt_bursts = [b for b in bursts if b.name != "healthz"]
    wins = sum(b.results["won"] for b in attempt_bursts)
    by_member: Counter[int] = Counter()
    for b in attempt_bursts:
        by_member.update(b.wins_by_member)
    problems = []
    if not use_wrk and wins != live.get("held"):
        problems.append(f"{wins} wins answered but {live.get('held')} orders hold units")
    if live.get("held", 0) > args.stock:
        problems.append(f"OVERSOLD: {live['held']} units held of {args.stock}")
    if by_member and max(by_member.values()) > args.limit:
        problems.append(f"a member won {max(by_member.values())} > limit {args.limit}")
    print(
        f"wins: {wins if not use_wrk else live.get('held')} of stock {args.stock}; "
        f"orders holding units: {live.get('held')}; backlog: {live.get('backlog')}"
    )
    print("oversell check: " + ("OK" if not problems else "FAILED: " + "; ".join(problems)))
    for check in checks:
        print("reconcile: " + json.dumps(check, ensure_ascii=False))
    reconciled = bool(checks) and all(c["ok"] for c in checks)
    print("reconciliation: " + ("OK" if reconciled else "MISMATCH"))
    return 0 if not problems and reconciled else 1
