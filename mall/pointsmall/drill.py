"""`mall drill pointsmall`: rehearse a points-mall drop ("50 thermos cups for 100 points
at 20:00") against a running mall on this machine.

Creates members (dev login) with a points grant each and a voucher item through the
HTTP API, fires a burst of redemptions over keep-alive connections (the small asyncio
HTTP/1.1 client of mall.kit.drill: httpx costs too much CPU to load a server on the same
box), waits for
`mall worker` (or the in-process jobs) to write every reservation, and prints redeems/s,
latency p50/p99, and the verdicts (exit 1 if one fails): no unit sold twice, no member
spent more points than granted, every told reservation written or released with a
reason, and the item's Redis and database stock agreeing. It refuses any host but
127.0.0.1/localhost."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from collections import Counter
from typing import Any

import httpx

from mall.kit.drill import (
    Burst,
    OnAnswer,
    Target,
    asyncio_burst,
    run_drill,
)


def _tell(told: list[tuple[int, str]]) -> OnAnswer:
    """Count each answer; keep the (member index, reservation id) of each 202."""

    def on_answer(burst: Burst, owner: int, status: int, body: bytes) -> None:
        answer = json.loads(body) if body else {}
        if status == 202:
            told.append((owner, answer["reservation_id"]))
            burst.results["pending"] += 1
        else:
            burst.results[answer.get("error", {}).get("code", str(status))] += 1

    return on_answer


def _requests(path: str, host: str, tokens: list[str], n: int) -> tuple[list[bytes], list[int]]:
    body = b'{"quantity":1}'
    owners = [i % len(tokens) for i in range(n)]
    requests = [
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {tokens[m]}\r\n"
            f"Idempotency-Key: drill-{i}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for i, m in enumerate(owners)
    ]
    return requests, owners


async def _members(
    client: httpx.AsyncClient, admin: dict[str, str], run: str, n: int, points: int
) -> list[tuple[int, str]]:
    """(member id, token) for n dev logins, each granted `points`."""
    semaphore = asyncio.Semaphore(16)
    out: list[tuple[int, str]] = [(0, "")] * n

    async def one(i: int) -> None:
        async with semaphore:
            r = await client.post("/api/v1/auth/wechat-login", json={"code": f"dev:{run}-{i}"})
            if r.status_code != 200:
                raise SystemExit(
                    f"dev login failed ({r.status_code}): {r.text[:200]}; for many members "
                    "start the service with MALL_MEMBER_LOGIN_IP_MAX_ATTEMPTS raised"
                )
            member_id = int(r.json()["member"]["id"])
            g = await client.post(
                f"/api/admin/v1/members/{member_id}/points",
                headers={**admin, "Idempotency-Key": f"{run}-grant-{i}"},
                json={"points": points, "reason": "points-mall drill"},
            )
            if g.status_code != 201:
                raise SystemExit(f"points grant failed ({g.status_code}): {g.text[:200]}")
            out[i] = (member_id, r.json()["token"])

    await asyncio.gather(*(one(i) for i in range(n)))
    return out


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mall drill pointsmall", description=__doc__)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--stock", type=int, default=50)
    parser.add_argument("--price", type=int, default=100, help="points per unit")
    parser.add_argument("--points", type=int, default=250, help="points granted to each member")
    parser.add_argument("--limit", type=int, default=3, help="per-member limit (0: none)")
    parser.add_argument("--redeems", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--settle-seconds", type=float, default=60.0)
    parser.add_argument("--admin-user")
    parser.add_argument("--admin-password")
    return parser.parse_args(argv)


async def _settle(
    client: httpx.AsyncClient, members: list[tuple[int, str]], told: list[tuple[int, str]],
    within: float,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Poll every told reservation until none is pending (or `within` seconds pass)."""
    states: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + within
    waiting = list(told)
    while waiting and time.monotonic() < deadline:
        still: list[tuple[int, str]] = []
        for owner, rid in waiting:
            headers = {"Authorization": f"Bearer {members[owner][1]}"}
            r = await client.get(f"/api/v1/points-mall/reservations/{rid}", headers=headers)
            state = r.json() if r.status_code == 200 else {"status": f"http {r.status_code}"}
            states[rid] = state
            if state["status"] == "pending":
                still.append((owner, rid))
        waiting = still
        if waiting:
            await asyncio.sleep(0.5)
    return states


async def main(argv: list[str]) -> int:
    args = parse(argv)
    return await run_drill(args, lambda target: _drill(args, target))


async def _drill(args: argparse.Namespace, target: Target) -> int:
    host, port, client, admin = target.host, target.port, target.client, target.admin
    run = f"pmdrill{secrets.token_hex(3)}"
    print(f"[{run}] {args.members} members with {args.points} points each...", flush=True)
    members = await _members(client, admin, run, args.members, args.points)
    r = await client.post(
        "/api/admin/v1/points-mall/items",
        headers=admin,
        json={"name": f"drill {run}", "kind": "voucher", "points_price": args.price,
              "total_stock": args.stock, "limit_per_member": args.limit, "on_shelf": True},
    )  # fmt: skip
    if r.status_code != 201:
        print(f"creating the item failed ({r.status_code}): {r.text[:300]}")
        return 2
    item_id = int(r.json()["id"])
    path = f"/api/v1/points-mall/items/{item_id}/redeem"
    requests, owners = _requests(path, host, [t for _m, t in members], args.redeems)
    print(
        f"[{run}] item {item_id}: stock {args.stock}, {args.price} points, limit "
        f"{args.limit}; {args.redeems} redeems at concurrency {args.concurrency}",
        flush=True,
    )
    told: list[tuple[int, str]] = []
    burst = await asyncio_burst(
        "redeems", host, port, requests, owners, args.concurrency, _tell(told)
    )
    print(burst.line())
    settle_started = time.monotonic()
    states = await _settle(client, members, told, args.settle_seconds)
    print(f"settled in {time.monotonic() - settle_started:.1f}s after the burst")
    item = (await client.get(f"/api/admin/v1/points-mall/items/{item_id}", headers=admin)).json()

    statuses = Counter(s["status"] for s in states.values())
    reasons = Counter(s.get("release_reason") for s in states.values() if s["status"] == "released")
    kept_by: Counter[int] = Counter()
    for owner, rid in told:
        if states.get(rid, {}).get("status") == "issued":
            kept_by[owner] += 1
    kept = sum(kept_by.values())
    problems = []
    if statuses["pending"] or set(statuses) - {"issued", "released"}:
        problems.append(f"not settled: {dict(statuses)}")
    if kept > args.stock:
        problems.append(f"OVERSOLD: {kept} redemptions of stock {args.stock}")
    if kept_by and max(kept_by.values()) * args.price > args.points:
        problems.append("a member spent more points than granted")
    if args.limit and kept_by and max(kept_by.values()) > args.limit:
        problems.append(f"a member redeemed {max(kept_by.values())} > limit {args.limit}")
    if item.get("stock") != args.stock - kept or item.get("redis_stock") != item.get("stock"):
        problems.append(
            f"stock: database {item.get('stock')}, Redis {item.get('redis_stock')}, "
            f"expected {args.stock - kept}"
        )
    print(
        f"told {len(told)} reservations: {statuses['issued']} issued, "
        f"{statuses['released']} released {dict(reasons)}; stock left {item.get('stock')}"
    )
    print("verdict: " + ("OK" if not problems else "FAILED: " + "; ".join(problems)))
    return 0 if not problems else 1
