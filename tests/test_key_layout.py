"""The versioned Redis key layout: a node decides on hot keys only while Redis holds the
layout its code knows, so old and new nodes sharing Redis in a rolling deploy never
decide on keys they read differently; `mall layout migrate` fences, moves, and bumps."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from mall import redis as mall_redis
from mall.kit import clock
from mall.kit.security import issue_token
from mall.ops import layout
from mall.redis import LAYOUT_KEY, RedisClient, get_redis
from mall.seckill import service as sk_service
from mall.seckill import stock as sk_stock
from mall.seckill.models import SeckillItem
from mall.seckill.schemas import ItemIn, SessionIn
from tests.factories import make_member_ids


@pytest.fixture(autouse=True)
def fresh_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    mall_redis.layout_guard.forget()
    sk_service.forget_local_state()
    monkeypatch.setattr(layout, "MIGRATIONS", {})
    yield
    mall_redis.layout_guard.forget()


async def _item(stock: int = 5) -> SeckillItem:
    start = clock.now() - timedelta(seconds=60)
    session = await sk_service.create_session(
        SessionIn(
            name="rolling",
            starts_at=start,
            ends_at=start + timedelta(hours=1),
            items=[ItemIn(title="gift", stock=stock, per_member_limit=1)],
        ),
        None,
    )
    await sk_service.warm_session(session.id)
    return await SeckillItem.get(session_id=session.id)


async def _attempt(client: httpx.AsyncClient, item_id: int, member_id: int) -> httpx.Response:
    token = issue_token(member_id, "member", 600)
    return await client.post(
        f"/api/v1/seckill/items/{item_id}/attempt",
        headers={"Authorization": f"Bearer {token}", "Accept-Language": "en"},
    )


async def test_the_first_decision_claims_a_fresh_redis_for_this_layout(
    client: httpx.AsyncClient,
) -> None:
    assert await get_redis().get(LAYOUT_KEY) is None  # every test starts on an empty Redis
    item = await _item()
    [member] = await make_member_ids(1, prefix="lay")
    r = await _attempt(client, item.id, member)
    assert r.json()["result"] == "won"
    assert await get_redis().get(LAYOUT_KEY) == str(mall_redis.KEY_LAYOUT_VERSION)
    assert (await client.get("/readyz")).status_code == 200
    assert (await layout.status()).ok


async def test_a_node_refuses_decisions_on_a_layout_it_does_not_know(
    client: httpx.AsyncClient,
) -> None:
    """Redis migrated by a newer release: this (old) node answers 503 on the hot path,
    fails readiness (the load balancer drains it), and moves no stock."""
    item = await _item(stock=5)
    members = await make_member_ids(3, prefix="old")
    assert (await _attempt(client, item.id, members[0])).json()["result"] == "won"
    await get_redis().set(LAYOUT_KEY, str(mall_redis.KEY_LAYOUT_VERSION + 1))
    mall_redis.layout_guard.forget()  # instead of waiting out the 1 s recheck

    r = await _attempt(client, item.id, members[1])
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["error"]["details"]["redis"] == "KeyLayoutUnknown"
    assert await get_redis().get(sk_service.key(item.id, "stock")) == "4"  # untouched
    # every Lua call is refused, not only the attempt: a give-back, a warm-up
    with pytest.raises(mall_redis.KeyLayoutUnknown):
        await sk_stock.give_back_unit(item.id, "x-1", members[0])
    with pytest.raises(mall_redis.KeyLayoutUnknown):
        await sk_service.warm_session(item.session_id)  # type: ignore[attr-defined]
    status = await layout.status()
    assert not status.ok and "no hot-path decisions" in status.line()

    # Redis back on this node's layout (a rollback): it decides again
    await get_redis().set(LAYOUT_KEY, str(mall_redis.KEY_LAYOUT_VERSION))
    mall_redis.layout_guard.forget()
    assert (await _attempt(client, item.id, members[2])).json()["result"] == "won"
    assert (await client.get("/readyz")).status_code == 200


async def test_the_guard_rereads_the_layout_within_a_second(client: httpx.AsyncClient) -> None:
    item = await _item()
    members = await make_member_ids(2, prefix="tick")
    assert (await _attempt(client, item.id, members[0])).status_code == 200
    await get_redis().set(LAYOUT_KEY, "99")
    await asyncio.sleep(mall_redis.LAYOUT_RECHECK_SECONDS + 0.1)
    assert (await _attempt(client, item.id, members[1])).status_code == 503


async def test_migrate_fences_every_node_then_moves_the_keys(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release with layout 2 (here: stock renamed) rolls out while Redis is at 1, then
    `mall layout migrate` moves the warm keys. No decision is made during the fence,
    none on layout 1 after it, and the stock carries over exactly."""
    item = await _item(stock=5)
    members = await make_member_ids(4, prefix="mig")
    assert (await _attempt(client, item.id, members[0])).json()["result"] == "won"
    old = mall_redis.KEY_LAYOUT_VERSION
    moved: list[int] = []

    async def one_to_two(redis: RedisClient) -> None:
        # the step a real release would ship: e.g. copy each warm item's stock aside
        for raw in await redis.smembers(sk_service.ACTIVE_ITEMS):
            stock = await redis.get(sk_service.key(int(raw), "stock"))
            await redis.set(sk_service.key(int(raw), "stock-v2"), stock or 0)
            moved.append(int(raw))

    # the new release's code: it knows layout 2 and how to get there from 1
    monkeypatch.setattr(mall_redis, "KEY_LAYOUT_VERSION", old + 1)
    monkeypatch.setitem(layout.MIGRATIONS, old, one_to_two)
    mall_redis.layout_guard.forget()
    r = await _attempt(client, item.id, members[1])
    assert r.status_code == 503, "a new node must not decide before the migration"

    said: list[str] = []
    task = asyncio.create_task(layout.migrate(fence_seconds=0.5, say=said.append))
    await asyncio.sleep(0.2)
    assert str(await get_redis().get(LAYOUT_KEY)).startswith("migrating:")
    mall_redis.layout_guard.forget()
    assert (await _attempt(client, item.id, members[1])).status_code == 503  # fenced
    found = await task
    assert found.ok and found.stored == str(old + 1)
    assert moved == [item.id]
    assert await get_redis().get(sk_service.key(item.id, "stock-v2")) == "4"
    assert any("fenced" in line for line in said)

    mall_redis.layout_guard.forget()
    assert (await _attempt(client, item.id, members[2])).json()["result"] == "won"
    # a node of the old release left behind: refused
    monkeypatch.setattr(mall_redis, "KEY_LAYOUT_VERSION", old)
    mall_redis.layout_guard.forget()
    assert (await _attempt(client, item.id, members[3])).status_code == 503
    assert (await client.get("/readyz")).status_code == 503


async def test_migrate_refuses_a_newer_or_unknown_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    await get_redis().set(LAYOUT_KEY, str(mall_redis.KEY_LAYOUT_VERSION + 1))
    with pytest.raises(layout.LayoutError, match="newer than this release"):
        await layout.migrate(fence_seconds=0, say=lambda _line: None)
    await get_redis().set(LAYOUT_KEY, "garbage")
    with pytest.raises(layout.LayoutError, match="unknown key layout"):
        await layout.migrate(fence_seconds=0, say=lambda _line: None)
    monkeypatch.setattr(mall_redis, "KEY_LAYOUT_VERSION", mall_redis.KEY_LAYOUT_VERSION + 2)
    await get_redis().set(LAYOUT_KEY, str(mall_redis.KEY_LAYOUT_VERSION - 2))
    with pytest.raises(layout.LayoutError, match="no migration"):
        await layout.migrate(fence_seconds=0, say=lambda _line: None)
    # nothing was fenced by a refused migration
    assert await get_redis().get(LAYOUT_KEY) == str(mall_redis.KEY_LAYOUT_VERSION - 2)


async def test_migrate_resumes_after_dying_half_way(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[int] = []

    async def step(redis: RedisClient) -> None:
        ran.append(1)

    monkeypatch.setattr(mall_redis, "KEY_LAYOUT_VERSION", 2)
    monkeypatch.setitem(layout.MIGRATIONS, 1, step)
    await get_redis().set(LAYOUT_KEY, "migrating:1->2")  # a migrate killed in its steps
    found = await layout.migrate(fence_seconds=0, say=lambda _line: None)
    assert found.stored == "2" and ran == [1]
    again = await layout.migrate(fence_seconds=0, say=lambda _line: None)
    assert again.stored == "2" and ran == [1]
