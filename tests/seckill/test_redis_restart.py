from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from mall import redis as mall_redis
from mall.kit.security import issue_token
from mall.redis import EmbeddedRedis, get_redis
from mall.seckill import service
from mall.seckill.models import SeckillOrder
from mall.seckill.service import key
from tests.factories import make_member_ids
from tests.seckill.conftest import MakeItem


@pytest.fixture
async def own_redis() -> AsyncIterator[EmbeddedRedis]:
    """A dedicated redis-server (AOF on) the test may stop and start; the shared one is
    put back afterwards."""
    shared = get_redis()
    folder = Path(tempfile.mkdtemp(prefix="sk-aof-"))
    server = EmbeddedRedis(folder)
    mall_redis.connect(server.start())
    try:
        yield server
    finally:
        await mall_redis.close()
        server.stop()
        mall_redis.set_client(shared)
        shutil.rmtree(folder, ignore_errors=True)


async def test_redis_restart_mid_session_does_not_oversell(
    own_redis: EmbeddedRedis, make_item: MakeItem, client: httpx.AsyncClient
) -> None:
    item = await make_item(stock=50, points_price=0)
    members = await make_member_ids(120)
    first = [await service.attempt(item.id, m) for m in members[:30]]
    assert all(r.result == "won" for r in first)
    await service.drain()  # some wins persisted before the restart...
    more = [await service.attempt(item.id, m) for m in members[30:40]]
    assert all(r.result == "won" for r in more)  # ...and some still only in the stream

    own_redis.stop()
    # Redis unreachable: a clear 503, and nothing changed anywhere
    token = issue_token(members[40], "member", 3600)
    r = await client.post(
        f"/api/v1/seckill/items/{item.id}/attempt", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 503 and r.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    with pytest.raises(RedisConnectionError):
        await service.attempt(item.id, members[41])

    own_redis.start()  # same folder: the AOF is replayed
    assert int(await get_redis().get(key(item.id, "stock"))) == 10
    late = [await service.attempt(item.id, m) for m in members[40:]]
    assert sum(1 for r in late if r.result == "won") == 10
    assert {r.result for r in late} == {"won", "sold_out"}
    await service.drain()
    assert await SeckillOrder.filter(item_id=item.id).count() == 50
    assert len(set(await SeckillOrder.all().values_list("member_id", flat=True))) == 50
    checks = await service.reconcile([item.id])
    assert checks[0].ok, checks[0].line()
