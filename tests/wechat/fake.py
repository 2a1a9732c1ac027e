"""A fake api.weixin.qq.com for tests, served by uvicorn on 127.0.0.1 (free port) in a
background thread, following the contract in shared/docs/wechat.md byte for byte:

- errors are HTTP 200 `{"errcode":N,"errmsg":"... rid: xxxx"}`; jscode2session success
  omits errcode and is sent as text/plain (`session_content_type`);
- login and phone codes work once and live 5 minutes (time is `mall.kit.clock`, so
  `clock.advance` ages codes and tokens too);
- stable_token takes a JSON body only, returns the same token while valid (expires_in
  between 300 and 7200), issues a new one in the last 5 minutes (old one still works),
  and `force_refresh` revokes the old one at once.

Use the `fake_wechat` fixture (it points settings at the fake and restores them):

    async def test_x(client, fake_wechat: FakeWeChat) -> None:
        code = fake_wechat.login_code()
        ...
        assert fake_wechat.calls["stable_token"] == 1

Other test folders get the fixtures with
`from tests.wechat.fake import fake_wechat, fake_wechat_server  # noqa: F401`
in their conftest.py. Endpoint names for `calls`, `fail` and `minute_quota`:
"jscode2session", "stable_token", "getuserphonenumber", "subscribe_send".
"""

from __future__ import annotations

import json
import secrets
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mall.config import Settings
from mall.kit import clock
from mall.wechat import client as wechat_client
from tests.threaded_server import ThreadedServer

CODE_TTL = 300
TOKEN_TTL = 7200
TOKEN_OVERLAP = 300
FORCE_REFRESH_PER_DAY = 20

# errmsg texts as WeChat sends them (before the " rid: ..." suffix)
ERRMSG = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40013: "invalid appid",
    40014: "invalid access_token",
    40029: "invalid code",
    40037: "invalid template_id",
    40125: "invalid appsecret",
    40163: "code been used",
    40226: "code blocked",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    41008: "missing code",
    41030: "invalid page",
    42001: "access_token expired",
    43002: "require POST method",
    43101: "user refuse to accept the msg",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit  mustslower  retry next minute",
    47001: "data format error",
    47003: "argument invalid!",
}

# subscribe-message value limits by the kind named in the key (thing1, phrase3, ...)
VALUE_LIMITS = {
    "thing": 20,
    "character_string": 32,
    "number": 32,
    "letter": 32,
    "symbol": 5,
    "phrase": 5,
    "name": 10,
    "amount": 32,
    "car_number": 8,
    "phone_number": 17,
    "time": 64,
    "date": 64,
}


@dataclass
class LoginCode:
    openid: str
    session_key: str
    unionid: str | None
    expires_at: float
    used: bool = False


@dataclass
class PhoneCode:
    phone: str
    country_code: str | int
    openid: str | None
    expires_at: float
    used: bool = False


@dataclass
class Token:
    value: str
    expires_at: float
    revoked: bool = False


@dataclass
class Recorded:
    endpoint: str
    method: str
    query: dict[str, str]
    body: bytes
    content_type: str


@dataclass
class State:
    calls: Counter[str] = field(default_factory=Counter)
    requests: list[Recorded] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    login_codes: dict[str, LoginCode] = field(default_factory=dict)
    phone_codes: dict[str, PhoneCode] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    current: Token | None = None
    users: set[str] = field(default_factory=set)
    refused: set[tuple[str, str | None]] = field(default_factory=set)
    templates: dict[str, set[str]] = field(default_factory=dict)
    pages: set[str] | None = None
    failures: dict[str, list[int]] = field(default_factory=dict)
    minute_calls: dict[tuple[str, int], int] = field(default_factory=dict)
    force_refreshes: dict[int, int] = field(default_factory=dict)


def _now() -> float:
    return clock.now().timestamp()


def _rid() -> str:
    return "-".join(secrets.token_hex(4) for _ in range(3))


def _json(
    payload: dict[str, Any], media_type: str = "application/json; encoding=utf-8"
) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=200, headers={"content-type": media_type})


def _error(errcode: int, detail: str = "") -> Response:
    message = ERRMSG.get(errcode, "error") + (f" {detail}" if detail else "")
    return _json({"errcode": errcode, "errmsg": f"{message} rid: {_rid()}"})


class _Refused(Exception):
    def __init__(self, errcode: int, detail: str = "") -> None:
        self.errcode = errcode
        self.detail = detail


class FakeWeChat:
    """State and behaviour of the fake. Tests read `calls`, `requests`, `sent` and steer
    it with the helper methods; knobs: `busy`, `minute_quota`, `session_content_type`,
    `accept_any_user`."""

    def __init__(self, appid: str = "wx0fake0000000001", secret: str = "") -> None:
        self.appid = appid
        self.secret = secret or "fakesecret" + secrets.token_hex(11)
        self.base_url = ""
        self._lock = threading.Lock()
        self.reset()
        self.app = Starlette(
            routes=[
                Route("/sns/jscode2session", self._jscode2session, methods=["GET", "POST"]),
                Route("/cgi-bin/stable_token", self._stable_token, methods=["GET", "POST"]),
                Route(
                    "/wxa/business/getuserphonenumber", self._phone_number, methods=["GET", "POST"]
                ),
                Route(
                    "/cgi-bin/message/subscribe/send", self._subscribe_send, methods=["GET", "POST"]
                ),
            ]
        )

    def reset(self) -> None:
        with self._lock:
            self.state = State()
            self.busy = False  # every endpoint answers -1 "system error"
            self.minute_quota: dict[str, int] = {}  # endpoint -> calls per minute, then 45011
            self.session_content_type = "text/plain"
            self.accept_any_user = False  # subscribe/send to openids the fake never issued

    # --- what tests read --------------------------------------------------------------

    @property
    def calls(self) -> Counter[str]:
        return self.state.calls

    @property
    def requests(self) -> list[Recorded]:
        return self.state.requests

    @property
    def sent(self) -> list[dict[str, Any]]:
        """Subscribe messages WeChat accepted, as posted."""
        return self.state.sent

    @property
    def current_token(self) -> str | None:
        return self.state.current.value if self.state.current else None

    # --- how tests steer it -----------------------------------------------------------

    def login_code(self, openid: str | None = None, *, unionid: str | None = None) -> str:
        """A fresh wx.login code for `openid` (a new user if None)."""
        openid = openid or "o" + secrets.token_urlsafe(20)[:27]
        code = secrets.token_urlsafe(24)[:32]
        with self._lock:
            self.state.login_codes[code] = LoginCode(
                openid=openid,
                session_key=secrets.token_urlsafe(16)[:24] + "==",
                unionid=unionid,
                expires_at=_now() + CODE_TTL,
            )
            self.state.users.add(openid)
        return code

    def session_key(self, code: str) -> str:
        return self.state.login_codes[code].session_key

    def phone_code(
        self,
        phone: str = "13800138000",
        *,
        country_code: str | int = "86",
        openid: str | None = None,
    ) -> str:
        """A getPhoneNumber button code; `country_code` may be a number, as WeChat's own
        example sends it. With `openid`, a request naming another openid is refused."""
        code = secrets.token_hex(16)
        with self._lock:
            self.state.phone_codes[code] = PhoneCode(
                phone=phone, country_code=country_code, openid=openid, expires_at=_now() + CODE_TTL
            )
        return code

    def add_user(self, openid: str) -> None:
        with self._lock:
            self.state.users.add(openid)

    def refuse(self, openid: str, template_id: str | None = None) -> None:
        """The member refused (or used up) subscriptions: 43101 for that template (or all)."""
        with self._lock:
            self.state.refused.add((openid, template_id))

    def add_template(self, template_id: str, *keys: str) -> None:
        """Once any template is registered, unknown template ids give 40037 and missing
        keys 47003."""
        with self._lock:
            self.state.templates[template_id] = set(keys)

    def set_pages(self, *pages: str) -> None:
        with self._lock:
            self.state.pages = set(pages)

    def fail(self, endpoint: str, errcode: int, times: int = 1) -> None:
        """The next `times` calls to `endpoint` answer `errcode` (after argument checks)."""
        with self._lock:
            self.state.failures.setdefault(endpoint, []).extend([errcode] * times)

    def expire_tokens(self) -> None:
        """Every issued access_token is now past its expiry (42001)."""
        with self._lock:
            for token in self.state.tokens.values():
                token.expires_at = min(token.expires_at, _now())

    def invalidate_tokens(self) -> None:
        """As if someone force-refreshed elsewhere: old tokens give 40001."""
        with self._lock:
            for token in self.state.tokens.values():
                token.revoked = True

    # --- plumbing ---------------------------------------------------------------------

    async def _record(self, endpoint: str, request: Request) -> bytes:
        body = await request.body()
        with self._lock:
            self.state.calls[endpoint] += 1
            self.state.requests.append(
                Recorded(
                    endpoint=endpoint,
                    method=request.method,
                    query=dict(request.query_params),
                    body=body,
                    content_type=request.headers.get("content-type", ""),
                )
            )
        return body

    def _gate(self, endpoint: str) -> None:
        """Busy mode, injected failures and the per-minute quota; call under the lock."""
        if self.busy:
            raise _Refused(-1)
        queued = self.state.failures.get(endpoint)
        if queued:
            raise _Refused(queued.pop(0))
        limit = self.minute_quota.get(endpoint)
        if limit is not None:
            minute = int(_now() // 60)
            used = self.state.minute_calls.get((endpoint, minute), 0)
            if used >= limit:
                raise _Refused(45011)
            self.state.minute_calls[(endpoint, minute)] = used + 1

    def _check_app(self, appid: Any, secret: Any) -> None:
        if not appid:
            raise _Refused(41002)
        if not secret:
            raise _Refused(41004)
        if appid != self.appid:
            raise _Refused(40013)
        if secret != self.secret:
            raise _Refused(40125)

    def _check_token(self, request: Request) -> None:
        value = request.query_params.get("access_token")
        if not value:
            raise _Refused(41001)
        token = self.state.tokens.get(value)
        if token is None:
            raise _Refused(40014)
        if token.revoked:
            raise _Refused(40001)
        if token.expires_at <= _now():
            raise _Refused(42001)

    @staticmethod
    def _json_body(body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body)
        except ValueError:
            raise _Refused(47001) from None
        if not isinstance(data, dict):
            raise _Refused(47001)
        return data

    async def _jscode2session(self, request: Request) -> Response:
        await self._record("jscode2session", request)
        if request.method != "GET":
            return _error(43002)  # real: "require GET method"; close enough for a client bug
        q = request.query_params
        try:
            with self._lock:
                self._check_app(q.get("appid"), q.get("secret"))
                if q.get("grant_type") != "authorization_code":
                    raise _Refused(40002)
                code = q.get("js_code")
                if not code:
                    raise _Refused(41008)
                self._gate("jscode2session")
                entry = self.state.login_codes.get(code)
                if entry is None or entry.expires_at <= _now():
                    raise _Refused(40029)
                if entry.used:
                    raise _Refused(40163)
                entry.used = True
        except _Refused as refused:
            return _error(refused.errcode, refused.detail)
        reply: dict[str, Any] = {"session_key": entry.session_key, "openid": entry.openid}
        if entry.unionid:
            reply["unionid"] = entry.unionid
        return _json(reply, self.session_content_type)

    async def _stable_token(self, request: Request) -> Response:
        body = await self._record("stable_token", request)
        if request.method != "POST":
            return _error(43002)
        try:
            # JSON body only: a form body or query string means no appid is found
            try:
                data = json.loads(body)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise _Refused(41002)
            with self._lock:
                self._check_app(data.get("appid"), data.get("secret"))
                if data.get("grant_type") != "client_credential":
                    raise _Refused(40002)
                force = data.get("force_refresh", False)
                if not isinstance(force, bool):
                    raise _Refused(47001)
                self._gate("stable_token")
                now = _now()
                current = self.state.current
                if force:
                    day = int(now // 86400)
                    if self.state.force_refreshes.get(day, 0) >= FORCE_REFRESH_PER_DAY:
                        raise _Refused(45009)
                    self.state.force_refreshes[day] = self.state.force_refreshes.get(day, 0) + 1
                    for token in self.state.tokens.values():
                        token.revoked = True
                if (
                    force
                    or current is None
                    or current.revoked
                    or current.expires_at - now <= TOKEN_OVERLAP
                ):
                    value = f"{secrets.randbelow(90) + 10}_{secrets.token_urlsafe(120)}"
                    current = Token(value=value, expires_at=now + TOKEN_TTL)
                    self.state.tokens[value] = current
                    self.state.current = current
                expires_in = int(current.expires_at - now)
        except _Refused as refused:
            return _error(refused.errcode, refused.detail)
        return _json({"access_token": current.value, "expires_in": expires_in})

    async def _phone_number(self, request: Request) -> Response:
        body = await self._record("getuserphonenumber", request)
        if request.method != "POST":
            return _error(43002)
        try:
            with self._lock:
                self._check_token(request)
                data = self._json_body(body)
                code = data.get("code")
                if not code or not isinstance(code, str):
                    raise _Refused(41008)
                self._gate("getuserphonenumber")
                entry = self.state.phone_codes.get(code)
                if entry is None or entry.used or entry.expires_at <= _now():
                    raise _Refused(40029)
                if data.get("openid") and entry.openid and data["openid"] != entry.openid:
                    raise _Refused(40029)
                entry.used = True
        except _Refused as refused:
            return _error(refused.errcode, refused.detail)
        country = str(entry.country_code)
        return _json(
            {
                "errcode": 0,
                "errmsg": "ok",
                "phone_info": {
                    "phoneNumber": entry.phone if country == "86" else f"+{country}{entry.phone}",
                    "purePhoneNumber": entry.phone,
                    "countryCode": entry.country_code,
                    "watermark": {"timestamp": int(_now()), "appid": self.appid},
                },
            }
        )

    async def _subscribe_send(self, request: Request) -> Response:
        body = await self._record("subscribe_send", request)
        if request.method != "POST":
            return _error(43002)
        try:
            with self._lock:
                self._check_token(request)
                data = self._json_body(body)
                self._check_message(data)
                self._gate("subscribe_send")
                touser, template_id = data["touser"], data["template_id"]
                if (touser, None) in self.state.refused or (
                    touser,
                    template_id,
                ) in self.state.refused:
                    raise _Refused(43101)
                self.state.sent.append(data)
                msgid = len(self.state.sent) + 1_000_000
        except _Refused as refused:
            return _error(refused.errcode, refused.detail)
        return _json({"errcode": 0, "errmsg": "ok", "msgid": msgid})

    def _check_message(self, data: dict[str, Any]) -> None:
        touser = data.get("touser")
        if not touser or not isinstance(touser, str):
            raise _Refused(40003)
        if not self.accept_any_user and touser not in self.state.users:
            raise _Refused(40003)
        template_id = data.get("template_id")
        if not template_id or not isinstance(template_id, str):
            raise _Refused(40037)
        if self.state.templates and template_id not in self.state.templates:
            raise _Refused(40037)
        values = data.get("data")
        if not isinstance(values, dict):
            raise _Refused(47003, "data is empty")
        for key in sorted(self.state.templates.get(template_id, set())):
            if key not in values:
                raise _Refused(47003, f"data.{key}.value is empty")
        for key, item in values.items():
            if not isinstance(item, dict) or not isinstance(item.get("value"), str):
                raise _Refused(47003, f"data.{key}.value is empty")
            value = item["value"]
            if not value:
                raise _Refused(47003, f"data.{key}.value is empty")
            kind = key.rstrip("0123456789")
            limit = VALUE_LIMITS.get(kind)
            if limit is not None and len(value) > limit:
                raise _Refused(47003, f"data.{key}.value exceeds limit")
        page = data.get("page")
        if page is not None:
            if not isinstance(page, str):
                raise _Refused(41030)
            if self.state.pages is not None and page.split("?")[0] not in self.state.pages:
                raise _Refused(41030)
        if data.get("miniprogram_state", "formal") not in ("developer", "trial", "formal"):
            raise _Refused(47001)
        if data.get("lang", "zh_CN") not in ("zh_CN", "en_US", "zh_HK", "zh_TW"):
            raise _Refused(47001)


class FakeWeChatServer(ThreadedServer):
    """Serves a FakeWeChat with uvicorn on 127.0.0.1 in a daemon thread."""

    def __init__(self, fake: FakeWeChat | None = None) -> None:
        self.fake = fake or FakeWeChat()
        super().__init__(self.fake.app, "fake-wechat")

    def start(self) -> None:
        super().start()
        self.fake.base_url = self.url


_server: FakeWeChatServer | None = None


@pytest.fixture(scope="session")
def fake_wechat_server() -> Iterator[FakeWeChatServer]:
    """One server per test run, however many conftests import this fixture."""
    global _server
    if _server is None:
        _server = FakeWeChatServer()
        _server.start()
    yield _server
    if _server is not None:
        _server.stop()
        _server = None


@pytest.fixture
async def fake_wechat(
    fake_wechat_server: FakeWeChatServer, settings: Settings
) -> AsyncIterator[FakeWeChat]:
    """A freshly reset fake with settings.wechat_* pointing at it; restored afterwards.
    The client's httpx client and cached tokens (in-process and in Redis) are dropped
    on both sides, since the fake forgets its tokens on reset."""
    fake = fake_wechat_server.fake
    fake.reset()
    saved = (settings.wechat_api_base, settings.wechat_appid, settings.wechat_secret)
    settings.wechat_api_base = fake_wechat_server.url
    settings.wechat_appid = fake.appid
    settings.wechat_secret = fake.secret
    await _forget_tokens()
    try:
        yield fake
    finally:
        await _forget_tokens()
        settings.wechat_api_base, settings.wechat_appid, settings.wechat_secret = saved
        fake.reset()


async def _forget_tokens() -> None:
    await wechat_client.aclose()
    try:
        await wechat_client.invalidate_token()
    except RuntimeError:  # a nodb test: Redis is not connected
        pass
