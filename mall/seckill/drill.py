"""`mall drill seckill`: rehearse a flash sale against a running mall on this machine.

Creates members (dev login) and a live session through the HTTP API, warms it, fires a
burst of attempts over pre-issued tokens, and prints attempts/s, latency p50/p99, wins,
and the oversell and reconciliation verdicts (exit 1 if either fails). The load comes
from `wrk` with a Lua script when it is on PATH, else from the small keep-alive asyncio
HTTP/1.1 client of mall.kit.drill (httpx costs too much CPU to load a server on the same
box). It refuses any host but 127.0.0.1/localhost."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from mall.kit.drill import (
    Burst,
    Target,
    asyncio_burst,
    bearer_requests,
    issue_tokens,
    run_drill,
    wrk_burst,
)


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
    return await run_drill(args, lambda target: _drill(args, target))


async def _drill(args: argparse.Namespace, target: Target) -> int:
    host, port, client, admin = target.host, target.port, target.client, target.admin
    use_wrk = bool(shutil.which("wrk")) and not args.no_wrk
    run = f"drill{secrets.token_hex(3)}"
    print(f"[{run}] issuing {args.members} member tokens (dev login)...", flush=True)
    tokens = await issue_tokens(client, run, args.members)
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
                wrk_burst, name, args.base_url, method, path, tokens, args.concurrency,
                args.wrk_seconds,
            )  # fmt: skip
        requests = bearer_requests(method, path, host, tokens, args.attempts)
        return await asyncio_burst(name, host, port, requests, owners, args.concurrency)

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
        await client.get(f"/api/admin/v1/seckill/sessions/{session_id}/reconcile", headers=admin)
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
