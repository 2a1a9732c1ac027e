"""Staff login under attack (atomic lock-out, same answers for every name, 429 before any
lock, hashing off the event loop), member login limits, and sessions: short access
tokens, refresh rotation with reuse revocation, logout."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from mall.config import Settings
from mall.kit import clock, security
from mall.members import service as members_service
from mall.members.models import AuthSession, Staff
from mall.redis import get_redis
from tests.conftest import StaffLogin
from tests.wechat.fake import FakeWeChat, fake_wechat, fake_wechat_server

__all__ = ["fake_wechat", "fake_wechat_server"]  # fixtures used below

LOGIN = "/api/admin/v1/login"
PASSWORD = "correct-horse-battery"


@pytest.fixture
def proxied(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test client (127.0.0.1) is a trusted proxy: X-Forwarded-For picks the address."""
    monkeypatch.setattr(settings, "trusted_proxies", ["127.0.0.1"])


def ip(n: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"203.0.113.{n % 250 + 1}, 198.51.{n // 250}.{n % 250 + 1}"}


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every password check made, by thread name."""
    made: list[str] = []
    real = security.verify_password

    def counted(password_hash: str, password: str) -> bool:
        made.append(threading.current_thread().name)
        return real(password_hash, password)

    monkeypatch.setattr(security, "verify_password", counted)
    yield made


async def _login(
    client: httpx.AsyncClient, username: str, password: str, headers: dict[str, str]
) -> httpx.Response:
    return await client.post(
        LOGIN, json={"username": username, "password": password}, headers=headers
    )


def _error(r: httpx.Response) -> tuple[int, str, str]:
    return r.status_code, r.json()["error"]["code"], r.json()["error"]["message"]


# --- lock-out ----------------------------------------------------------------


@pytest.mark.parametrize("username", ["opsy", "nobody"])
async def test_parallel_wrong_passwords_get_only_the_limit_checked(
    client: httpx.AsyncClient,
    settings: Settings,
    proxied: None,
    checks: list[str],
    monkeypatch: pytest.MonkeyPatch,
    username: str,
) -> None:
    await members_service.create_staff("opsy", PASSWORD, "ops")
    checks.clear()
    # 40 addresses, no name limit: only the lock stands in the way
    monkeypatch.setattr(settings, "staff_login_name_max_attempts", 1000)
    answers = await asyncio.gather(
        *(_login(client, username, f"guess-{i}", ip(i)) for i in range(40))
    )
    assert len(checks) == settings.staff_max_failed_logins == 5
    # four plain failures, the fifth failure locks, everything else was locked
    assert Counter(r.status_code for r in answers) == {401: 4, 423: 36}
    assert Counter(r.json()["error"]["code"] for r in answers) == {
        "LOGIN_FAILED": 4,
        "ACCOUNT_LOCKED": 36,
    }
    # locked for the right password too, from a fresh address, with no check made
    r = await _login(client, username, PASSWORD, ip(100))
    assert r.status_code == 423 and len(checks) == 5
    clock.advance(timedelta(minutes=16))
    r = await _login(client, username, PASSWORD, ip(101))
    assert r.status_code == (200 if username == "opsy" else 401), r.text


async def test_known_unknown_and_inactive_names_answer_alike(
    client: httpx.AsyncClient, proxied: None, checks: list[str]
) -> None:
    await members_service.create_staff("opsy", PASSWORD, "ops")
    await members_service.create_staff("gone", PASSWORD, "ops")
    await Staff.filter(username="gone").update(active=False)
    answers: dict[str, list[tuple[int, str, str]]] = {}
    for n, name in enumerate(["opsy", "nobody", "gone"]):
        checks.clear()
        answers[name] = [
            _error(await _login(client, name, "wrong", ip(10 * n + i))) for i in range(6)
        ]
        assert len(checks) == 5, name  # the same number of argon2 checks for every name
    assert answers["opsy"] == answers["nobody"] == answers["gone"]
    assert [code for _status, code, _msg in answers["opsy"]] == (
        ["LOGIN_FAILED"] * 4 + ["ACCOUNT_LOCKED"] * 2
    )
    # an inactive account's right password is a failure like any other
    r = await _login(client, "gone", PASSWORD, ip(99))
    assert r.status_code == 423
    # unknown names check a dummy hash made with the same argon2 parameters as real ones
    real = (await Staff.get(username="opsy")).password_hash
    assert members_service._DUMMY_HASH.rsplit("$", 2)[0] == real.rsplit("$", 2)[0]


async def test_unknown_names_cost_a_real_check(client: httpx.AsyncClient, proxied: None) -> None:
    await members_service.create_staff("opsy", PASSWORD, "ops")

    async def median(name: str, base: int) -> float:
        took = []
        for i in range(3):
            started = time.perf_counter()
            await _login(client, name, "wrong", ip(base + i))
            took.append(time.perf_counter() - started)
        return sorted(took)[1]

    known, unknown = await median("opsy", 0), await median("nobody", 10)
    # argon2 dominates both (tens of ms); an unchecked unknown name would take ~1 ms
    assert unknown > known / 3, (known, unknown)


async def test_one_address_gets_429_before_it_can_lock_anyone(
    client: httpx.AsyncClient, settings: Settings, checks: list[str]
) -> None:
    await members_service.create_staff("opsy", PASSWORD, "ops")
    # no trusted proxy: X-Forwarded-For is ignored, every request is 127.0.0.1
    spoofed = [{"X-Forwarded-For": f"198.51.100.{i}"} for i in range(10)]
    codes = [
        (await _login(client, "opsy", "wrong", spoofed[i])).json()["error"]["code"]
        for i in range(6)
    ]
    assert codes == ["LOGIN_FAILED"] * 4 + ["RATE_LIMITED"] * 2
    assert settings.staff_login_ip_max_failures < settings.staff_max_failed_logins
    assert len(checks) == 4  # no password was checked for the 429s
    limited = await _login(client, "other", "wrong", {"Accept-Language": "en"})
    assert limited.status_code == 429
    assert limited.json()["error"] == {
        "code": "RATE_LIMITED",
        "message": "Too many requests; please slow down",
        "details": {"retry_after": int(limited.headers["Retry-After"])},
    }
    assert 0 < int(limited.headers["Retry-After"]) <= settings.staff_login_ip_window_seconds
    # the name is not locked: its owner, elsewhere, logs in
    async with _client_from(client, "192.0.2.7") as elsewhere:
        r = await _login(elsewhere, "opsy", PASSWORD, {})
    assert r.status_code == 200, r.text


async def test_a_success_gives_its_attempt_back(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await members_service.create_staff("opsy", PASSWORD, "ops")
    statuses = []
    for password in ["x", "x", "x", PASSWORD, "x", "x"]:
        statuses.append((await _login(client, "opsy", password, {})).status_code)
    # 3 failures, a success (not counted against the address), a 4th failure, then 429
    assert statuses == [401, 401, 401, 200, 401, 429]


async def test_one_name_gets_429_from_many_addresses(
    client: httpx.AsyncClient, settings: Settings, proxied: None, checks: list[str]
) -> None:
    await members_service.create_staff("opsy", PASSWORD, "ops")
    limit = settings.staff_login_name_max_attempts
    statuses = [
        (await _login(client, "opsy", PASSWORD, ip(i))).status_code for i in range(limit + 2)
    ]
    assert statuses == [200] * limit + [429, 429]
    assert len(checks) == limit


async def test_password_checks_run_in_threads_a_few_at_a_time(
    client: httpx.AsyncClient,
    settings: Settings,
    proxied: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await members_service.create_staff("opsy", PASSWORD, "ops")
    main = threading.main_thread()
    seen: list[tuple[threading.Thread, int]] = []
    running = 0
    lock = threading.Lock()
    real = security.verify_password

    def watched(password_hash: str, password: str) -> bool:
        nonlocal running
        with lock:
            running += 1
            seen.append((threading.current_thread(), running))
        try:
            return real(password_hash, password)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(security, "verify_password", watched)
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    tick_task = asyncio.create_task(ticker())
    answers = await asyncio.gather(*(_login(client, f"user{i}", "wrong", ip(i)) for i in range(8)))
    stop.set()
    await tick_task
    assert all(r.status_code == 401 for r in answers)
    assert len(seen) == 8
    assert all(thread is not main for thread, _n in seen)
    assert max(n for _t, n in seen) <= settings.password_hash_concurrency
    assert ticks > 8  # the loop kept running while argon2 worked


# --- member login --------------------------------------------------------------


async def test_wechat_login_is_limited_per_address_before_wechat_is_asked(
    client: httpx.AsyncClient,
    settings: Settings,
    proxied: None,
    fake_wechat: FakeWeChat,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "member_login_ip_max_attempts", 3)
    here = {"X-Forwarded-For": "2001:db8:1:2::10"}
    same_64 = {"X-Forwarded-For": "2001:db8:1:2::99"}  # one IPv6 subscriber: one bucket
    codes = [fake_wechat.login_code(f"o{i}") for i in range(6)]
    for code in codes[:3]:
        r = await client.post("/api/v1/auth/wechat-login", json={"code": code}, headers=here)
        assert r.status_code == 200, r.text
    calls = fake_wechat.calls["jscode2session"]
    r = await client.post("/api/v1/auth/wechat-login", json={"code": codes[3]}, headers=same_64)
    assert r.status_code == 429 and r.json()["error"]["code"] == "RATE_LIMITED"
    assert int(r.headers["Retry-After"]) >= 1
    r = await client.post("/api/v1/referral/wechat-login", json={"code": codes[3]}, headers=here)
    assert r.status_code == 429  # the share-login route shares the limit
    assert fake_wechat.calls["jscode2session"] == calls  # WeChat was not asked
    other = {"X-Forwarded-For": "2001:db8:1:3::10"}
    r = await client.post("/api/v1/auth/wechat-login", json={"code": codes[4]}, headers=other)
    assert r.status_code == 200


# --- sessions ----------------------------------------------------------------


async def _member_login(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    r = await client.post("/api/v1/auth/wechat-login", json={"code": f"dev:{name}"})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _refresh(client: httpx.AsyncClient, path: str, token: str) -> httpx.Response:
    return await client.post(path, json={"refresh_token": token})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_member_access_tokens_last_minutes_and_refresh_tokens_rotate(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    login = await _member_login(client, "dora")
    assert login["expires_in"] == settings.access_token_ttl_seconds == 15 * 60
    clock.advance(timedelta(minutes=16))
    r = await client.get("/api/v1/me", headers=_bearer(login["token"]))
    assert r.json()["error"]["code"] == "TOKEN_EXPIRED"
    first = await _refresh(client, "/api/v1/auth/refresh", login["refresh_token"])
    assert first.status_code == 200, first.text
    new = first.json()
    assert new["refresh_token"] != login["refresh_token"]
    assert (await client.get("/api/v1/me", headers=_bearer(new["token"]))).status_code == 200
    second = await _refresh(client, "/api/v1/auth/refresh", new["refresh_token"])
    assert second.status_code == 200
    # the first refresh token again: someone kept a copy, so the session ends
    replay = await _refresh(client, "/api/v1/auth/refresh", login["refresh_token"])
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "SESSION_REVOKED"
    latest = await _refresh(client, "/api/v1/auth/refresh", second.json()["refresh_token"])
    assert latest.status_code == 401 and latest.json()["error"]["code"] == "SESSION_REVOKED"
    session = await AuthSession.get(kind="member")
    assert session.revoked_reason == "reuse" and session.rotations == 2
    # a new login is a new session
    again = await _member_login(client, "dora")
    assert (await _refresh(client, "/api/v1/auth/refresh", again["refresh_token"])).is_success


async def test_one_refresh_token_used_twice_at_once_succeeds_once(
    client: httpx.AsyncClient,
) -> None:
    login = await _member_login(client, "eve")
    answers = await asyncio.gather(
        *(_refresh(client, "/api/v1/auth/refresh", login["refresh_token"]) for _ in range(8))
    )
    assert sorted(r.status_code for r in answers) == [200] + [401] * 7
    winner = next(r for r in answers if r.status_code == 200).json()
    # the replays revoked the family, the winner's new token included
    r = await _refresh(client, "/api/v1/auth/refresh", winner["refresh_token"])
    assert r.status_code == 401


async def test_member_logout_ends_the_refresh_token(client: httpx.AsyncClient) -> None:
    login = await _member_login(client, "finn")
    r = await client.post("/api/v1/auth/logout", headers=_bearer(login["token"]))
    assert r.status_code == 204
    r = await _refresh(client, "/api/v1/auth/refresh", login["refresh_token"])
    assert r.json()["error"]["code"] == "SESSION_REVOKED"
    assert (await client.post("/api/v1/auth/logout")).status_code == 401


async def _staff_login(client: httpx.AsyncClient, role: str = "ops") -> dict[str, Any]:
    name = f"{role}_{len(await Staff.all())}"
    await members_service.create_staff(name, PASSWORD, role)
    r = await _login(client, name, PASSWORD, {})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_staff_logout_ends_the_access_and_refresh_tokens_at_once(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    login = await _staff_login(client, "admin")
    assert login["expires_in"] == settings.staff_token_ttl_seconds == 15 * 60
    other = await _login(client, login["staff"]["username"], PASSWORD, {})  # second session
    headers = _bearer(login["token"])
    assert (await client.get("/api/admin/v1/staff", headers=headers)).status_code == 200
    assert (await client.post("/api/admin/v1/logout", headers=headers)).status_code == 204
    r = await client.get("/api/admin/v1/staff", headers=headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "SESSION_REVOKED"
    r = await _refresh(client, "/api/admin/v1/refresh", login["refresh_token"])
    assert r.status_code == 401 and r.json()["error"]["code"] == "SESSION_REVOKED"
    # the other session of the same account goes on
    r = await client.get("/api/admin/v1/me", headers=_bearer(other.json()["token"]))
    assert r.status_code == 200


async def test_staff_refresh_rotates_and_a_reuse_kills_the_access_token_too(
    client: httpx.AsyncClient,
) -> None:
    login = await _staff_login(client)
    clock.advance(timedelta(minutes=16))
    expired = await client.get("/api/admin/v1/me", headers=_bearer(login["token"]))
    assert expired.json()["error"]["code"] == "TOKEN_EXPIRED"
    r = await _refresh(client, "/api/admin/v1/refresh", login["refresh_token"])
    assert r.status_code == 200, r.text
    fresh = r.json()
    assert (await client.get("/api/admin/v1/me", headers=_bearer(fresh["token"]))).is_success
    replay = await _refresh(client, "/api/admin/v1/refresh", login["refresh_token"])
    assert replay.json()["error"]["code"] == "SESSION_REVOKED"
    r = await client.get("/api/admin/v1/me", headers=_bearer(fresh["token"]))
    assert r.status_code == 401 and r.json()["error"]["code"] == "SESSION_REVOKED"


async def test_a_staff_session_ends_where_its_login_said(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    clock.set_now(clock.now().replace(microsecond=0))  # whole seconds, frozen
    login = await _staff_login(client)
    token = login["refresh_token"]
    hours = settings.staff_session_ttl_seconds // 3600
    for _ in range(hours - 1):  # refreshing every hour does not stretch the session
        clock.advance(timedelta(hours=1))
        r = await _refresh(client, "/api/admin/v1/refresh", token)
        assert r.status_code == 200, r.text
        token = r.json()["refresh_token"]
    clock.advance(timedelta(minutes=50))
    r = await _refresh(client, "/api/admin/v1/refresh", token)
    assert r.json()["expires_in"] == 10 * 60  # an access token never outlives its session
    clock.advance(timedelta(minutes=10, seconds=1))
    r = await _refresh(client, "/api/admin/v1/refresh", r.json()["refresh_token"])
    assert r.status_code == 401 and r.json()["error"]["code"] == "TOKEN_EXPIRED"


async def test_tokens_of_one_kind_never_pass_for_another(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    member = await _member_login(client, "gil")
    staff = await _staff_login(client)
    for path, token in [
        ("/api/admin/v1/refresh", member["refresh_token"]),
        ("/api/v1/auth/refresh", staff["refresh_token"]),
        ("/api/v1/auth/refresh", member["token"]),
        ("/api/admin/v1/refresh", staff["token"]),
    ]:
        assert (await _refresh(client, path, token)).status_code == 401, path
    # a staff token signed right but naming no session (as old releases issued) is refused
    old = security.issue_token(staff["staff"]["id"], "staff", 600, role="ops")
    r = await client.get("/api/admin/v1/me", headers=_bearer(old))
    assert r.status_code == 401


def _client_from(client: httpx.AsyncClient, address: str) -> httpx.AsyncClient:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(
            app=transport.app, raise_app_exceptions=False, client=(address, 40000)
        ),
        base_url="http://testserver",
    )


async def test_ended_sessions_are_pruned_after_a_week(client: httpx.AsyncClient) -> None:
    from mall.domains import jobs
    from mall.kit.jobs import run_job_once

    clock.set_now(clock.now().replace(microsecond=0))
    kept = await _member_login(client, "hal")
    revoked = await _member_login(client, "ida")
    await client.post("/api/v1/auth/logout", headers=_bearer(revoked["token"]))
    job = next(j for j in jobs() if j.name == "members.prune_sessions")

    async def prune() -> None:
        await get_redis().delete(f"job:lease:{job.name}")  # the lease runs on Redis time
        assert await run_job_once(job)

    clock.advance(timedelta(days=8))
    await prune()
    # the logged-out one went; the other lives 30 days from its login
    assert await AuthSession.all().count() == 1
    # a refresh (day 8) slides it to day 38; a week after that it goes too
    assert (await _refresh(client, "/api/v1/auth/refresh", kept["refresh_token"])).is_success
    clock.advance(timedelta(days=36))
    await prune()
    assert await AuthSession.all().count() == 1
    clock.advance(timedelta(days=2))
    await prune()
    assert await AuthSession.all().count() == 0
