"""WeChat Pay API v3 (direct merchant, JSAPI), written on httpx + cryptography.

Contract notes (shared/docs/wechat.md section 6):
- requests are signed over `METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n`, so the JSON
  body is serialized once and the very bytes signed are sent (`content=`, never `json=`);
- responses and notifications are verified over `TIMESTAMP\\nNONCE\\nBODY\\n` with the key
  named by `Wechatpay-Serial` (`PUB_KEY_ID_...` = the WeChat Pay public key, otherwise a
  platform-certificate serial); timestamps more than 5 minutes off and
  `WECHATPAY/SIGNTEST/` probes are refused;
- notification resources are AEAD_AES_256_GCM-encrypted with the APIv3 key.

Payments are routed by the first letter of `out_trade_no`: a verified SUCCESS payment
goes to `PAYMENT_HANDLERS[prefix]`, a refund notification to `REFUND_HANDLERS[prefix]`
("T" wallet top-up, "O" mall order); a paying domain exposes its `Handlers` and the
composition root (`mall.app`) passes them to `register`. Handlers are idempotent and
check amount, appid and mchid against their own record; raising makes the notification
answer 5xx so WeChat retries. Key material (mall.wechat.keys) never leaves the wechat
package and is never logged; answers and notifications are checked by mall.wechat.verify."""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from mall.config import get_settings
from mall.errors import ErrorCode, MallError
from mall.i18n import _
from mall.kit import clock
from mall.wechat.keys import PAY_NOT_CONFIGURED as PAY_NOT_CONFIGURED
from mall.wechat.keys import downloaded_keys as downloaded_keys
from mall.wechat.keys import downloads_certificates as downloads_certificates
from mall.wechat.keys import keys as keys
from mall.wechat.verify import MAX_CLOCK_SKEW_SECONDS as MAX_CLOCK_SKEW_SECONDS
from mall.wechat.verify import SIGNTEST_PREFIX as SIGNTEST_PREFIX
from mall.wechat.verify import DecryptionError as DecryptionError
from mall.wechat.verify import UnknownSerial as UnknownSerial
from mall.wechat.verify import VerificationError as VerificationError
from mall.wechat.verify import decrypt_bytes as decrypt_bytes
from mall.wechat.verify import decrypt_resource as decrypt_resource
from mall.wechat.verify import learn_serial as _learn_serial
from mall.wechat.verify import verify_signature as verify_signature

log = logging.getLogger("mall.wechat.pay")

PAY_SIGN_ERROR = ErrorCode(
    "PAY_SIGN_ERROR",
    502,
    _("WeChat Pay refused our request signature; check the merchant key and serial number"),
)
PAY_REQUEST_INVALID = ErrorCode(
    "PAY_REQUEST_INVALID", 502, _("WeChat Pay rejected the request ({wechat_code})")
)
PAY_ORDER_PAID = ErrorCode("PAY_ORDER_PAID", 409, _("This payment has already been made"))
PAY_ORDER_CLOSED = ErrorCode("PAY_ORDER_CLOSED", 409, _("This payment has been closed"))
PAY_ORDER_NOT_FOUND = ErrorCode("PAY_ORDER_NOT_FOUND", 404, _("WeChat Pay has no such payment"))
PAY_NOT_ENOUGH = ErrorCode(
    "PAY_NOT_ENOUGH", 409, _("The merchant account does not hold enough money for this refund")
)
PAY_REFUSED = ErrorCode("PAY_REFUSED", 409, _("WeChat Pay refused this request ({wechat_code})"))
PAY_RATE_LIMITED = ErrorCode(
    "PAY_RATE_LIMITED", 429, _("WeChat Pay is limiting requests; please try again shortly")
)
PAY_BUSY = ErrorCode("PAY_BUSY", 503, _("WeChat Pay is busy; please try again"))
PAY_RESPONSE_INVALID = ErrorCode(
    "PAY_RESPONSE_INVALID", 502, _("WeChat Pay's answer could not be verified")
)
# answers to WeChat Pay's notifications (in its {"code": "FAIL", "message"} shape, with ours)
PAY_NOTIFY_SIGNATURE_INVALID = ErrorCode(
    "PAY_NOTIFY_SIGNATURE_INVALID", 401, _("The notification's signature could not be verified")
)
PAY_NOTIFY_UNDECRYPTABLE = ErrorCode(
    "PAY_NOTIFY_UNDECRYPTABLE", 401, _("The notification's resource could not be decrypted")
)
PAY_NOTIFY_NOT_HANDLED = ErrorCode(
    "PAY_NOTIFY_NOT_HANDLED", 500, _("The notification could not be handled; please retry")
)

# WeChat's error code -> ours (unlisted 4xx -> PAY_REQUEST_INVALID, 5xx -> PAY_BUSY)
_ERRORS: dict[str, ErrorCode] = {
    "SIGN_ERROR": PAY_SIGN_ERROR,
    "ORDERPAID": PAY_ORDER_PAID,
    "ORDER_CLOSED": PAY_ORDER_CLOSED,
    "ORDER_NOT_EXIST": PAY_ORDER_NOT_FOUND,
    "RESOURCE_NOT_EXISTS": PAY_ORDER_NOT_FOUND,
    "NOT_ENOUGH": PAY_NOT_ENOUGH,
    "NO_AUTH": PAY_REFUSED,
    "OUT_TRADE_NO_USED": PAY_REFUSED,
    "RULE_LIMIT": PAY_REFUSED,
    "TRADE_ERROR": PAY_REFUSED,
    "USER_ACCOUNT_ABNORMAL": PAY_REFUSED,
    "FREQUENCY_LIMITED": PAY_RATE_LIMITED,
    "RATELIMIT_EXCEEDED": PAY_RATE_LIMITED,
    "SYSTEM_ERROR": PAY_BUSY,
}
# a refusal that will not change on retry (the caller may undo its side of the work)
FINAL_ERRORS = frozenset(
    {PAY_REQUEST_INVALID, PAY_ORDER_PAID, PAY_ORDER_CLOSED, PAY_ORDER_NOT_FOUND, PAY_REFUSED}
)

SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"


@dataclass(frozen=True)
class PaymentResult:
    """A payment as WeChat Pay reports it (query or notification)."""

    out_trade_no: str
    transaction_id: str
    trade_state: str  # SUCCESS | REFUND | NOTPAY | CLOSED | REVOKED | USERPAYING | PAYERROR
    amount_total_fen: int
    payer_openid: str
    mchid: str
    appid: str
    success_time: datetime | None
    trade_state_desc: str = ""
    attach: str = ""

    @classmethod
    def from_wechat(cls, data: Mapping[str, Any]) -> PaymentResult:
        amount = data.get("amount") or {}
        payer = data.get("payer") or {}
        return cls(
            out_trade_no=str(data.get("out_trade_no", "")),
            transaction_id=str(data.get("transaction_id") or ""),
            trade_state=str(data.get("trade_state", "")),
            amount_total_fen=int(amount.get("total") or 0),
            payer_openid=str(payer.get("openid") or ""),
            mchid=str(data.get("mchid", "")),
            appid=str(data.get("appid", "")),
            success_time=_parse_time(data.get("success_time")),
            trade_state_desc=str(data.get("trade_state_desc") or ""),
            attach=str(data.get("attach") or ""),
        )


@dataclass(frozen=True)
class RefundResult:
    """A refund as WeChat Pay reports it (create, query or notification)."""

    out_refund_no: str
    refund_id: str
    out_trade_no: str
    transaction_id: str
    status: str  # SUCCESS | PROCESSING | CLOSED | ABNORMAL
    refund_fen: int
    total_fen: int
    mchid: str
    success_time: datetime | None
    user_received_account: str = ""

    @classmethod
    def from_wechat(cls, data: Mapping[str, Any]) -> RefundResult:
        amount = data.get("amount") or {}
        return cls(
            out_refund_no=str(data.get("out_refund_no", "")),
            refund_id=str(data.get("refund_id") or ""),
            out_trade_no=str(data.get("out_trade_no", "")),
            transaction_id=str(data.get("transaction_id") or ""),
            # the create/query answer says `status`, the notification `refund_status`
            status=str(data.get("status") or data.get("refund_status") or ""),
            refund_fen=int(amount.get("refund") or 0),
            total_fen=int(amount.get("total") or 0),
            mchid=str(data.get("mchid", "")),
            success_time=_parse_time(data.get("success_time")),
            user_received_account=str(data.get("user_received_account") or ""),
        )


PaymentHandler = Callable[[PaymentResult], Awaitable[None]]
RefundHandler = Callable[[RefundResult], Awaitable[None]]
PAYMENT_HANDLERS: dict[str, PaymentHandler] = {}
REFUND_HANDLERS: dict[str, RefundHandler] = {}


@dataclass(frozen=True)
class Handlers:
    """What a paying domain does with its verified payments and refunds: those whose
    `out_trade_no` starts with `prefix`."""

    prefix: str
    on_paid: PaymentHandler
    on_refund: RefundHandler


def register(handlers: Handlers) -> None:
    PAYMENT_HANDLERS[handlers.prefix] = handlers.on_paid
    REFUND_HANDLERS[handlers.prefix] = handlers.on_refund


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def pay_appid() -> str:
    s = get_settings()
    return s.wechatpay_appid or s.wechat_appid


def attempt_refund_no(out_refund_no: str, attempt: int) -> str:
    """The number WeChat Pay knows a refund attempt by: the first keeps the refund's own
    number; a retry ops start after an ABNORMAL end is `<number>-<attempt>`."""
    return out_refund_no if attempt == 0 else f"{out_refund_no}-{attempt}"


def refund_attempts(wechat_no: str) -> list[tuple[str, int]]:
    """The (refund number, attempt) pairs a number WeChat reports may stand for, in the
    order to look them up (the inverse of `attempt_refund_no`)."""
    pairs = [(wechat_no, 0)]
    base, _dash, attempt = wechat_no.rpartition("-")
    if base and attempt.isdigit():
        pairs.append((base, int(attempt)))
    return pairs


_Refund = TypeVar("_Refund")


async def find_refund_attempts(
    numbers: Iterable[str],
    load: Callable[[set[str]], Awaitable[Mapping[str, _Refund]]],
    attempts: Callable[[_Refund], int],
) -> dict[str, tuple[_Refund, int]]:
    """The refund and attempt each number WeChat reports stands for: one `load` of the
    candidate refund numbers (rows by number), then per number the first candidate whose
    refund has made that attempt (`attempts`: the attempts made). Unknown: left out."""
    pairs = {n: refund_attempts(n) for n in numbers}
    rows = await load({base for options in pairs.values() for base, _attempt in options})
    found: dict[str, tuple[_Refund, int]] = {}
    for number, options in pairs.items():
        for base, attempt in options:
            refund = rows.get(base)
            if refund is not None and attempt <= attempts(refund):
                found[number] = (refund, attempt)
                break
    return found


def is_configured() -> bool:
    try:
        keys()
    except MallError:
        return False
    return bool(pay_appid())


def sign(message: bytes) -> str:
    """SHA256withRSA (PKCS#1 v1.5) with the merchant key, base64."""
    raw = keys().private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(raw).decode()


# --- requests ------------------------------------------------------------------------

_http: httpx.AsyncClient | None = None


def http() -> httpx.AsyncClient:
    global _http
    s = get_settings()
    if _http is None or str(_http.base_url).rstrip("/") != s.wechatpay_api_base.rstrip("/"):
        _http = httpx.AsyncClient(
            base_url=s.wechatpay_api_base, timeout=s.wechatpay_timeout_seconds
        )
    return _http


async def aclose() -> None:
    global _http
    if _http is not None:
        await _http.aclose()
    _http = None


def authorization(method: str, url: str, body: bytes) -> str:
    """The Authorization header for `method url` carrying exactly `body`."""
    s = get_settings()
    timestamp = str(int(clock.now().timestamp()))
    nonce = secrets.token_hex(16).upper()
    message = b"\n".join([method.encode(), url.encode(), timestamp.encode(), nonce.encode(), body])
    signature = sign(message + b"\n")
    return (
        f'{SIGNATURE_TYPE} mchid="{s.wechatpay_mchid}",nonce_str="{nonce}",'
        f'signature="{signature}",timestamp="{timestamp}",serial_no="{s.wechatpay_serial}"'
    )


async def send(
    method: str,
    url: str,
    payload: dict[str, Any] | None = None,
    *,
    accept: str = "application/json",
) -> httpx.Response:
    """Send one signed request (`url` is the path and query, or an absolute URL on a
    WeChat Pay host, signed by its path and query); answers 3xx/4xx/5xx become our errors.
    The answer is NOT verified (bill files come unsigned): see `_request`."""
    s = get_settings()
    keys()  # refuse early when unconfigured
    body = b"" if payload is None else json.dumps(payload, ensure_ascii=False).encode()
    parts = httpx.URL(url)
    signed_url = parts.raw_path.decode() if parts.is_absolute_url else url
    headers = {
        "Authorization": authorization(method, signed_url, body),
        "Accept": accept,
        "Content-Type": "application/json",
        "User-Agent": "mall-wechatpay/1",
    }
    if s.wechatpay_public_key_id:
        headers["Wechatpay-Serial"] = s.wechatpay_public_key_id
    path = signed_url.split("?")[0]
    try:
        response = await http().request(method, url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        log.warning("wechatpay %s %s unreachable: %s", method, path, type(exc).__name__)
        raise PAY_BUSY(retry_after=1) from None
    if response.status_code >= 300:
        raise _error(method, path, response)
    return response


async def _request(method: str, url: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send one signed request; returns the verified JSON body ({} for 204)."""
    response = await send(method, url, payload)
    try:
        try:
            verify_signature(response.headers, response.content)
        except UnknownSerial as exc:
            # a platform certificate we have not seen yet (rotation): fetch, then again
            if not await _learn_serial(exc.serial):
                raise
            verify_signature(response.headers, response.content)
    except VerificationError as exc:
        log.error("wechatpay %s %s answer not verified: %s", method, url.split("?")[0], exc)
        raise PAY_RESPONSE_INVALID() from None
    if response.status_code == 204 or not response.content:
        return {}
    try:
        data = json.loads(response.content)
    except ValueError:
        raise PAY_RESPONSE_INVALID() from None
    if not isinstance(data, dict):
        raise PAY_RESPONSE_INVALID()
    return data


def _error(method: str, path: str, response: httpx.Response) -> MallError:
    try:
        data = json.loads(response.content)
        code = str(data.get("code", "")) if isinstance(data, dict) else ""
        message = str(data.get("message", "")) if isinstance(data, dict) else ""
    except ValueError:
        code, message = "", ""
    error = _ERRORS.get(code)
    if error is None:
        error = PAY_BUSY if response.status_code >= 500 or not code else PAY_REQUEST_INVALID
        if response.status_code == 429:
            error = PAY_RATE_LIMITED
    level = logging.ERROR if error in (PAY_SIGN_ERROR, PAY_REQUEST_INVALID) else logging.WARNING
    log.log(
        level,
        "wechatpay %s %s HTTP %s code=%s message=%s",
        method,
        path,
        response.status_code,
        code or "-",
        message[:200],
    )
    if error in (PAY_BUSY, PAY_RATE_LIMITED):
        return error(retry_after=1, wechat_code=code or str(response.status_code))
    return error(wechat_code=code or str(response.status_code))


# --- the API ---------------------------------------------------------------------------


def request_payment_params(prepay_id: str) -> dict[str, str]:
    """What `wx.requestPayment` takes; paySign covers appId, timeStamp, nonceStr, package."""
    timestamp = str(int(clock.now().timestamp()))
    nonce = secrets.token_hex(16)
    package = f"prepay_id={prepay_id}"
    message = f"{pay_appid()}\n{timestamp}\n{nonce}\n{package}\n".encode()
    return {
        "timeStamp": timestamp,
        "nonceStr": nonce,
        "package": package,
        "signType": "RSA",
        "paySign": sign(message),
    }


async def create_jsapi_payment(
    *,
    out_trade_no: str,
    description: str,
    amount_fen: int,
    openid: str,
    expires_at: datetime,
    attach: str = "",
) -> dict[str, str]:
    """Open a JSAPI payment; returns the `wx.requestPayment` parameters."""
    s = get_settings()
    appid = pay_appid()
    if not appid or not s.wechatpay_notify_url:
        raise PAY_NOT_CONFIGURED()
    payload: dict[str, Any] = {
        "appid": appid,
        "mchid": s.wechatpay_mchid,
        "description": description[:127],
        "out_trade_no": out_trade_no,
        "time_expire": expires_at.astimezone(clock.SHANGHAI).isoformat(timespec="seconds"),
        "notify_url": s.wechatpay_notify_url,
        "amount": {"total": amount_fen, "currency": "CNY"},
        "payer": {"openid": openid},
    }
    if attach:
        payload["attach"] = attach[:128]
    data = await _request("POST", "/v3/pay/transactions/jsapi", payload)
    prepay_id = str(data.get("prepay_id") or "")
    if not prepay_id:
        raise PAY_RESPONSE_INVALID()
    return request_payment_params(prepay_id)


async def query_payment(out_trade_no: str) -> PaymentResult | None:
    """The payment's state at WeChat Pay; None when WeChat never heard of it."""
    mchid = get_settings().wechatpay_mchid
    url = f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}?mchid={quote(mchid)}"
    try:
        data = await _request("GET", url)
    except MallError as exc:
        if exc.error is PAY_ORDER_NOT_FOUND:
            return None
        raise
    return PaymentResult.from_wechat(data)


async def close_payment(out_trade_no: str) -> None:
    """Close an unpaid payment (WeChat answers 204)."""
    await _request(
        "POST",
        f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}/close",
        {"mchid": get_settings().wechatpay_mchid},
    )


async def refund(
    *, out_trade_no: str, out_refund_no: str, refund_fen: int, total_fen: int, reason: str = ""
) -> RefundResult:
    """Refund part or all of a payment; the same out_refund_no is one refund however often
    it is sent."""
    payload: dict[str, Any] = {
        "out_trade_no": out_trade_no,
        "out_refund_no": out_refund_no,
        "amount": {"refund": refund_fen, "total": total_fen, "currency": "CNY"},
    }
    if reason:
        payload["reason"] = reason[:80]
    if get_settings().wechatpay_notify_url:
        payload["notify_url"] = get_settings().wechatpay_notify_url
    data = await _request("POST", "/v3/refund/domestic/refunds", payload)
    return RefundResult.from_wechat(data)


async def query_refund(out_refund_no: str) -> RefundResult | None:
    try:
        data = await _request("GET", f"/v3/refund/domestic/refunds/{quote(out_refund_no, safe='')}")
    except MallError as exc:
        if exc.error is PAY_ORDER_NOT_FOUND:
            return None
        raise
    return RefundResult.from_wechat(data)


# --- notifications ---------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    id: str
    event_type: str
    resource: dict[str, Any]


def open_notification(headers: Mapping[str, str], body: bytes) -> Notification:
    """Verify and decrypt a notification; raises VerificationError (DecryptionError when
    the signature holds but the content does not open)."""
    verify_signature(headers, body)
    try:
        envelope = json.loads(body)
        resource = envelope["resource"]
        event_type = str(envelope["event_type"])
    except (ValueError, KeyError, TypeError):
        raise DecryptionError("malformed notification") from None
    if not isinstance(resource, dict):
        raise DecryptionError("malformed notification")
    return Notification(str(envelope.get("id", "")), event_type, decrypt_resource(resource))


async def receive_notification(headers: Mapping[str, str], body: bytes) -> Notification:
    """`open_notification`, first learning a platform certificate seen for the first time."""
    try:
        return open_notification(headers, body)
    except UnknownSerial as exc:
        if not await _learn_serial(exc.serial):
            raise
    return open_notification(headers, body)


class UnhandledNotification(Exception):
    """Verified, but nobody could take it; WeChat should retry."""


def _handler(handlers: Mapping[str, Any], out_trade_no: str) -> Any:
    return handlers.get(out_trade_no[:1])


async def dispatch(notification: Notification) -> None:
    """Hand a verified notification to its domain. Raises to make WeChat retry."""
    event = notification.event_type
    if event.startswith("TRANSACTION."):
        result = PaymentResult.from_wechat(notification.resource)
        if result.trade_state != "SUCCESS":
            log.info("wechatpay %s for %s ignored", result.trade_state, result.out_trade_no)
            return
        await dispatch_payment(result)
    elif event.startswith("REFUND."):
        refund_result = RefundResult.from_wechat(notification.resource)
        handler = _handler(REFUND_HANDLERS, refund_result.out_trade_no)
        if handler is None:
            raise UnhandledNotification(f"no refund handler for {refund_result.out_trade_no!r}")
        await handler(refund_result)
    else:
        log.info("wechatpay notification %s (%s) ignored", notification.id, event)


async def dispatch_payment(result: PaymentResult) -> None:
    """Give a SUCCESS payment (from a notification or a query) to its domain's handler."""
    handler = _handler(PAYMENT_HANDLERS, result.out_trade_no)
    if handler is None:
        raise UnhandledNotification(f"no payment handler for {result.out_trade_no!r}")
    await handler(result)
