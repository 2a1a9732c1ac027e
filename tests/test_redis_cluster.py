"""mall on a real Redis 7 Cluster (three masters): run with MALL_TEST_REDIS_CLUSTER=1.

What broke before the cluster client: `mall serve --demo` (MovedError while seeding), job
leases, the points-mall list, and flash sales whose hash tag landed on another node.
Here every hot object is spread over all three masters on purpose."""

from __future__ import annotations

import asyncio
import random
import re
import secrets
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import MaxConnectionsError

from mall import domains
from mall import redis as mall_redis
from mall.app import create_app
from mall.config import Settings
from mall.domains import domain_modules
from mall.kit import clock
from mall.kit.jobs import run_job_once
from mall.kit.security import issue_token
from mall.members import service as members_service
from mall.members.models import Staff
from mall.points import service as points_service
from mall.pointsmall import persist
from mall.pointsmall import service as pm_service
from mall.pointsmall import tasks as pm_tasks
from mall.pointsmall.models import PointsMallRedemption
from mall.redis import get_redis
from mall.seckill import service as sk_service
from mall.seckill.models import SeckillItem, SeckillOrder
from mall.seckill.schemas import ItemIn, SessionIn
from tests.conftest import CLUSTER
from tests.factories import make_member_ids
from tests.process import Service
from tests.redis_cluster import RedisClusterHarness

pytestmark = pytest.mark.skipif(
    not CLUSTER, reason="needs MALL_TEST_REDIS_CLUSTER=1 (a real Redis 7 cluster)"
)


def _cluster() -> RedisCluster:
    redis = get_redis()
    assert isinstance(redis, RedisCluster)
    return redis


def _master_of(key: str) -> str:
    return str(_cluster().get_node_from_key(key).name)


async def test_mall_finds_the_cluster_by_itself(settings: Settings) -> None:
    assert settings.redis_cluster is None  # nobody said so: INFO cluster did
    assert len(_cluster().get_primaries()) == 3
    assert mall_redis.detect_cluster(settings.redis_url or "")
    assert not mall_redis.detect_cluster("redis://127.0.0.1:1/0")  # unreachable: one node


async def test_readyz_checks_the_cluster_state(client: httpx.AsyncClient) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok", "database": "ok", "redis": "ok"}


async def test_a_single_node_client_on_a_cluster_is_not_ready(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    shared = get_redis()
    settings.redis_cluster = False  # MALL_REDIS_CLUSTER=false, wrongly
    try:
        single = mall_redis.connect(settings.redis_url or "")
        assert isinstance(single, Redis)
        r = await client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["error"]["details"]["redis"] == "ClusterModeUndetected"
        await single.aclose()
        settings.redis_cluster = True  # MALL_REDIS_CLUSTER=true: no question asked
        forced = mall_redis.connect(settings.redis_url or "")
        assert isinstance(forced, RedisCluster)
        assert (await client.get("/readyz")).status_code == 200
        await forced.aclose()
    finally:
        settings.redis_cluster = None
        mall_redis.set_client(shared)


async def test_a_burst_waits_for_a_connection_instead_of_failing(settings: Settings) -> None:
    """Like the single-node blocking pool: more callers than connections queue briefly."""
    url = settings.redis_url or ""
    plain = RedisCluster.from_url(url, decode_responses=True, max_connections=2)
    try:  # redis-py's own client refuses at once
        with pytest.raises(MaxConnectionsError):
            await asyncio.gather(*(plain.incr(f"burst:{n % 7}") for n in range(100)))
    finally:
        await plain.aclose()
    gated = mall_redis.ClusterClient.from_url(url, decode_responses=True, max_connections=2)
    try:
        counts = await asyncio.gather(*(gated.incr(f"burst:{n % 7}") for n in range(300)))
        assert len(counts) == 300

        async def batch(n: int) -> list[Any]:
            pipe = gated.pipeline(transaction=False)
            for k in range(7):
                pipe.get(f"burst:{k}")
            return list(await pipe.execute())

        batches = await asyncio.gather(*(batch(n) for n in range(40)))
        assert all(sum(int(v) for v in values) >= 300 for values in batches)
        assert max(len(node._connections) for node in gated.get_nodes()) <= 2
    finally:
        await gated.aclose()


@pytest.fixture
def small_cluster() -> Iterator[RedisClusterHarness]:
    """A second, throwaway cluster (quick failure detection) that a test may break."""
    folder = Path(tempfile.mkdtemp(prefix="mall-test-"))
    harness = RedisClusterHarness(folder / "redis-cluster", node_timeout_ms=1000)
    harness.start()
    try:
        yield harness
    finally:
        harness.stop()


@pytest.fixture
def scratch_app(settings: Settings) -> FastAPI:
    app = create_app(settings, manage_resources=False)

    @app.get("/test/redis/{key}")
    async def read(key: str) -> dict[str, Any]:
        return {"value": await get_redis().get(key)}

    return app


async def test_a_lost_master_fails_readiness_and_answers_503(
    small_cluster: RedisClusterHarness, scratch_app: FastAPI
) -> None:
    shared = get_redis()
    broken = mall_redis.connect(small_cluster.url)
    transport = httpx.ASGITransport(app=scratch_app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            assert (await http.get("/readyz")).status_code == 200
            assert (await http.get("/test/redis/k1")).json() == {"value": None}
            small_cluster.kill(small_cluster.ports[2])
            r = await http.get("/readyz")
            assert r.status_code == 503
            assert r.json()["error"]["details"]["redis"] != "ok"
            # once the others agree it is gone, the whole cluster refuses (CLUSTERDOWN)
            deadline = time.monotonic() + 20
            while set(small_cluster.states().values()) != {"fail"}:
                assert time.monotonic() < deadline, small_cluster.states()
                await asyncio.sleep(0.1)
            for n in range(6):  # keys on every master, the lost one included
                r = await http.get(f"/test/redis/k{n}", headers={"Accept-Language": "en"})
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] == "1"
                assert r.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
            assert (await http.get("/readyz")).status_code == 503
    finally:
        await broken.aclose()
        mall_redis.set_client(shared)


async def test_flash_sale_items_on_every_master_sell_exactly_their_stock(
    client: httpx.AsyncClient,
) -> None:
    """One session whose items live on all three masters; attempts through the HTTP hot
    path, auto-pipelined into batches that span the nodes."""
    sk_service.forget_local_state()
    start = clock.now() - timedelta(seconds=60)
    items: list[SeckillItem] = []
    for _round in range(4):
        session = await sk_service.create_session(
            SessionIn(
                name="cluster",
                starts_at=start,
                ends_at=start + timedelta(hours=1),
                items=[ItemIn(title=f"box {n}", stock=7, per_member_limit=1) for n in range(3)],
            ),
            None,
        )
        await sk_service.warm_session(session.id)
        items += await SeckillItem.filter(session_id=session.id).order_by("id")
        if len({_master_of(sk_service.key(i.id, "stock")) for i in items}) == 3:
            break
    assert len({_master_of(sk_service.key(i.id, "stock")) for i in items}) == 3

    members = await make_member_ids(40, prefix="cl")
    calls = [(item.id, m) for item in items for m in members for _ in range(2)]
    random.Random(13).shuffle(calls)

    async def attempt(item_id: int, member_id: int) -> str:
        token = issue_token(member_id, "member", 600)
        r = await client.post(
            f"/api/v1/seckill/items/{item_id}/attempt",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text
        return str(r.json()["result"])

    results = await asyncio.gather(*(attempt(i, m) for i, m in calls))
    won = Counter(i for (i, _m), result in zip(calls, results, strict=True) if result == "won")
    assert won == {item.id: 7 for item in items}
    assert set(results) <= {"won", "sold_out", "limit_reached"}

    # the consumer reads each item's stream on its own master; every reconciler agrees
    assert await sk_service.drain() == 7 * len(items)
    assert await SeckillOrder.all().count() == 7 * len(items)
    checks = await sk_service.reconcile([i.id for i in items])
    assert len(checks) == len(items) and all(c.ok for c in checks), [c.line() for c in checks]
    live = await sk_service.stock_left(items)  # one pipeline over every master
    assert live == {item.id: 0 for item in items}


async def test_points_mall_items_on_every_master_list_and_redeem(
    client: httpx.AsyncClient,
) -> None:
    staff = await Staff.create(
        username=f"ops_{secrets.token_hex(3)}", password_hash="-", role="ops"
    )
    ops = {"Authorization": f"Bearer {(await members_service.staff_tokens(staff)).token}"}
    ids: list[int] = []
    for n in range(12):
        body = {
            "name": f"Mug {n}",
            "kind": "voucher",
            "points_price": 10,
            "total_stock": 5,
            "on_shelf": True,
        }
        r = await client.post("/api/admin/v1/points-mall/items", json=body, headers=ops)
        assert r.status_code == 201, r.text
        ids.append(int(r.json()["id"]))
        if len({_master_of(pm_service.item_keys(i).stock) for i in ids}) == 3 and len(ids) >= 3:
            break
    assert len({_master_of(pm_service.item_keys(i).stock) for i in ids}) == 3

    member, _new = await members_service.login_with_wechat("dev:cluster-shopper")
    await points_service.earn(member.id, 1000, idempotency_key="cl-grant", reason="test")
    headers = {"Authorization": f"Bearer {(await members_service.tokens_for(member)).token}"}
    r = await client.get("/api/v1/points-mall/items", headers=headers, params={"size": 50})
    assert r.status_code == 200, r.text
    listed = {item["id"]: item for item in r.json()["items"]}
    assert set(listed) == set(ids)
    assert await pm_service.redis_stock(ids) == {i: 5 for i in ids}
    for item_id in ids:
        r = await client.post(
            f"/api/v1/points-mall/items/{item_id}/redeem",
            json={"quantity": 1},
            headers={**headers, "Idempotency-Key": f"cl-{item_id}"},
        )
        assert r.status_code == 202, r.text
        # the retry finds its answer on the item's own master (the key's slot)
        again = await client.post(
            f"/api/v1/points-mall/items/{item_id}/redeem",
            json={"quantity": 1},
            headers={**headers, "Idempotency-Key": f"cl-{item_id}"},
        )
        assert again.json()["reservation_id"] == r.json()["reservation_id"]
        rid = r.json()["reservation_id"]
        keys = pm_service.item_keys(item_id)
        stream_and_idem = {keys.wins, keys.res, keys.idem(member.id, f"cl-{item_id}")}
        assert {_master_of(k) for k in stream_and_idem} == {_master_of(keys.stock)}
        assert rid.startswith(f"{item_id}-")
    assert await pm_service.redis_stock(ids) == {i: 4 for i in ids}
    # the consumer reads each item's stream on its own master
    assert await persist.drain() == len(ids)
    assert await PointsMallRedemption.filter(member_id=member.id, status="issued").count() == len(
        ids
    )
    assert await points_service.get_balance(member.id) == 1000 - 10 * len(ids)
    result = await pm_service.reconcile()
    assert result.mismatches == [], result.mismatches
    report = await pm_tasks.CHECKS["pointsmall"]()
    assert report.ok, report.lines


async def test_demo_data_every_job_and_every_check_on_the_cluster(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    for module in domain_modules("demo"):
        await module.seed()
    for job in domains.jobs():
        assert await run_job_once(job), job.name  # its lease, then its work
        assert not await run_job_once(job), job.name  # the lease holds on its master
    lease_masters = {_master_of(f"job:lease:{job.name}") for job in domains.jobs()}
    assert len(lease_masters) >= 2  # leases are spread, each on its own slot
    for name, check in domains.checks().items():
        report = await check()
        assert report.ok, (name, report.lines)
    for path in ("/api/v1/seckill/sessions", "/api/v1/blind-boxes", "/api/v1/coupons"):
        r = await client.get(path)
        assert r.status_code in (200, 401), (path, r.text)


@pytest.fixture
def cluster_service(tmp_path: Path, settings: Settings, processes: list[Service]) -> Service:
    """`mall serve --demo` with MALL_REDIS_URL at one node of the cluster and its own
    SQLite file."""
    service = Service(
        tmp_path / "data", demo=True, env={"MALL_REDIS_URL": settings.redis_url or ""}
    )
    processes.append(service)
    return service


async def test_mall_serve_demo_against_a_cluster_node(cluster_service: Service) -> None:
    await asyncio.to_thread(cluster_service.wait_ready, 90.0)
    base = cluster_service.base
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        assert (await http.get("/readyz")).json()["redis"] == "ok"
        login = await http.post("/api/v1/auth/wechat-login", json={"code": "dev:cl-demo"})
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['token']}"}
        for path in ("/api/v1/points-mall/items", "/api/v1/seckill/sessions", "/api/v1/me"):
            r = await http.get(path, headers=headers)
            assert r.status_code == 200, (path, r.text)
    assert any(re.search(r"dev admin login: \S+ / \S+", line) for line in cluster_service.lines)
    cluster_service.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(cluster_service.proc.wait, 20) == 0, cluster_service.output
