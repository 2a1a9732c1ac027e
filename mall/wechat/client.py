"""The mini-program server API (api.weixin.qq.com), written on httpx.

Contract notes (see shared/docs/wechat.md): errors come as HTTP 200 with `errcode`;
a missing errcode means 0; bodies are JSON whatever the Content-Type; `errmsg`
carries a changing `rid` suffix so it is never compared. `session_key` never leaves
this module's callers and is never logged."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx

from mall.config import get_settings
from mall.errors import ErrorCode
from mall.i18n import _
from mall.redis import get_redis

log = logging.getLogger("mall.wechat")

WECHAT_CODE_INVALID = ErrorCode(
    "WECHAT_CODE_INVALID", 400, _("The WeChat login code is invalid or expired; please try again")
)
WECHAT_CODE_USED = ErrorCode(
    "WECHAT_CODE_USED", 400, _("This WeChat code was already used; please get a new one")
)
WECHAT_RATE_LIMITED = ErrorCode(
    "WECHAT_RATE_LIMITED", 429, _("WeChat is limiting requests; please try again in a minute")
)
WECHAT_BUSY = ErrorCode("WECHAT_BUSY", 503, _("WeChat is busy; please try again"))
WECHAT_USER_BLOCKED = ErrorCode(
    "WECHAT_USER_BLOCKED", 403, _("WeChat refused this login for security reasons")
)
WECHAT_USER_REFUSED = ErrorCode(
    "WECHAT_USER_REFUSED", 409, _("The member has not accepted this message")
)
WECHAT_ERROR = ErrorCode("WECHAT_ERROR", 502, _("WeChat returned an error ({errcode})"))
WECHAT_NOT_CONFIGURED = ErrorCode(
    "WECHAT_NOT_CONFIGURED", 503, _("WeChat login is not configured on this server")
)

TOKEN_ERRORS = {40001, 40014, 42001}
_TOKEN_KEY = "wechat:stable_token"
_TOKEN_LOCK = "wechat:stable_token:lock"


class WeChatAPIError(Exception):
    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"wechat errcode {errcode}")
        self.errcode = errcode
        self.errmsg = errmsg


@dataclass(frozen=True)
class Session:
    openid: str
    session_key: str
    unionid: str | None = None

    def __repr__(self) -> str:  # keep session_key out of logs and tracebacks
        return f"Session(openid={self.openid!r}, unionid={self.unionid!r})"


@dataclass(frozen=True)
class PhoneInfo:
    phone_number: str
    pure_phone_number: str
    country_code: str


_http: httpx.AsyncClient | None = None
_local_token: tuple[str, float] | None = None


def http() -> httpx.AsyncClient:
    global _http
    settings = get_settings()
    if _http is None or str(_http.base_url).rstrip("/") != settings.wechat_api_base.rstrip("/"):
        _http = httpx.AsyncClient(
            base_url=settings.wechat_api_base, timeout=settings.wechat_timeout_seconds
        )
    return _http


async def aclose() -> None:
    global _http, _local_token
    if _http is not None:
        await _http.aclose()
    _http = None
    _local_token = None


def _parse(response: httpx.Response) -> dict[str, Any]:
    try:
        data = json.loads(response.content)
    except ValueError:
        raise WeChatAPIError(-1, f"non-JSON reply (HTTP {response.status_code})") from None
    if not isinstance(data, dict):
        raise WeChatAPIError(-1, "unexpected reply")
    errcode = int(data.get("errcode") or 0)
    if errcode != 0:
        raise WeChatAPIError(errcode, str(data.get("errmsg", "")))
    return data


async def _request(method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    try:
        response = await http().request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        log.warning("wechat %s unreachable: %s", url.split("?")[0], type(exc).__name__)
        raise WECHAT_BUSY() from None
    if response.status_code >= 500:
        raise WECHAT_BUSY()
    return _parse(response)


def _client_error(exc: WeChatAPIError) -> Exception:
    mapping = {
        40029: WECHAT_CODE_INVALID,
        40163: WECHAT_CODE_USED,
        45011: WECHAT_RATE_LIMITED,
        45009: WECHAT_RATE_LIMITED,
        -1: WECHAT_BUSY,
        40226: WECHAT_USER_BLOCKED,
        43101: WECHAT_USER_REFUSED,
    }
    error = mapping.get(exc.errcode)
    if error is None:
        log.error("wechat errcode=%s", exc.errcode)
        return WECHAT_ERROR(errcode=exc.errcode)
    return error()


def _require_config() -> tuple[str, str]:
    settings = get_settings()
    if not settings.wechat_appid or not settings.wechat_secret:
        raise WECHAT_NOT_CONFIGURED()
    return settings.wechat_appid, settings.wechat_secret


async def code2session(code: str) -> Session:
    appid, secret = _require_config()
    try:
        data = await _request(
            "GET",
            "/sns/jscode2session",
            params={
                "appid": appid,
                "secret": secret,
                "js_code": code,
                "grant_type": "authorization_code",
            },
        )
    except WeChatAPIError as exc:
        raise _client_error(exc) from None
    if not data.get("openid") or not data.get("session_key"):
        raise WECHAT_ERROR(errcode=-1)
    return Session(
        openid=str(data["openid"]),
        session_key=str(data["session_key"]),
        unionid=data.get("unionid"),
    )


async def _fetch_stable_token() -> tuple[str, int]:
    appid, secret = _require_config()
    body = {
        "grant_type": "client_credential",
        "appid": appid,
        "secret": secret,
        "force_refresh": False,
    }
    try:
        data = await _request("POST", "/cgi-bin/stable_token", json=body)
    except WeChatAPIError as exc:
        raise _client_error(exc) from None
    return str(data["access_token"]), int(data.get("expires_in", 7200))


async def access_token(*, refresh: bool = False) -> str:
    """A stable_token shared through Redis by every process, refreshed ~5 min before
    expiry, fetched by one caller at a time (single flight)."""
    global _local_token
    now = time.time()
    if not refresh and _local_token and _local_token[1] > now:
        return _local_token[0]
    redis = get_redis()
    if not refresh:
        cached = await redis.get(_TOKEN_KEY)
        if cached:
            ttl = await redis.ttl(_TOKEN_KEY)
            _local_token = (str(cached), now + max(ttl, 0))
            return str(cached)
    for _attempt in range(50):
        if await redis.set(_TOKEN_LOCK, "1", nx=True, ex=10):
            try:
                if not refresh:
                    cached = await redis.get(_TOKEN_KEY)
                    if cached:
                        return str(cached)
                token, expires_in = await _fetch_stable_token()
                keep = max(expires_in - 300, 30)
                await redis.set(_TOKEN_KEY, token, ex=keep)
                _local_token = (token, now + keep)
                return token
            finally:
                await redis.delete(_TOKEN_LOCK)
        await asyncio.sleep(0.1)
        cached = await redis.get(_TOKEN_KEY)
        if cached and not refresh:
            return str(cached)
    raise WECHAT_BUSY()


async def invalidate_token() -> None:
    global _local_token
    _local_token = None
    await get_redis().delete(_TOKEN_KEY)


async def call_with_token(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST with `?access_token=`; on 40001/40014/42001 refetch once and retry once."""
    token = await access_token()
    try:
        return await _request("POST", path, params={"access_token": token}, json=body)
    except WeChatAPIError as exc:
        if exc.errcode not in TOKEN_ERRORS:
            raise
    await invalidate_token()
    token = await access_token(refresh=True)
    return await _request("POST", path, params={"access_token": token}, json=body)


async def get_phone_number(code: str, openid: str | None = None) -> PhoneInfo:
    body: dict[str, Any] = {"code": code}
    if openid:
        body["openid"] = openid
    try:
        data = await call_with_token("/wxa/business/getuserphonenumber", body)
    except WeChatAPIError as exc:
        raise _client_error(exc) from None
    info = data.get("phone_info") or {}
    return PhoneInfo(
        phone_number=str(info.get("phoneNumber", "")),
        pure_phone_number=str(info.get("purePhoneNumber", "")),
        country_code=str(info.get("countryCode", "")),  # documented string, example number
    )


async def send_subscribe_message(
    openid: str,
    template_id: str,
    data: dict[str, str],
    *,
    page: str | None = None,
    state: str = "formal",
    lang: str = "zh_CN",
) -> None:
    """Send one subscribe message. Raises WECHAT_USER_REFUSED on 43101 (don't retry)."""
    body: dict[str, Any] = {
        "touser": openid,
        "template_id": template_id,
        "data": {k: {"value": v} for k, v in data.items()},
        "miniprogram_state": state,
        "lang": lang,
    }
    if page:
        body["page"] = page
    try:
        await call_with_token("/cgi-bin/message/subscribe/send", body)
    except WeChatAPIError as exc:
        raise _client_error(exc) from None
