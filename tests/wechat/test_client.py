"""mall.wechat.client against the fake WeChat and the real Redis: token caching shared
through Redis, single flight, one refetch and one retry on token errors, refresh before
expiry, error mapping, and no secrets in logs."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta

import pytest

from mall.config import Settings
from mall.errors import MallError
from mall.kit import clock
from mall.redis import get_redis
from mall.wechat import client as wechat
from tests.wechat.fake import FakeWeChat


def _tokens_used(fake: FakeWeChat) -> list[str]:
    return [r.query["access_token"] for r in fake.requests if r.endpoint == "getuserphonenumber"]


async def test_token_fetched_once_cached_in_redis_and_shared(fake_wechat: FakeWeChat) -> None:
    first = await wechat.get_phone_number(fake_wechat.phone_code("13800000001"))
    assert first.pure_phone_number == "13800000001"
    assert first.country_code == "86"
    await wechat.get_phone_number(fake_wechat.phone_code())
    assert fake_wechat.calls["stable_token"] == 1

    raw = await get_redis().get(f"wechat:{fake_wechat.appid}:stable_token")
    assert raw
    entry = json.loads(raw)
    assert entry["token"] == fake_wechat.current_token
    ttl = await get_redis().ttl(f"wechat:{fake_wechat.appid}:stable_token")
    assert 7000 < ttl <= 7200

    # a new process (no in-process copy) takes the token from Redis, not from WeChat
    await wechat.aclose()
    await wechat.get_phone_number(fake_wechat.phone_code())
    assert fake_wechat.calls["stable_token"] == 1
    assert fake_wechat.calls["getuserphonenumber"] == 3
    # the token was posted as JSON, never in a query string or form
    request = next(r for r in fake_wechat.requests if r.endpoint == "stable_token")
    assert request.content_type == "application/json" and not request.query
    assert json.loads(request.body)["force_refresh"] is False


async def test_concurrent_callers_fetch_one_token(fake_wechat: FakeWeChat) -> None:
    codes = [fake_wechat.phone_code(f"139{i:08d}") for i in range(30)]
    infos = await asyncio.gather(*(wechat.get_phone_number(c) for c in codes))
    assert sorted(i.pure_phone_number for i in infos) == sorted(f"139{i:08d}" for i in range(30))
    assert fake_wechat.calls["stable_token"] == 1


@pytest.mark.parametrize("how", ["invalidated", "expired"])
async def test_refused_token_refetched_once_and_call_retried_once(
    fake_wechat: FakeWeChat, how: str
) -> None:
    await wechat.get_phone_number(fake_wechat.phone_code())
    old = fake_wechat.current_token
    if how == "invalidated":
        fake_wechat.invalidate_tokens()  # 40001
    else:
        fake_wechat.expire_tokens()  # 42001
    info = await wechat.get_phone_number(fake_wechat.phone_code("13700000000"))
    assert info.pure_phone_number == "13700000000"
    assert fake_wechat.calls["stable_token"] == 2
    assert fake_wechat.calls["getuserphonenumber"] == 3
    assert _tokens_used(fake_wechat) == [old, old, fake_wechat.current_token]
    assert fake_wechat.current_token != old


async def test_many_callers_refused_together_cause_one_refetch(fake_wechat: FakeWeChat) -> None:
    await wechat.get_phone_number(fake_wechat.phone_code())
    fake_wechat.invalidate_tokens()
    codes = [fake_wechat.phone_code() for _ in range(20)]
    await asyncio.gather(*(wechat.get_phone_number(c) for c in codes))
    assert fake_wechat.calls["stable_token"] == 2
    assert fake_wechat.calls["getuserphonenumber"] == 1 + 20 * 2


async def test_token_refused_twice_is_an_error_not_a_loop(fake_wechat: FakeWeChat) -> None:
    await wechat.get_phone_number(fake_wechat.phone_code())
    before = dict(fake_wechat.calls)
    fake_wechat.fail("getuserphonenumber", 40001, times=50)
    with pytest.raises(MallError) as caught:
        await wechat.get_phone_number(fake_wechat.phone_code())
    assert caught.value.code == "WECHAT_ERROR" and caught.value.status == 502
    assert fake_wechat.calls["getuserphonenumber"] - before["getuserphonenumber"] == 2
    assert fake_wechat.calls["stable_token"] - before["stable_token"] == 1


async def test_token_refreshed_before_it_expires(fake_wechat: FakeWeChat) -> None:
    clock.set_now(clock.now())
    await wechat.get_phone_number(fake_wechat.phone_code())
    first = fake_wechat.current_token
    clock.advance(timedelta(seconds=6800))  # still more than 5 minutes left: keep it
    await wechat.get_phone_number(fake_wechat.phone_code())
    assert fake_wechat.calls["stable_token"] == 1
    clock.advance(timedelta(seconds=120))  # inside the last 5 minutes: renew first
    await wechat.get_phone_number(fake_wechat.phone_code())
    assert fake_wechat.calls["stable_token"] == 2
    assert _tokens_used(fake_wechat) == [first, first, fake_wechat.current_token]
    assert fake_wechat.current_token != first
    # no call ever met a refused token
    assert fake_wechat.calls["getuserphonenumber"] == 3


async def test_token_cache_is_per_app(fake_wechat: FakeWeChat, settings: Settings) -> None:
    await wechat.get_phone_number(fake_wechat.phone_code())
    settings.wechat_appid = "wx_another_app"
    with pytest.raises(MallError) as caught:  # the fake knows only its own app: 40013
        await wechat.access_token()
    assert caught.value.code == "WECHAT_ERROR"
    assert fake_wechat.calls["stable_token"] == 2


@pytest.mark.parametrize("content_type", ["text/plain", "application/json"])
async def test_code2session_parses_json_whatever_the_content_type(
    fake_wechat: FakeWeChat, content_type: str
) -> None:
    fake_wechat.session_content_type = content_type
    code = fake_wechat.login_code("oParsed", unionid="uParsed")
    session = await wechat.code2session(code)
    assert (session.openid, session.unionid) == ("oParsed", "uParsed")
    assert session.session_key == fake_wechat.session_key(code)
    assert fake_wechat.session_key(code) not in repr(session)


@pytest.mark.parametrize(
    ("errcode", "code", "status"),
    [
        (40029, "WECHAT_CODE_INVALID", 400),
        (40163, "WECHAT_CODE_USED", 400),
        (45011, "WECHAT_RATE_LIMITED", 429),
        (-1, "WECHAT_BUSY", 503),
        (40226, "WECHAT_USER_BLOCKED", 403),
        (48001, "WECHAT_ERROR", 502),
    ],
)
async def test_code2session_errors_map_to_client_errors(
    fake_wechat: FakeWeChat, errcode: int, code: str, status: int
) -> None:
    fake_wechat.fail("jscode2session", errcode)
    with pytest.raises(MallError) as caught:
        await wechat.code2session(fake_wechat.login_code())
    assert (caught.value.code, caught.value.status) == (code, status)


async def test_unreachable_wechat_is_busy(fake_wechat: FakeWeChat, settings: Settings) -> None:
    settings.wechat_api_base = "http://127.0.0.1:9"  # discard port: connection refused
    with pytest.raises(MallError) as caught:
        await wechat.code2session(fake_wechat.login_code())
    assert caught.value.code == "WECHAT_BUSY"


async def test_logs_carry_no_secret_code_or_token(
    fake_wechat: FakeWeChat, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # a command run earlier may quiet httpx
    login = fake_wechat.login_code()
    session = await wechat.code2session(login)
    await wechat.get_phone_number(fake_wechat.phone_code())
    refused = fake_wechat.current_token
    fake_wechat.invalidate_tokens()
    await wechat.get_phone_number(fake_wechat.phone_code())
    assert "errcode=40001" in caplog.text  # the refusal is logged, for on-call
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "/sns/jscode2session" in messages  # httpx did log the requests...
    assert "secret=***" in messages  # ...with the secrets masked
    tokens = (refused, fake_wechat.current_token)
    for secret in (fake_wechat.secret, login, session.session_key, *tokens):
        assert secret and secret not in messages


async def test_subscribe_message_sent_or_refused(fake_wechat: FakeWeChat) -> None:
    fake_wechat.add_user("oSub")
    await wechat.send_subscribe_message(
        "oSub", "TPL_POINTS", {"thing1": "签到奖励", "number2": "10"}, page="pages/points/index"
    )
    assert fake_wechat.sent == [
        {
            "touser": "oSub",
            "template_id": "TPL_POINTS",
            "data": {"thing1": {"value": "签到奖励"}, "number2": {"value": "10"}},
            "miniprogram_state": "formal",
            "lang": "zh_CN",
            "page": "pages/points/index",
        }
    ]
    fake_wechat.refuse("oSub")
    with pytest.raises(MallError) as caught:
        await wechat.send_subscribe_message("oSub", "TPL_POINTS", {"thing1": "x"})
    assert caught.value.code == "WECHAT_USER_REFUSED"
    assert len(fake_wechat.sent) == 1
    assert fake_wechat.calls["stable_token"] == 1
