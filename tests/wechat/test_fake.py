"""The fake itself follows WeChat's contract (shared/docs/wechat.md), spoken to with raw
httpx the way WeChat would be, so client tests built on it mean something."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from mall.kit import clock
from tests.wechat.fake import FakeWeChat

pytestmark = pytest.mark.nodb


@pytest.fixture
async def wx(fake_wechat: FakeWeChat) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake_wechat.base_url) as c:
        yield c


def _error(r: httpx.Response, errcode: int) -> dict[str, Any]:
    assert r.status_code == 200  # WeChat errors are HTTP 200
    data = json.loads(r.content)
    assert data["errcode"] == errcode, data
    assert " rid: " in data["errmsg"]
    return data


async def _session(wx: httpx.AsyncClient, fake: FakeWeChat, code: str, **over: str) -> Any:
    params = {
        "appid": fake.appid,
        "secret": fake.secret,
        "js_code": code,
        "grant_type": "authorization_code",
    }
    return await wx.get("/sns/jscode2session", params={**params, **over})


async def _token(wx: httpx.AsyncClient, fake: FakeWeChat, force: bool = False) -> dict[str, Any]:
    body = {
        "grant_type": "client_credential",
        "appid": fake.appid,
        "secret": fake.secret,
        "force_refresh": force,
    }
    r = await wx.post("/cgi-bin/stable_token", json=body)
    data: dict[str, Any] = r.json()
    return data


async def _phone(wx: httpx.AsyncClient, token: str | None, code: str) -> httpx.Response:
    params = {"access_token": token} if token else {}
    return await wx.post("/wxa/business/getuserphonenumber", params=params, json={"code": code})


async def test_code2session_success_shape_and_code_used_once(
    wx: httpx.AsyncClient, fake_wechat: FakeWeChat
) -> None:
    code = fake_wechat.login_code("oUser1", unionid="uUnion1")
    r = await _session(wx, fake_wechat, code)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    data = json.loads(r.content)
    assert "errcode" not in data
    assert data == {
        "session_key": fake_wechat.session_key(code),
        "openid": "oUser1",
        "unionid": "uUnion1",
    }
    _error(await _session(wx, fake_wechat, code), 40163)
    _error(await _session(wx, fake_wechat, "no-such-code"), 40029)
    assert fake_wechat.calls["jscode2session"] == 3


async def test_code2session_app_checks_expiry_busy_and_quota(
    wx: httpx.AsyncClient, fake_wechat: FakeWeChat
) -> None:
    code = fake_wechat.login_code()
    _error(await _session(wx, fake_wechat, code, appid="wx_other"), 40013)
    _error(await _session(wx, fake_wechat, code, secret="wrong"), 40125)
    fake_wechat.busy = True
    assert _error(await _session(wx, fake_wechat, code), -1)["errmsg"].startswith("system error")
    fake_wechat.busy = False
    # none of the refusals above used the code up
    assert (await _session(wx, fake_wechat, code)).json()["openid"]

    stale = fake_wechat.login_code()
    clock.advance(timedelta(seconds=301))
    _error(await _session(wx, fake_wechat, stale), 40029)

    clock.set_now(clock.now())  # the quota counts per minute
    fake_wechat.minute_quota["jscode2session"] = 2
    first, second, third = (fake_wechat.login_code() for _ in range(3))
    assert "openid" in (await _session(wx, fake_wechat, first)).json()
    assert "openid" in (await _session(wx, fake_wechat, second)).json()
    _error(await _session(wx, fake_wechat, third), 45011)
    clock.advance(timedelta(seconds=60))
    assert "openid" in (await _session(wx, fake_wechat, third)).json()


async def test_stable_token_json_only(wx: httpx.AsyncClient, fake_wechat: FakeWeChat) -> None:
    form = {"grant_type": "client_credential", "appid": fake_wechat.appid}
    form["secret"] = fake_wechat.secret
    _error(await wx.post("/cgi-bin/stable_token", data=form), 41002)
    _error(await wx.post("/cgi-bin/stable_token", params=form), 41002)
    bad = {**form, "secret": "nope"}
    _error(await wx.post("/cgi-bin/stable_token", json=bad), 40125)
    assert fake_wechat.current_token is None


async def test_stable_token_same_while_valid_then_overlap_then_force(
    wx: httpx.AsyncClient, fake_wechat: FakeWeChat
) -> None:
    clock.set_now(clock.now())
    first = await _token(wx, fake_wechat)
    assert "errcode" not in first and first["expires_in"] == 7200
    assert len(first["access_token"]) > 100
    clock.advance(timedelta(seconds=1000))
    again = await _token(wx, fake_wechat)
    assert again["access_token"] == first["access_token"]
    assert 300 <= again["expires_in"] == 6200

    # the last 5 minutes: a new token, and the old one still works until it expires
    clock.advance(timedelta(seconds=5950))
    renewed = await _token(wx, fake_wechat)
    assert renewed["access_token"] != first["access_token"]
    assert renewed["expires_in"] == 7200
    old_ok = await _phone(wx, first["access_token"], fake_wechat.phone_code())
    assert old_ok.json()["errcode"] == 0
    clock.advance(timedelta(seconds=300))
    _error(await _phone(wx, first["access_token"], fake_wechat.phone_code()), 42001)

    # force_refresh revokes the current token at once
    forced = await _token(wx, fake_wechat, force=True)
    assert forced["access_token"] != renewed["access_token"]
    _error(await _phone(wx, renewed["access_token"], fake_wechat.phone_code()), 40001)
    assert (await _phone(wx, forced["access_token"], fake_wechat.phone_code())).json()[
        "errcode"
    ] == 0


async def test_phone_number_needs_token_and_works_once(
    wx: httpx.AsyncClient, fake_wechat: FakeWeChat
) -> None:
    token = (await _token(wx, fake_wechat))["access_token"]
    code = fake_wechat.phone_code("13900001111", country_code=86)
    _error(await _phone(wx, None, code), 41001)
    _error(await _phone(wx, "bogus", code), 40014)
    r = await _phone(wx, token, code)
    data = r.json()
    assert data["errcode"] == 0 and data["errmsg"] == "ok"
    info = data["phone_info"]
    assert info["purePhoneNumber"] == "13900001111"
    assert info["countryCode"] == 86  # a number, as WeChat's own example has it
    assert info["watermark"]["appid"] == fake_wechat.appid
    _error(await _phone(wx, token, code), 40029)

    fake_wechat.expire_tokens()
    _error(await _phone(wx, token, fake_wechat.phone_code()), 42001)
    fake_wechat.invalidate_tokens()
    _error(await _phone(wx, token, fake_wechat.phone_code()), 40001)


async def test_subscribe_send_validates_refuses_and_records(
    wx: httpx.AsyncClient, fake_wechat: FakeWeChat
) -> None:
    token = (await _token(wx, fake_wechat))["access_token"]
    fake_wechat.add_user("oMember")
    fake_wechat.add_template("TPL_ORDER", "thing1", "amount2")

    async def send(**body: Any) -> httpx.Response:
        message = {
            "touser": "oMember",
            "template_id": "TPL_ORDER",
            "data": {"thing1": {"value": "积分商城兑换"}, "amount2": {"value": "¥9.90"}},
            **body,
        }
        return await wx.post(
            "/cgi-bin/message/subscribe/send", params={"access_token": token}, json=message
        )

    ok = await send(page="pages/order/detail?id=1")
    assert ok.json()["errcode"] == 0
    assert fake_wechat.sent[0]["data"]["thing1"]["value"] == "积分商城兑换"
    _error(await send(touser=""), 40003)
    _error(await send(touser="oStranger"), 40003)
    _error(await send(template_id="TPL_NOPE"), 40037)
    missing = _error(await send(data={"thing1": {"value": "x"}}), 47003)
    assert "data.amount2.value" in missing["errmsg"]
    _error(await send(data={"thing1": {"value": "x" * 21}, "amount2": {"value": "1"}}), 47003)
    _error(await send(miniprogram_state="beta"), 47001)
    fake_wechat.refuse("oMember", "TPL_ORDER")
    _error(await send(), 43101)
    assert len(fake_wechat.sent) == 1
    assert fake_wechat.calls["subscribe_send"] == 8
