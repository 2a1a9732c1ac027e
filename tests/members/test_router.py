from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from mall.kit import clock
from tests.conftest import MemberLogin, StaffLogin


async def test_dev_login_creates_member_once(client: httpx.AsyncClient) -> None:
    first = await client.post("/api/v1/auth/wechat-login", json={"code": "dev:alice"})
    assert first.status_code == 200
    assert first.json()["is_new"] is True
    again = await client.post("/api/v1/auth/wechat-login", json={"code": "dev:alice"})
    assert again.json()["is_new"] is False
    assert again.json()["member"]["id"] == first.json()["member"]["id"]
    assert "session_key" not in first.text


@pytest.mark.clock
async def test_me_and_birthday_set_once(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    headers = await member_headers("bob")
    r = await client.patch(
        "/api/v1/me", json={"nickname": "Bob", "birthday": "1990-05-06"}, headers=headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["birthday"] == "1990-05-06"
    again = await client.patch("/api/v1/me", json={"birthday": "1991-01-01"}, headers=headers)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "BIRTHDAY_ALREADY_SET"
    me = await client.get("/api/v1/me", headers=headers)
    assert me.json()["birthday"] == "1990-05-06"
    assert me.json()["nickname"] == "Bob"


async def test_tokens_expired_tampered_and_wrong_kind(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    headers = await member_headers("carol")
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
    token = headers["Authorization"].split()[1]
    tampered = token[:-3] + ("aaa" if not token.endswith("aaa") else "bbb")
    r = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {tampered}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "TOKEN_INVALID"
    # a shopper token never opens an admin route
    r = await client.get("/api/admin/v1/me", headers=headers)
    assert r.status_code == 401
    # a staff token is not a member token either
    staff = await staff_headers()
    assert (await client.get("/api/v1/me", headers=staff)).status_code == 401
    assert (await client.get("/api/v1/me")).json()["error"]["code"] == "UNAUTHORIZED"
    clock.advance(timedelta(hours=3))
    r = await client.get("/api/v1/me", headers=headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "TOKEN_EXPIRED"


async def test_refresh_token(client: httpx.AsyncClient) -> None:
    login = (await client.post("/api/v1/auth/wechat-login", json={"code": "dev:dave"})).json()
    clock.advance(timedelta(hours=3))
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": login["refresh_token"]})
    assert r.status_code == 200
    assert (
        await client.get("/api/v1/me", headers={"Authorization": f"Bearer {r.json()['token']}"})
    ).status_code == 200
    # an access token is not a refresh token
    bad = await client.post("/api/v1/auth/refresh", json={"refresh_token": r.json()["token"]})
    assert bad.status_code == 401


async def test_errors_localized(client: httpx.AsyncClient) -> None:
    zh = await client.get("/api/v1/me")
    assert zh.json()["error"]["message"] == "请先登录"
    en = await client.get("/api/v1/me", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert en.json()["error"]["message"] == "Please log in"
    invalid = await client.post(
        "/api/v1/auth/wechat-login", json={}, headers={"Accept-Language": "en"}
    )
    assert invalid.status_code == 422
    body = invalid.json()["error"]
    assert body["code"] == "VALIDATION_ERROR" and body["fields"][0]["field"] == "body.code"


async def test_ops_cannot_manage_staff_and_admin_writes_are_audited(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    ops = await staff_headers("ops")
    r = await client.post(
        "/api/admin/v1/staff", json={"username": "newbie", "password": "longenough"}, headers=ops
    )
    assert r.status_code == 403
    admin = await staff_headers("admin")
    r = await client.post(
        "/api/admin/v1/staff", json={"username": "newbie", "password": "longenough"}, headers=admin
    )
    assert r.status_code == 201
    log = (await client.get("/api/admin/v1/audit-log", headers=admin)).json()
    assert log[0]["action"] == "staff.create" and log[0]["detail"]["username"] == "newbie"
