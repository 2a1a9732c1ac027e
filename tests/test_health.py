"""Health, readiness, metrics, request ids and the error envelope for the unexpected."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from mall import redis as mall_redis
from mall.app import create_app
from mall.config import Settings
from mall.kit.security import issue_token
from tests.conftest import MemberLogin


@pytest.fixture
def redis_down(tmp_path: Path) -> Iterator[None]:
    """Point mall.redis at a socket nobody listens on, then restore the real client."""
    real = mall_redis.get_redis()
    dead = Redis(
        unix_socket_path=str(tmp_path / "closed.sock"),
        socket_timeout=0.5,
        retry=Retry(NoBackoff(), 0),  # fail at once; the default retries with backoff
    )
    mall_redis.set_client(dead)
    try:
        yield
    finally:
        mall_redis.set_client(real)


@pytest.fixture
def scratch_app(settings: Settings) -> FastAPI:
    """A fresh app (same database and Redis) to hang throwaway routes on."""
    app = create_app(settings, manage_resources=False)

    @app.get("/test/boom/{n}")
    async def boom(n: int) -> dict[str, Any]:
        raise RuntimeError(f"secret detail {n}: password=hunter2")

    @app.get("/test/redis")
    async def uses_redis() -> dict[str, Any]:
        return {"value": await mall_redis.get_redis().get("anything")}

    return app


@pytest.fixture
async def scratch(scratch_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=scratch_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample, 0 if absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
        if found == labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_healthz(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_readyz_checks_database_and_redis(client: httpx.AsyncClient) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok", "redis": "ok"}


async def test_readyz_is_503_when_redis_is_unreachable(
    client: httpx.AsyncClient, redis_down: None
) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 503
    error = r.json()["error"]
    assert error["code"] == "SERVICE_UNAVAILABLE"
    assert error["details"]["database"] == "ok"
    assert error["details"]["redis"] != "ok"
    assert "Traceback" not in r.text


async def test_redis_outage_in_a_route_is_a_retryable_503(
    scratch: httpx.AsyncClient, redis_down: None
) -> None:
    r = await scratch.get("/test/redis", headers={"Accept-Language": "en"})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "SERVICE_UNAVAILABLE"


async def test_readyz_recovers_when_redis_is_back(client: httpx.AsyncClient) -> None:
    # the previous test's outage left nothing behind
    assert (await client.get("/readyz")).status_code == 200


async def test_metrics_count_requests_by_route_template(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    headers = await member_headers("alice")
    before = (await client.get("/metrics")).text
    for _ in range(3):
        assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
    assert (await client.get("/api/v1/me")).status_code == 401
    assert (await client.get("/no/such/page/12345")).status_code == 404

    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    after = r.text
    assert "# TYPE mall_http_requests_total counter" in after
    ok = {"method": "GET", "route": "/api/v1/me", "status": "200"}
    assert _sample(after, "mall_http_requests_total", **ok) - _sample(
        before, "mall_http_requests_total", **ok
    ) == pytest.approx(3)
    denied = {"method": "GET", "route": "/api/v1/me", "status": "401"}
    assert _sample(after, "mall_http_requests_total", **denied) >= 1
    latency = {"method": "GET", "route": "/api/v1/me"}
    assert _sample(after, "mall_http_request_seconds_count", **latency) >= 3
    # unknown paths share one label instead of growing the label set
    assert "/no/such/page" not in after
    assert _sample(after, "mall_http_requests_total", method="GET", route="unmatched", status="404")


async def test_metrics_label_path_parameters_by_template(
    scratch: httpx.AsyncClient,
) -> None:
    await scratch.get("/test/boom/7")
    await scratch.get("/test/boom/8")
    text = (await scratch.get("/metrics")).text
    labels = {"method": "GET", "route": "/test/boom/{n}", "status": "500"}
    assert _sample(text, "mall_http_requests_total", **labels) >= 2
    assert "/test/boom/7" not in text


async def test_unknown_error_is_500_with_request_id_and_no_traceback(
    scratch: httpx.AsyncClient,
) -> None:
    r = await scratch.get("/test/boom/1", headers={"Accept-Language": "en"})
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["code"] == "INTERNAL_ERROR"
    assert error["message"] == "Something went wrong on our side"
    assert re.fullmatch(r"[0-9a-f]{32}", error["request_id"])
    assert r.headers["x-request-id"] == error["request_id"]
    for leak in ("Traceback", "RuntimeError", "secret detail", "hunter2", "boom"):
        assert leak not in r.text


async def test_unknown_error_keeps_the_callers_request_id(scratch: httpx.AsyncClient) -> None:
    r = await scratch.get("/test/boom/2", headers={"X-Request-ID": "trace-abc.123"})
    assert r.status_code == 500
    assert r.json()["error"]["request_id"] == "trace-abc.123"
    assert r.json()["error"]["message"] == "服务器开小差了，请稍后再试"


async def test_unknown_route_uses_the_error_envelope(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/nothing-here", headers={"Accept-Language": "en"})
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "NOT_FOUND", "message": "Not found"}}

    r = await client.delete("/healthz")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_validation_errors_name_the_fields(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/auth/wechat-login", json={})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert any(f["field"].endswith("code") for f in error["fields"])


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"

    r = await client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])

    # ids that are too long or carry odd characters are replaced, not echoed into logs
    for bad in (b"x" * 65, b"abc def", "abc\u00e9".encode("latin-1"), b"a,b"):
        r = await client.get("/healthz", headers={b"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), bad


async def test_a_fast_route_is_answered_in_front_of_fastapis_own_layers(
    app: Any, client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    # FastAPI asks on every request whether an OpenTelemetry provider is configured; a
    # hot route answered by the fast path does not pass there, the other routes do
    asked: list[str] = []
    telemetry = app._native_telemetry
    enabled = telemetry.enabled

    def counted() -> bool:
        asked.append("asked")
        return bool(enabled())

    headers = await member_headers("fast")
    telemetry.enabled = counted
    try:
        attempt = await client.post("/api/v1/seckill/items/999999/attempt", headers=headers)
        assert attempt.status_code == 404, attempt.text
        assert attempt.json()["error"]["code"] == "SECKILL_ITEM_NOT_FOUND"
        assert attempt.headers["x-request-id"]  # the outer layers ran
        assert asked == []
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.headers["x-request-id"]
        assert asked == ["asked"]
    finally:
        del telemetry.enabled


async def test_a_route_that_needs_no_redis_answers_a_member_in_a_redis_outage(
    client: httpx.AsyncClient, redis_down: None
) -> None:
    # the deleted accounts are read from Redis; unreadable, none are refused (as before
    # they were written there), and a route of the database alone keeps answering
    token = issue_token(1, "member", 600)
    for _ in range(2):  # the first read failed, the second is not tried yet
        r = await client.get(
            "/api/v1/seckill/bookings", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 200, r.text
        assert r.json() == []


async def test_a_cluster_failover_is_an_outage_for_the_deleted_accounts_too(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # a slot not covered (a failover in progress) is answered 503 like an outage; the
    # deleted accounts unreadable then refuse none, as when Redis is down
    from redis.exceptions import SlotNotCoveredError

    from mall.members import service as members_service

    async def failing(_key: int) -> frozenset[int]:
        raise SlotNotCoveredError("slot 1234 is not covered")

    def a_second_later() -> None:  # the pause after a failed read is over
        until = members_service._unreadable_until
        monkeypatch.setattr(members_service, "_unreadable_until", min(until, time.monotonic()))

    load = members_service._deleted._load
    monkeypatch.setattr(members_service._deleted, "_load", failing)
    token = issue_token(1, "member", 600)
    headers = {"Authorization": f"Bearer {token}"}
    with caplog.at_level(logging.INFO, logger="mall.members"):
        for _ in range(3):  # a second apart: each one asks Redis again
            a_second_later()
            r = await client.get("/api/v1/seckill/bookings", headers=headers)
            assert r.status_code == 200, r.text
            assert r.json() == []
        monkeypatch.setattr(members_service._deleted, "_load", load)
        a_second_later()
        for _ in range(2):
            r = await client.get("/api/v1/seckill/bookings", headers=headers)
            assert r.status_code == 200, r.text
    said = [r.getMessage() for r in caplog.records if "deleted accounts" in r.getMessage()]
    # one line when the outage starts and one when it ends, not one a second
    assert len(said) == 2, said
    assert said[0].startswith("deleted accounts not read") and "read again" in said[1]
