"""WeChat login and phone binding over HTTP, against the fake WeChat server."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from mall.config import Settings
from mall.kit import clock
from mall.members.models import Member
from tests.wechat.fake import FakeWeChat, fake_wechat, fake_wechat_server

__all__ = ["fake_wechat", "fake_wechat_server"]  # fixtures used below

LOGIN = "/api/v1/auth/wechat-login"


async def _login(client: httpx.AsyncClient, code: str) -> httpx.Response:
    return await client.post(LOGIN, json={"code": code})


def _error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


async def test_login_creates_member_then_finds_it(
    client: httpx.AsyncClient, fake_wechat: FakeWeChat
) -> None:
    first = await _login(client, fake_wechat.login_code("oAlice", unionid="uAlice"))
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["is_new"] is True and body["token"] and body["refresh_token"]
    member = await Member.get(id=body["member"]["id"])
    assert (member.openid, member.unionid) == ("oAlice", "uAlice")

    again = await _login(client, fake_wechat.login_code("oAlice", unionid="uAlice"))
    assert again.json()["is_new"] is False
    assert again.json()["member"]["id"] == body["member"]["id"]
    assert await Member.all().count() == 1
    me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200 and me.json()["id"] == body["member"]["id"]


async def test_reused_code_refused(client: httpx.AsyncClient, fake_wechat: FakeWeChat) -> None:
    code = fake_wechat.login_code("oBob")
    assert (await _login(client, code)).status_code == 200
    reused = await client.post(LOGIN, json={"code": code}, headers={"Accept-Language": "en"})
    _error(reused, 400, "WECHAT_CODE_USED")
    assert reused.json()["error"]["message"] == (
        "This WeChat code was already used; please get a new one"
    )
    assert await Member.all().count() == 1


async def test_unknown_code_refused(client: httpx.AsyncClient, fake_wechat: FakeWeChat) -> None:
    r = await _login(client, "081abcNotAWeChatCode")
    _error(r, 400, "WECHAT_CODE_INVALID")
    assert r.json()["error"]["message"] == "微信登录凭证无效或已过期，请重试"
    assert await Member.all().count() == 0


async def test_wechat_busy_is_retryable_and_creates_nothing(
    client: httpx.AsyncClient, fake_wechat: FakeWeChat
) -> None:
    code = fake_wechat.login_code("oCarol")
    fake_wechat.busy = True
    r = await _login(client, code)
    _error(r, 503, "WECHAT_BUSY")
    assert r.headers["Retry-After"] == "1"
    assert await Member.all().count() == 0
    fake_wechat.busy = False
    retried = await _login(client, code)
    assert retried.status_code == 200 and retried.json()["is_new"] is True


async def test_minute_quota_gives_429(client: httpx.AsyncClient, fake_wechat: FakeWeChat) -> None:
    clock.set_now(clock.now())  # both calls in the same quota minute
    fake_wechat.minute_quota["jscode2session"] = 1
    assert (await _login(client, fake_wechat.login_code())).status_code == 200
    r = await _login(client, fake_wechat.login_code())
    _error(r, 429, "WECHAT_RATE_LIMITED")
    assert r.headers["Retry-After"] == "60"
    assert await Member.all().count() == 1


async def test_simultaneous_first_logins_make_one_member(
    client: httpx.AsyncClient, fake_wechat: FakeWeChat
) -> None:
    codes = [fake_wechat.login_code("oDave") for _ in range(8)]
    replies = await asyncio.gather(*(_login(client, c) for c in codes))
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    assert len({r.json()["member"]["id"] for r in replies}) == 1
    assert sum(r.json()["is_new"] for r in replies) == 1
    assert await Member.all().count() == 1


async def test_session_key_never_in_responses_or_logs(
    client: httpx.AsyncClient, fake_wechat: FakeWeChat, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    code = fake_wechat.login_code("oErin")
    responses = [await _login(client, code), await _login(client, code)]  # ok, then reused
    fake_wechat.busy = True
    busy_code = fake_wechat.login_code("oErin")
    responses.append(await _login(client, busy_code))
    fake_wechat.busy = False
    responses.append(await _login(client, busy_code))
    headers = {"Authorization": f"Bearer {responses[0].json()['token']}"}
    responses.append(
        await client.post(
            "/api/v1/auth/phone", json={"code": fake_wechat.phone_code()}, headers=headers
        )
    )
    assert [r.status_code for r in responses] == [200, 400, 503, 200, 200]

    session_keys = [fake_wechat.session_key(code), fake_wechat.session_key(busy_code)]
    logged = "\n".join(
        r.getMessage() + (r.exc_text or "") + repr(r.__dict__.get("args")) for r in caplog.records
    )
    assert caplog.records  # something was logged (httpx request lines at least)
    for secret in [*session_keys, fake_wechat.secret]:
        assert all(secret not in r.text for r in responses)
        assert secret not in logged
    assert all("session_key" not in r.text for r in responses)


async def test_bind_phone_through_wechat(
    client: httpx.AsyncClient, fake_wechat: FakeWeChat
) -> None:
    alice = await _login(client, fake_wechat.login_code("oPhoneA"))
    bob = await _login(client, fake_wechat.login_code("oPhoneB"))
    a_headers = {"Authorization": f"Bearer {alice.json()['token']}"}
    b_headers = {"Authorization": f"Bearer {bob.json()['token']}"}

    code = fake_wechat.phone_code("13800138000", openid="oPhoneA")
    r = await client.post("/api/v1/auth/phone", json={"code": code}, headers=a_headers)
    assert r.status_code == 200, r.text
    assert r.json()["phone"] == "13800138000"
    assert (await Member.get(openid="oPhoneA")).phone == "13800138000"
    # the member's openid is sent along, so WeChat checks the code is theirs
    sent = [r for r in fake_wechat.requests if r.endpoint == "getuserphonenumber"]
    assert b'"openid":"oPhoneA"' in sent[0].body

    # a phone code works once
    again = await client.post("/api/v1/auth/phone", json={"code": code}, headers=a_headers)
    _error(again, 400, "WECHAT_CODE_INVALID")
    # another member cannot use a code issued to someone else
    stolen = fake_wechat.phone_code("13800138001", openid="oPhoneA")
    r = await client.post("/api/v1/auth/phone", json={"code": stolen}, headers=b_headers)
    _error(r, 400, "WECHAT_CODE_INVALID")
    assert (await Member.get(openid="oPhoneB")).phone is None

    # a foreign number keeps its country code (sent as a number here)
    foreign = fake_wechat.phone_code("4155550100", country_code=1)
    r = await client.post("/api/v1/auth/phone", json={"code": foreign}, headers=b_headers)
    assert r.json()["phone"] == "+14155550100"
    # one access token served all of them
    assert fake_wechat.calls["stable_token"] == 1


async def test_bind_phone_with_invalidated_token_retries_once(
    client: httpx.AsyncClient, fake_wechat: FakeWeChat
) -> None:
    login = await _login(client, fake_wechat.login_code())
    headers = {"Authorization": f"Bearer {login.json()['token']}"}
    first = await client.post(
        "/api/v1/auth/phone", json={"code": fake_wechat.phone_code("13600000000")}, headers=headers
    )
    assert first.status_code == 200
    fake_wechat.invalidate_tokens()
    r = await client.post(
        "/api/v1/auth/phone", json={"code": fake_wechat.phone_code("13600000001")}, headers=headers
    )
    assert r.status_code == 200 and r.json()["phone"] == "13600000001"
    assert fake_wechat.calls["stable_token"] == 2
    assert fake_wechat.calls["getuserphonenumber"] == 3


async def test_bind_phone_when_wechat_busy(
    client: httpx.AsyncClient, fake_wechat: FakeWeChat
) -> None:
    login = await _login(client, fake_wechat.login_code())
    headers = {"Authorization": f"Bearer {login.json()['token']}"}
    code = fake_wechat.phone_code()
    fake_wechat.fail("getuserphonenumber", -1)
    r = await client.post("/api/v1/auth/phone", json={"code": code}, headers=headers)
    _error(r, 503, "WECHAT_BUSY")
    r = await client.post("/api/v1/auth/phone", json={"code": code}, headers=headers)
    assert r.status_code == 200


async def test_dev_login_refused_when_app_id_configured(
    client: httpx.AsyncClient, fake_wechat: FakeWeChat
) -> None:
    r = await _login(client, "dev:mallory")
    _error(r, 400, "WECHAT_CODE_INVALID")
    assert fake_wechat.calls["jscode2session"] == 1  # it went to WeChat
    assert await Member.all().count() == 0


async def test_dev_login_refused_in_production(
    client: httpx.AsyncClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings.wechat_appid == "" and settings.dev_login
    assert (await _login(client, "dev:ok")).status_code == 200  # test env: allowed
    monkeypatch.setattr(settings, "env", "production")
    r = await _login(client, "dev:mallory")
    _error(r, 503, "WECHAT_NOT_CONFIGURED")
    assert not await Member.filter(openid="dev_mallory").exists()


async def test_real_code_without_app_id_is_not_configured(client: httpx.AsyncClient) -> None:
    _error(await _login(client, "081realLookingCode"), 503, "WECHAT_NOT_CONFIGURED")
    assert await Member.all().count() == 0
