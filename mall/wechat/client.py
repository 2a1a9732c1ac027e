"""The mini-program server API (api.weixin.qq.com), written on httpx.

Contract notes (see shared/docs/wechat.md): errors come as HTTP 200 with `errcode`;
a missing errcode means 0; bodies are JSON whatever the Content-Type; `errmsg`
carries a changing `rid` suffix so it is never compared. `session_key` never leaves
this module's callers and is never logged."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx

from mall.config import get_settings
from mall.errors import ErrorCode
from mall.i18n import _
from mall.kit import clock, lock
from mall.redis import get_redis

log = logging.getLogger("mall.wechat")

_SECRET_QUERY = re.compile(r"\b(secret|access_token|js_code)=[^&\s\"']*")


class _RedactSecrets(logging.Filter):
    """httpx logs every request URL at INFO; ours carry the app secret, login codes and
    access tokens in the query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET_QUERY.sub(r"\1=***", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


logging.getLogger("httpx").addFilter(_RedactSecrets())

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
# Refresh this long before WeChat's expiry: the platform renews 5 min early and both
# tokens work during that overlap.
TOKEN_REFRESH_MARGIN = 300


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
# appid -> (token, refresh_at as clock epoch seconds); Redis holds the shared copy.
_local_tokens: dict[str, tuple[str, float]] = {}


def http() -> httpx.AsyncClient:
    global _http
    settings = get_settings()
    if _http is None or str(_http.base_url).rstrip("/") != settings.wechat_api_base.rstrip("/"):
        _http = httpx.AsyncClient(
            base_url=settings.wechat_api_base, timeout=settings.wechat_timeout_seconds
        )
    return _http


async def aclose() -> None:
    global _http
    if _http is not None:
        await _http.aclose()
    _http = None
    _local_tokens.clear()


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
        raise WECHAT_BUSY(retry_after=1) from None
    if response.status_code >= 500:
        log.warning("wechat %s HTTP %s", url.split("?")[0], response.status_code)
        raise WECHAT_BUSY(retry_after=1)
    try:
        return _parse(response)
    except WeChatAPIError as exc:
        # errmsg carries WeChat's rid, which WeChat support asks for; it holds no secrets
        log.warning("wechat %s errcode=%s errmsg=%s", url, exc.errcode, exc.errmsg)
        raise


def _client_error(exc: WeChatAPIError) -> Exception:
    mapping = {
        40029: WECHAT_CODE_INVALID,
        40163: WECHAT_CODE_USED,
        45009: WECHAT_RATE_LIMITED,
        40226: WECHAT_USER_BLOCKED,
        43101: WECHAT_USER_REFUSED,
    }
    if exc.errcode == 45011:  # per-minute quota
        return WECHAT_RATE_LIMITED(retry_after=60)
    if exc.errcode == -1:
        return WECHAT_BUSY(retry_after=1)
    error = mapping.get(exc.errcode)
    if error is None:
        log.error("wechat errcode=%s errmsg=%s", exc.errcode, exc.errmsg)
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


def _token_key(appid: str) -> str:
    return f"wechat:{appid}:stable_token"


def _usable(raw: str | bytes | None, stale: str | None) -> tuple[str, float] | None:
    if not raw:
        return None
    try:
        entry = json.loads(raw)
        token, refresh_at = str(entry["token"]), float(entry["refresh_at"])
    except (ValueError, KeyError, TypeError):
        return None
    if token == stale or refresh_at <= clock.now().timestamp():
        return None
    return token, refresh_at


async def access_token(*, stale: str | None = None) -> str:
    """The stable_token, shared through Redis by every process and refreshed
    TOKEN_REFRESH_MARGIN seconds before it expires; one caller fetches at a time.

    `stale` is a token WeChat just refused (40001/40014/42001): any other cached token is
    used, so many callers hitting the same refusal cause one fetch, not one each."""
    appid, _secret = _require_config()
    local = _local_tokens.get(appid)
    if local and local[0] != stale and local[1] > clock.now().timestamp():
        return local[0]
    redis = get_redis()
    key = _token_key(appid)
    lock_seconds = int(get_settings().wechat_timeout_seconds) + 5
    deadline = time.monotonic() + lock_seconds + 1  # outlive a crashed holder's lock
    while True:
        found = _usable(await redis.get(key), stale)
        if found:
            _local_tokens[appid] = found
            return found[0]
        async with lock.held(key + ":lock", lock_seconds) as mine:
            if mine:
                found = _usable(await redis.get(key), stale)
                if found:
                    _local_tokens[appid] = found
                    return found[0]
                token, expires_in = await _fetch_stable_token()
                refresh_at = clock.now().timestamp() + max(
                    expires_in - TOKEN_REFRESH_MARGIN, min(expires_in, 30)
                )
                entry = json.dumps({"token": token, "refresh_at": refresh_at})
                await redis.set(key, entry, ex=max(expires_in, 1))
                _local_tokens[appid] = (token, refresh_at)
                return token
        if time.monotonic() > deadline:
            raise WECHAT_BUSY(retry_after=1)
        await asyncio.sleep(0.05)


async def invalidate_token() -> None:
    """Forget the cached token everywhere (e.g. after rotating the app secret)."""
    appid, _secret = _require_config()
    _local_tokens.pop(appid, None)
    await get_redis().delete(_token_key(appid))


async def call_with_token(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST with `?access_token=`; on 40001/40014/42001 get a fresh token once and retry
    once. A second refusal is raised, never retried again."""
    token = await access_token()
    try:
        return await _request("POST", path, params={"access_token": token}, json=body)
    except WeChatAPIError as exc:
        if exc.errcode not in TOKEN_ERRORS:
            raise
    token = await access_token(stale=token)
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
    if not info.get("purePhoneNumber") and not info.get("phoneNumber"):
        log.error("wechat getuserphonenumber replied without phone_info")
        raise WECHAT_ERROR(errcode=-1)
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
