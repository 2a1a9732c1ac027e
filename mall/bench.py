"""`mall bench`: measure the hot paths against a trivial endpoint in the same run.

Starts `mall serve` (one worker, a fresh data folder, SQLite and the embedded Redis
unless MALL_DATABASE_URL / MALL_REDIS_URL say otherwise) on 127.0.0.1, sets up members,
a flash sale and a points-mall item through the HTTP API, then fires each burst with
`wrk` (same connections, same length) and prints requests/s, p50/p99 and the ratio to
`GET /healthz`. Machines here are noisy, so only ratios from one run are quoted in
docs/BENCHMARKS.md. Load only ever goes to 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

HOST = "127.0.0.1"

# One request per call: a rotating member token, a unique Idempotency-Key, and status
# counts reported by every thread at the end.
_WRK_LUA = r"""
local tokens = {}
for line in io.lines(os.getenv("BENCH_TOKENS")) do tokens[#tokens + 1] = line end
local method, path = os.getenv("BENCH_METHOD"), os.getenv("BENCH_PATH")
local body = os.getenv("BENCH_BODY")
local threads = {}
local n = 0
function setup(thread)
  n = n + 1
  thread:set("tid", n)
  table.insert(threads, thread)
end
function init(args)
  i = 0
  codes = {}
end
function request()
  i = i + 1
  local headers = {["Content-Type"] = "application/json"}
  if #tokens > 0 then
    headers["Authorization"] = "Bearer " .. tokens[((i * 7 + tid) % #tokens) + 1]
  end
  if os.getenv("BENCH_KEYS") == "1" then headers["Idempotency-Key"] = "b" .. tid .. "-" .. i end
  return wrk.format(method, path, headers, body ~= "" and body or nil)
end
function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end
function done(summary, latency, requests)
  local merged = {}
  for _, t in ipairs(threads) do
    local c = t:get("codes")
    for k, v in pairs(c) do merged[k] = (merged[k] or 0) + v end
  end
  for k, v in pairs(merged) do io.write(string.format("status %d %d\n", k, v)) end
end
"""


@dataclass
class Result:
    name: str
    rate: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]

    def row(self, trivial: Result) -> str:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        ratio = self.rate / (trivial.rate or 1.0)
        return (
            f"| {self.name} | {self.rate:,.0f} | {trivial.rate:,.0f} | {ratio:.2f} | "
            f"{self.p50_ms:.1f} | {self.p99_ms:.1f} | {codes} |"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _ms(text: str, label: str) -> float:
    found = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)\b", text)
    if not found:
        return float("nan")
    return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]


def wrk(
    name: str,
    port: int,
    method: str,
    path: str,
    tokens: list[str],
    *,
    body: str = "",
    keys: bool = True,
    connections: int,
    seconds: int,
) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bench.lua"
        script.write_text(_WRK_LUA)
        token_file = Path(tmp) / "tokens.txt"
        token_file.write_text("".join(t + "\n" for t in tokens))
        env = {
            **os.environ,
            "BENCH_TOKENS": str(token_file),
            "BENCH_METHOD": method,
            "BENCH_PATH": path,
            "BENCH_BODY": body,
            "BENCH_KEYS": "1" if keys else "0",
        }
        args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script)]
        out = subprocess.run(
            [*args, f"http://{HOST}:{port}{path}"], capture_output=True, text=True, env=env
        ).stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(s|m)", out)
    requests = int(total.group(1)) if total else 0
    duration = (
        float(total.group(2)) * (60 if total and total.group(3) == "m" else 1) if total else 1
    )
    statuses = {int(k): int(v) for k, v in re.findall(r"^status (\d+) (\d+)$", out, re.M)}
    return Result(name, requests / duration, _ms(out, "50%"), _ms(out, "99%"), statuses)


async def _setup(base: str, admin_password: str, members: int) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        r = await client.post(
            "/api/admin/v1/login", json={"username": "admin", "password": admin_password}
        )
        r.raise_for_status()
        admin = {"Authorization": f"Bearer {r.json()['token']}"}
        tokens: list[str] = [""] * members
        ids: list[int] = [0] * members
        gate = asyncio.Semaphore(16)

        async def member(i: int) -> None:
            async with gate:
                r = await client.post("/api/v1/auth/wechat-login", json={"code": f"dev:bench{i}"})
                r.raise_for_status()
                tokens[i], ids[i] = r.json()["token"], r.json()["member"]["id"]
                grant = await client.post(
                    f"/api/admin/v1/members/{ids[i]}/points",
                    headers={**admin, "Idempotency-Key": f"bench-grant-{i}"},
                    json={"points": 1_000_000, "reason": "benchmark"},
                )
                grant.raise_for_status()

        await asyncio.gather(*(member(i) for i in range(members)))
        starts = datetime.now(UTC) - timedelta(seconds=5)
        r = await client.post(
            "/api/admin/v1/seckill/sessions",
            headers=admin,
            json={
                "name": "bench",
                "starts_at": starts.isoformat(),
                "ends_at": (starts + timedelta(hours=2)).isoformat(),
                "items": [
                    # every attempt runs the whole Lua decision (won, then limit_reached)
                    {"title": "bench: deep stock", "stock": 5_000_000, "per_member_limit": 1},
                    # a few hundred units: sells out at once, then sold_out answers
                    {"title": "bench: 300 units", "stock": 300, "per_member_limit": 1},
                ],
            },
        )
        r.raise_for_status()
        session = r.json()
        (
            await client.post(f"/api/admin/v1/seckill/sessions/{session['id']}/warm", headers=admin)
        ).raise_for_status()
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
        return {
            "tokens": tokens,
            "admin": admin,
            "session": session["id"],
            "deep": session["items"][0]["id"],
            "small": session["items"][1]["id"],
            "voucher": item.json()["id"],
        }


async def _reconcile(base: str, admin: dict[str, str], session_id: int) -> list[dict[str, object]]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        deadline = time.monotonic() + 120
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
        checks: list[dict[str, object]] = r.json()
        return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mall bench", description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="length of each burst")
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not shutil.which("wrk"):
        print("mall bench needs wrk (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    port = _free_port()
    base = f"http://{HOST}:{port}"
    data = Path(tempfile.mkdtemp(prefix="mall-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALL_")}
    for keep in ("MALL_DATABASE_URL", "MALL_REDIS_URL"):
        if keep in os.environ:
            env[keep] = os.environ[keep]
    # the production shape: the app only serves, a `mall worker` beside it persists
    # winners and runs the jobs (it shares the app's embedded Redis)
    env["MALL_RUN_JOBS_IN_PROCESS"] = "false"
    # the members log in from this one address, and their tokens outlive the run
    env["MALL_MEMBER_LOGIN_IP_MAX_ATTEMPTS"] = str(max(args.members * 2, 60))
    env["MALL_ACCESS_TOKEN_TTL_SECONDS"] = str(6 * 3600)
    server = subprocess.Popen(
        [sys.executable, "-m", "mall.cli", "--data-dir", str(data), "serve", "--demo",
         "--port", str(port), "--workers", str(args.workers)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    worker: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print("the server did not start", file=sys.stderr)
                return 1
            time.sleep(0.5)
        worker = subprocess.Popen(
            [sys.executable, "-m", "mall.cli", "--data-dir", str(data), "worker"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        password = (data / "dev-admin-password.txt").read_text().strip()
        print(f"setting up {args.members} members, a flash sale and a points-mall item...")
        ids = asyncio.run(_setup(base, password, args.members))
        tokens = ids["tokens"]
        assert isinstance(tokens, list)
        run = {"connections": args.connections, "seconds": args.seconds}
        deep = f"/api/v1/seckill/items/{ids['deep']}/attempt"
        small = f"/api/v1/seckill/items/{ids['small']}/attempt"
        redeem = f"/api/v1/points-mall/items/{ids['voucher']}/redeem"
        targets = [
            ("seckill attempt, decided in Lua", "POST", deep, "", True),
            ("seckill attempt, 300-unit sale", "POST", small, "", True),
            ("seckill attempt, sold out", "POST", small, "", False),
            ("seckill attempt, sold out, with Idempotency-Key", "POST", small, "", True),
            ("points-mall redeem", "POST", redeem, "{}", True),
        ]
        # each target is paired with a /healthz burst right before it: the ratio of the
        # pair is what we quote, since the machine's speed drifts between bursts
        pairs: list[tuple[Result, Result]] = []
        for name, method, path, body, keys in targets:
            trivial = wrk("GET /healthz (trivial)", port, "GET", "/healthz", [], **run)  # type: ignore[arg-type]
            target = wrk(name, port, method, path, tokens, body=body, keys=keys, **run)  # type: ignore[arg-type]
            pairs.append((trivial, target))
        admin = ids["admin"]
        session = ids["session"]
        assert isinstance(admin, dict) and isinstance(session, int)
        checks = asyncio.run(_reconcile(base, admin, session))
        print()
        print(
            f"{args.connections} connections, {args.seconds} s per burst, {args.workers} worker(s)"
        )
        print("| burst | requests/s | paired /healthz req/s | ratio | p50 ms | p99 ms | statuses |")
        print("|---|---|---|---|---|---|---|")
        for trivial, target in pairs:
            print(target.row(trivial))
        ok = bool(checks) and all(c.get("ok") for c in checks)
        for check in checks:
            print(f"seckill reconcile: {check}")
        print("seckill reconciliation: " + ("OK" if ok else "MISMATCH"))
        return 0 if ok else 1
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
