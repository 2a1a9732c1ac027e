"""`mall drill blindbox`: rehearse a blind-box launch against a running mall on this
machine (with a `mall worker` persisting the draws).

Creates members (dev login, a birthday, points for a few draws; some get too few, so
releases are rehearsed too) and an on-sale series with limited prizes through the HTTP
API, fires a burst of draws over pre-issued tokens, waits for the draw stream's backlog
to empty, and prints draws/s, latency p50/p99, the answers, and the verdicts: every draw
answered is recorded (confirmed or released), no prize overdrawn, reconciliation OK
(exit 1 otherwise). The load comes from the keep-alive asyncio client of
mall.kit.drill. It refuses any host but 127.0.0.1/localhost."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from typing import Any

import httpx

from mall.kit.drill import (
    Target,
    asyncio_burst,
    bearer_requests,
    issue_tokens,
    run_drill,
)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mall drill blindbox", description=__doc__)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--stock", type=int, default=500, help="units of the limited prizes")
    parser.add_argument("--cost", type=int, default=10, help="points per draw")
    parser.add_argument("--draws", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--admin-user")
    parser.add_argument("--admin-password")
    return parser.parse_args(argv)


async def _prepare_members(
    client: httpx.AsyncClient, admin: dict[str, str], tokens: list[str], points: list[int]
) -> None:
    """A birthday (adults) and points for each member; the admin grant is audited."""
    semaphore = asyncio.Semaphore(16)

    async def prepare(token: str, grant: int) -> None:
        async with semaphore:
            headers = {"Authorization": f"Bearer {token}"}
            r = await client.patch("/api/v1/me", json={"birthday": "1990-01-01"}, headers=headers)
            if r.status_code not in (200, 409):  # 409: set before
                raise SystemExit(f"setting a birthday failed ({r.status_code}): {r.text[:200]}")
            member_id = r.json()["id"] if r.status_code == 200 else None
            if member_id is None:
                member_id = (await client.get("/api/v1/me", headers=headers)).json()["id"]
            if grant:
                r = await client.post(
                    f"/api/admin/v1/members/{member_id}/points",
                    json={"points": grant, "reason": "blind-box drill"},
                    headers=admin,
                )
                if r.status_code != 201:
                    raise SystemExit(f"granting points failed ({r.status_code}): {r.text[:200]}")

    await asyncio.gather(*(prepare(t, p) for t, p in zip(tokens, points, strict=True)))


async def main(argv: list[str]) -> int:
    args = parse(argv)
    return await run_drill(args, lambda target: _drill(args, target))


async def _drill(args: argparse.Namespace, target: Target) -> int:
    host, port, client, admin = target.host, target.port, target.client, target.admin
    run = f"bbdrill{secrets.token_hex(3)}"
    print(f"[{run}] preparing {args.members} members (dev login)...", flush=True)
    tokens = await issue_tokens(client, run, args.members)
    # every 10th member can afford one draw only: their later draws are released
    per_member = -(-args.draws // args.members)
    points = [args.cost * (1 if i % 10 == 0 else per_member) for i in range(args.members)]
    await _prepare_members(client, admin, tokens, points)
    half = max(args.stock // 2, 1)
    r = await client.post(
        "/api/admin/v1/blind-boxes",
        headers=admin,
        json={
            "name": f"drill {run}",
            "points_cost": args.cost,
            "status": "on_sale",
            "prizes": [
                {"name": "figure", "tier": "common", "weight": 80, "stock": half},
                {"name": "rare figure", "tier": "rare", "weight": 20,
                 "stock": max(args.stock - half, 1)},
            ],
        },
    )  # fmt: skip
    if r.status_code != 201:
        print(f"creating the series failed ({r.status_code}): {r.text[:300]}")
        return 2
    series_id = r.json()["id"]
    stock = sum(p["stock"] for p in r.json()["prizes"])
    path = f"/api/v1/blind-boxes/{series_id}/draw"
    print(
        f"[{run}] series {series_id}: {stock} units, {args.cost} points a draw; "
        f"{args.draws} draws at concurrency {args.concurrency}",
        flush=True,
    )
    requests = bearer_requests("POST", path, host, tokens, args.draws)
    owners = [i % len(tokens) for i in range(args.draws)]
    burst = await asyncio_burst("draws", host, port, requests, owners, args.concurrency)
    print(burst.line())

    view: dict[str, Any] = {}
    drained_after: float | None = None
    started = time.monotonic()
    while time.monotonic() - started < 60:
        view = (await client.get(f"/api/admin/v1/blind-boxes/{series_id}", headers=admin)).json()
        if view["backlog"] == 0:
            drained_after = time.monotonic() - started
            break
        await asyncio.sleep(0.25)
    check = (
        await client.get(f"/api/admin/v1/blind-boxes/{series_id}/reconcile", headers=admin)
    ).json()

    told = burst.statuses.get(200, 0)
    recorded = view.get("draws", 0) + view.get("released", 0)
    problems = []
    if drained_after is None:
        problems.append(f"backlog {view.get('backlog')} not persisted within 60 s")
    elif told != recorded:
        problems.append(f"{told} draws answered but {recorded} recorded")
    if view.get("draws", 0) > stock:
        problems.append(f"OVERDRAWN: {view['draws']} confirmed draws of {stock} units")
    if any(status >= 500 for status in burst.statuses):
        problems.append(f"5xx answers: {dict(burst.statuses)}")
    print(
        f"answered: {told} draws (others: {dict(burst.statuses)}); confirmed {view.get('draws')}, "
        f"released {view.get('released')}; backlog empty "
        + (f"{drained_after:.1f} s after the burst" if drained_after is not None else "NOT")
    )
    print("draw check: " + ("OK" if not problems else "FAILED: " + "; ".join(problems)))
    for line in check.get("lines", []):
        print("reconcile: " + line)
    print("reconciliation: " + ("OK" if check.get("ok") else "MISMATCH"))
    return 0 if not problems and check.get("ok") else 1
