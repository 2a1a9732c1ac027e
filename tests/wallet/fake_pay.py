"""A fake WeChat Pay v3 (api.mch.weixin.qq.com) for tests, served by uvicorn on 127.0.0.1
in a background thread, following shared/docs/wechat.md section 6:

- every request must carry `Authorization: WECHATPAY2-SHA256-RSA2048 mchid=...,...`
  signed over `METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n` (the bytes received) with
  the merchant key; anything else is `401 SIGN_ERROR` (with `truncated_sign_message`);
- answers are signed with the fake's own "WeChat Pay public key" (`PUB_KEY_ID_...`);
- errors are 4xx/5xx `{"code","message"}`; close answers 204;
- notifications are built like the real ones: the resource AEAD_AES_256_GCM-encrypted
  with the APIv3 key, `timestamp\\nnonce\\nbody\\n` signed with the fake's key.

Key pairs (merchant, WeChat Pay public key, a platform certificate, a forger) are
generated at test time with `cryptography`; the PEMs go to a temporary folder.

Use it from any test folder: in your conftest.py

    from tests.wallet.fake_pay import fake_pay, fake_pay_server  # noqa: F401

then in a test

    async def test_x(client, fake_pay: FakePay) -> None:
        ...  # something creates a payment, e.g. POST /api/v1/wallet/top-ups
        resource = fake_pay.pay("T...")            # the member pays; returns the transaction
        headers, body = fake_pay.notification(resource)
        r = await client.post("/api/v1/wechat/pay-notify", headers=headers, content=body)
        assert r.status_code == 204

`fake_pay` points settings.wechatpay_* (and an appid) at the fake for the test and
restores them afterwards. See FakePay for the knobs (`fail`, `refund_status`, ...).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import secrets
import tempfile
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mall.config import Settings
from mall.kit import clock
from mall.wechat import pay as wechat_pay
from tests.threaded_server import ThreadedServer

NOTIFY_PATH = "/api/v1/wechat/pay-notify"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def rsa_sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def issue_certificate(
    key: rsa.RSAPrivateKey,
    ca_key: rsa.RSAPrivateKey,
    ca_cert: x509.Certificate,
    *,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A platform certificate as WeChat Pay's are: issued by the (here: test) Tenpay CA."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tenpay.com"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Tenpay.com CA Center"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com sign"),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(ca_key, hashes.SHA256())
    )


def _self_signed(key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA (fake)")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def _now() -> int:
    return int(clock.now().timestamp())


def _wechat_time(moment: datetime | None = None) -> str:
    return (moment or clock.now()).astimezone(clock.SHANGHAI).isoformat(timespec="seconds")


@dataclass
class FakeOrder:
    appid: str
    mchid: str
    out_trade_no: str
    description: str
    amount: int
    openid: str
    notify_url: str
    time_expire: str
    attach: str
    prepay_id: str
    body: bytes
    trade_state: str = "NOTPAY"
    transaction_id: str = ""
    success_time: str = ""
    refunded: int = 0


@dataclass
class FakeRefund:
    out_refund_no: str
    out_trade_no: str
    refund_id: str
    refund: int
    total: int
    reason: str
    status: str
    create_time: str
    success_time: str = ""


@dataclass
class Recorded:
    endpoint: str
    method: str
    url: str
    body: bytes
    headers: dict[str, str]
    status: int = 0


@dataclass
class State:
    calls: Counter[str] = field(default_factory=Counter)
    requests: list[Recorded] = field(default_factory=list)
    orders: dict[str, FakeOrder] = field(default_factory=dict)
    refunds: dict[str, FakeRefund] = field(default_factory=dict)
    failures: dict[str, list[tuple[int, str]]] = field(default_factory=dict)


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str = "", detail: Any = None) -> None:
        self.status = status
        self.code = code
        self.message = message or code
        self.detail = detail


class FakePay:
    """The fake's state and behaviour. Tests read `orders`, `refunds`, `calls`,
    `requests`; steer it with `pay`, `fail`, `refund_status`, `settle_refund`; build
    notifications with `notification` / `refund_notification`; and get keys and
    paths from `mchid`, `appid`, `apiv3_key`, `merchant_key`, `key_dir`."""

    def __init__(self) -> None:
        self.mchid = "1900000109"
        self.appid = "wx0fakepay0000001"
        self.serial = secrets.token_hex(20).upper()  # merchant API certificate serial
        self.apiv3_key = secrets.token_hex(16)  # 32 characters
        self.public_key_id = "PUB_KEY_ID_" + secrets.token_hex(12).upper()
        self.merchant_key = new_key()
        self.wechat_key = new_key()  # "WeChat Pay public key" mode
        # a test "Tenpay.com Root CA" and the platform certificate it issued (certificate
        # mode; valid over any day the tests freeze the clock at)
        self.ca_key = new_key()
        self.ca_cert = _self_signed(self.ca_key)
        self.platform_key = new_key()
        self.platform_cert = issue_certificate(
            self.platform_key,
            self.ca_key,
            self.ca_cert,
            not_before=datetime(2020, 1, 1, tzinfo=UTC),
            not_after=datetime(2045, 1, 1, tzinfo=UTC),
        )
        self.platform_serial = format(self.platform_cert.serial_number, "X")
        self.forger_key = new_key()
        self.key_dir = Path(tempfile.mkdtemp(prefix="fake-wechatpay-"))
        self.private_key_path = self._write("apiclient_key.pem", private_pem(self.merchant_key))
        self.public_key_path = self._write("pub_key.pem", public_pem(self.wechat_key))
        self.platform_cert_path = self._write(
            "wechatpay_platform.pem", self.platform_cert.public_bytes(serialization.Encoding.PEM)
        )
        self.wrong_merchant_key_path = self._write("wrong_key.pem", private_pem(new_key()))
        self.ca_path = self._write(
            "tenpay_root_ca.pem", self.ca_cert.public_bytes(serialization.Encoding.PEM)
        )
        self.base_url = ""
        self._lock = threading.Lock()
        self.reset()
        self.app = Starlette(
            routes=[
                Route("/v3/pay/transactions/jsapi", self._jsapi, methods=["POST"]),
                Route(
                    "/v3/pay/transactions/out-trade-no/{no}",
                    self._query,
                    methods=["GET"],
                ),
                Route(
                    "/v3/pay/transactions/out-trade-no/{no}/close",
                    self._close,
                    methods=["POST"],
                ),
                Route("/v3/refund/domestic/refunds", self._refund, methods=["POST"]),
                Route("/v3/refund/domestic/refunds/{no}", self._refund_query, methods=["GET"]),
                Route("/v3/certificates", self._certificates, methods=["GET"]),
                Route("/v3/bill/tradebill", self._tradebill, methods=["GET"]),
                Route("/v3/billdownload/file", self._bill_file, methods=["GET"]),
            ]
        )

    def _write(self, name: str, data: bytes) -> Path:
        path = self.key_dir / name
        path.write_bytes(data)
        return path

    def reset(self) -> None:
        with self._lock:
            self.state = State()
            self.refund_status = "PROCESSING"  # what a new refund answers
            self.sign_responses = True
            self.response_key: rsa.RSAPrivateKey = self.wechat_key  # to forge answers
            self.response_serial = self.public_key_id
            # what /v3/certificates lists: (key, certificate) pairs
            self.certificates: list[tuple[rsa.RSAPrivateKey, x509.Certificate]] = [
                (self.platform_key, self.platform_cert)
            ]
            self.certificates_apiv3_key = self.apiv3_key  # another one: they do not open
            # bills: (day, bill_type) -> text replacing the one built from the state, or
            # an error code (NO_STATEMENT_EXIST, STATEMENT_CREATING)
            self.bill_texts: dict[tuple[str, str], str] = {}
            self.bill_errors: dict[tuple[str, str], str] = {}
            self.bill_hash_override: str | None = None
            self.bill_files: dict[str, bytes] = {}

    # --- what tests read --------------------------------------------------------------

    @property
    def calls(self) -> Counter[str]:
        return self.state.calls

    @property
    def requests(self) -> list[Recorded]:
        return self.state.requests

    @property
    def orders(self) -> dict[str, FakeOrder]:
        return self.state.orders

    @property
    def refunds(self) -> dict[str, FakeRefund]:
        return self.state.refunds

    def transaction(self, out_trade_no: str) -> dict[str, Any]:
        """The order as query order (and the payment notification) shows it."""
        with self._lock:
            return self._transaction(self.state.orders[out_trade_no])

    # --- how tests steer it -----------------------------------------------------------

    def pay(self, out_trade_no: str) -> dict[str, Any]:
        """The member pays in WeChat; returns the transaction (notification resource)."""
        with self._lock:
            order = self.state.orders[out_trade_no]
            if order.trade_state == "NOTPAY":
                order.trade_state = "SUCCESS"
                order.transaction_id = "42000" + secrets.token_hex(12)[:23]
                order.success_time = _wechat_time()
            return self._transaction(order)

    def fail(self, endpoint: str, status: int, code: str, times: int = 1) -> None:
        """The next `times` calls to `endpoint` ("jsapi", "query", "close", "refund",
        "refund_query") answer `status` with `code`, after the signature check."""
        with self._lock:
            self.state.failures.setdefault(endpoint, []).extend([(status, code)] * times)

    def settle_refund(self, out_refund_no: str, status: str = "SUCCESS") -> dict[str, Any]:
        """WeChat finishes a refund; returns the refund notification resource."""
        with self._lock:
            refund = self.state.refunds[out_refund_no]
            refund.status = status
            if status == "SUCCESS":
                refund.success_time = _wechat_time()
            elif status == "CLOSED":
                self.state.orders[refund.out_trade_no].refunded -= refund.refund
            return self._refund_resource(refund)

    # --- notifications ----------------------------------------------------------------

    def encrypt(
        self, plaintext: dict[str, Any], associated_data: str = "transaction"
    ) -> dict[str, str]:
        nonce = secrets.token_urlsafe(9)[:12]
        ciphertext = AESGCM(self.apiv3_key.encode()).encrypt(
            nonce.encode(),
            json.dumps(plaintext, ensure_ascii=False).encode(),
            associated_data.encode(),
        )
        return {
            "original_type": associated_data,
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": base64.b64encode(ciphertext).decode(),
            "associated_data": associated_data,
            "nonce": nonce,
        }

    def signed_headers(
        self,
        body: bytes,
        *,
        key: rsa.RSAPrivateKey | None = None,
        serial: str | None = None,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> dict[str, str]:
        ts = str(_now() if timestamp is None else timestamp)
        nonce = secrets.token_hex(16)
        message = ts.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"
        return {
            "Wechatpay-Timestamp": ts,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": signature or rsa_sign(key or self.wechat_key, message),
            "Wechatpay-Serial": serial or self.public_key_id,
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
            "Content-Type": "application/json",
        }

    def notification(
        self,
        resource: dict[str, Any],
        *,
        event_type: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
        serial: str | None = None,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """(headers, body) of a notification carrying `resource` (a transaction, or a
        refund when it has `out_refund_no`), signed as WeChat Pay signs. `key`/`serial`
        forge or switch keys (e.g. `platform_key` with `platform_serial`), `timestamp`
        ages it, `signature` replaces the signature (e.g. a SIGNTEST probe)."""
        is_refund = "out_refund_no" in resource
        if event_type is None:
            if is_refund:
                event_type = f"REFUND.{resource.get('refund_status', 'SUCCESS')}"
            else:
                event_type = "TRANSACTION.SUCCESS"
        original = "refund" if is_refund else "transaction"
        envelope = {
            "id": "EV-2018022511223320873",
            "create_time": _wechat_time(),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "退款成功" if is_refund else "支付成功",
            "resource": self.encrypt(resource, original),
        }
        body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
        headers = self.signed_headers(
            body, key=key, serial=serial, timestamp=timestamp, signature=signature
        )
        return headers, body

    def refund_notification(
        self, out_refund_no: str, status: str = "SUCCESS"
    ) -> tuple[dict[str, str], bytes]:
        """Settle a refund and build its notification."""
        return self.notification(self.settle_refund(out_refund_no, status))

    async def deliver(
        self, client: httpx.AsyncClient, resource: dict[str, Any], **kwargs: Any
    ) -> httpx.Response:
        """POST a notification for `resource` to our app through the test client."""
        headers, body = self.notification(resource, **kwargs)
        return await client.post(NOTIFY_PATH, headers=headers, content=body)

    # --- plumbing ---------------------------------------------------------------------

    def _transaction(self, order: FakeOrder) -> dict[str, Any]:
        data: dict[str, Any] = {
            "appid": order.appid,
            "mchid": order.mchid,
            "out_trade_no": order.out_trade_no,
            "trade_type": "JSAPI",
            "trade_state": order.trade_state,
            "trade_state_desc": {"SUCCESS": "支付成功", "NOTPAY": "未支付"}.get(
                order.trade_state, order.trade_state
            ),
            "attach": order.attach,
            "payer": {"openid": order.openid},
            "amount": {"total": order.amount, "currency": "CNY"},
        }
        if order.transaction_id:
            data["transaction_id"] = order.transaction_id
            data["bank_type"] = "OTHERS"
            data["success_time"] = order.success_time
            data["amount"].update(payer_total=order.amount, payer_currency="CNY")
        return data

    def _refund_resource(self, refund: FakeRefund) -> dict[str, Any]:
        order = self.state.orders[refund.out_trade_no]
        return {
            "mchid": order.mchid,
            "out_trade_no": refund.out_trade_no,
            "transaction_id": order.transaction_id,
            "out_refund_no": refund.out_refund_no,
            "refund_id": refund.refund_id,
            "refund_status": refund.status,
            "success_time": refund.success_time,
            "user_received_account": "支付用户零钱",
            "amount": {
                "total": refund.total,
                "refund": refund.refund,
                "payer_total": refund.total,
                "payer_refund": refund.refund,
            },
        }

    def _refund_answer(self, refund: FakeRefund) -> dict[str, Any]:
        order = self.state.orders[refund.out_trade_no]
        return {
            "refund_id": refund.refund_id,
            "out_refund_no": refund.out_refund_no,
            "transaction_id": order.transaction_id,
            "out_trade_no": refund.out_trade_no,
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "success_time": refund.success_time or None,
            "create_time": refund.create_time,
            "status": refund.status,
            "funds_account": "AVAILABLE",
            "amount": {
                "total": refund.total,
                "refund": refund.refund,
                "payer_total": refund.total,
                "payer_refund": refund.refund,
                "settlement_refund": refund.refund,
                "settlement_total": refund.total,
                "discount_refund": 0,
                "currency": "CNY",
            },
        }

    def _answer(self, status: int, payload: dict[str, Any] | None) -> Response:
        body = b"" if payload is None else json.dumps(payload, ensure_ascii=False).encode()
        headers = {"Request-ID": secrets.token_hex(16)}
        if self.sign_responses:
            signed = self.signed_headers(body, key=self.response_key, serial=self.response_serial)
            signed.pop("Content-Type")
            headers.update(signed)
        if payload is not None:
            headers["Content-Type"] = "application/json; charset=utf-8"
        return Response(body, status_code=status, headers=headers)

    def _error(self, refused: _Refused) -> Response:
        payload: dict[str, Any] = {"code": refused.code, "message": refused.message}
        if refused.detail is not None:
            payload["detail"] = refused.detail
        return self._answer(refused.status, payload)

    async def _receive(self, endpoint: str, request: Request) -> tuple[Recorded, bytes]:
        body = await request.body()
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        url = raw_path.decode()
        if request.scope.get("query_string"):
            url += "?" + request.scope["query_string"].decode()
        recorded = Recorded(endpoint, request.method, url, body, dict(request.headers))
        with self._lock:
            self.state.calls[endpoint] += 1
            self.state.requests.append(recorded)
        return recorded, body

    def _check(self, endpoint: str, request: Request, recorded: Recorded, body: bytes) -> None:
        """The real server's checks: headers, Authorization signature, queued failures."""
        auth = request.headers.get("authorization", "")
        scheme, _sep, params = auth.partition(" ")
        if scheme != "WECHATPAY2-SHA256-RSA2048":
            raise _Refused(401, "SIGN_ERROR", "错误的签名类型")
        fields: dict[str, str] = {}
        for part in params.split(","):
            name, _eq, value = part.strip().partition("=")
            fields[name] = value.strip('"')
        message = "\n".join(
            [
                recorded.method,
                recorded.url,
                fields.get("timestamp", ""),
                fields.get("nonce_str", ""),
                "",
            ]
        ).encode()
        message = message + body + b"\n"
        detail = {
            "detail": {"issue": "sign not match"},
            "field": "signature",
            "location": "authorization",
            "sign_information": {
                "method": recorded.method,
                "sign_message_length": len(message),
                "truncated_sign_message": message[:64].decode(errors="replace"),
                "url": recorded.url,
            },
        }
        if fields.get("mchid") != self.mchid:
            raise _Refused(401, "SIGN_ERROR", "商户号不匹配", detail)
        if fields.get("serial_no") != self.serial:
            raise _Refused(401, "SIGN_ERROR", "证书序列号错误", detail)
        try:
            sent_at = int(fields.get("timestamp", ""))
        except ValueError:
            raise _Refused(401, "SIGN_ERROR", "时间戳错误", detail) from None
        if abs(_now() - sent_at) > 300:
            raise _Refused(401, "SIGN_ERROR", "时间戳过期", detail)
        try:
            self.merchant_key.public_key().verify(
                base64.b64decode(fields.get("signature", "")),
                message,
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (ValueError, InvalidSignature):
            raise _Refused(401, "SIGN_ERROR", "签名错误", detail) from None
        if request.method == "POST" and not request.headers.get("content-type", "").startswith(
            "application/json"
        ):
            raise _Refused(400, "PARAM_ERROR", "Content-Type 必须是 application/json")
        with self._lock:
            queued = self.state.failures.get(endpoint)
            if queued:
                status, code = queued.pop(0)
                raise _Refused(status, code, code)

    async def _serve(self, endpoint: str, request: Request, work: Any) -> Response:
        recorded, body = await self._receive(endpoint, request)
        try:
            self._check(endpoint, request, recorded, body)
            status, payload = work(request, body)
        except _Refused as refused:
            recorded.status = refused.status
            return self._error(refused)
        recorded.status = status
        return self._answer(status, payload)

    @staticmethod
    def _json(body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body)
        except ValueError:
            raise _Refused(400, "PARAM_ERROR", "JSON 格式错误") from None
        if not isinstance(data, dict):
            raise _Refused(400, "PARAM_ERROR", "JSON 格式错误")
        return data

    async def _jsapi(self, request: Request) -> Response:
        def work(request: Request, body: bytes) -> tuple[int, dict[str, Any]]:
            data = self._json(body)
            for name in ("appid", "mchid", "description", "out_trade_no", "notify_url"):
                if not isinstance(data.get(name), str) or not data[name]:
                    raise _Refused(400, "PARAM_ERROR", f"缺少参数 {name}")
            amount = data.get("amount") or {}
            total = amount.get("total")
            if not isinstance(total, int) or isinstance(total, bool) or total <= 0:
                raise _Refused(400, "PARAM_ERROR", "amount.total 错误")
            openid = (data.get("payer") or {}).get("openid")
            if not openid:
                raise _Refused(400, "PARAM_ERROR", "缺少参数 payer.openid")
            if data["mchid"] != self.mchid:
                raise _Refused(400, "MCH_NOT_EXISTS", "商户号不存在")
            if data["appid"] != self.appid:
                raise _Refused(400, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")
            no = data["out_trade_no"]
            if not 6 <= len(no) <= 32 or len(data["description"]) > 127:
                raise _Refused(400, "PARAM_ERROR", "参数长度错误")
            if not data["notify_url"].startswith("https://") or "?" in data["notify_url"]:
                raise _Refused(400, "PARAM_ERROR", "notify_url 格式错误")
            with self._lock:
                order = self.state.orders.get(no)
                if order is not None:
                    if order.trade_state == "SUCCESS":
                        raise _Refused(403, "ORDERPAID", "该订单已支付")
                    if order.trade_state == "CLOSED":
                        raise _Refused(400, "ORDER_CLOSED", "订单已关闭")
                    if order.body != body:
                        raise _Refused(403, "OUT_TRADE_NO_USED", "商户订单号重复")
                    return 200, {"prepay_id": order.prepay_id}
                order = FakeOrder(
                    appid=data["appid"],
                    mchid=data["mchid"],
                    out_trade_no=no,
                    description=data["description"],
                    amount=total,
                    openid=str(openid),
                    notify_url=data["notify_url"],
                    time_expire=str(data.get("time_expire") or ""),
                    attach=str(data.get("attach") or ""),
                    prepay_id="wx" + secrets.token_hex(16),
                    body=body,
                )
                self.state.orders[no] = order
            return 200, {"prepay_id": order.prepay_id}

        return await self._serve("jsapi", request, work)

    async def _query(self, request: Request) -> Response:
        def work(request: Request, body: bytes) -> tuple[int, dict[str, Any]]:
            if request.query_params.get("mchid") != self.mchid:
                raise _Refused(400, "PARAM_ERROR", "mchid 错误")
            with self._lock:
                order = self.state.orders.get(request.path_params["no"])
                if order is None:
                    raise _Refused(404, "ORDER_NOT_EXIST", "订单不存在")
                return 200, self._transaction(order)

        return await self._serve("query", request, work)

    async def _close(self, request: Request) -> Response:
        def work(request: Request, body: bytes) -> tuple[int, None]:
            data = self._json(body)
            if data.get("mchid") != self.mchid:
                raise _Refused(400, "PARAM_ERROR", "mchid 错误")
            with self._lock:
                order = self.state.orders.get(request.path_params["no"])
                if order is None:
                    raise _Refused(404, "ORDER_NOT_EXIST", "订单不存在")
                if order.trade_state in ("SUCCESS", "REFUND"):
                    raise _Refused(403, "ORDERPAID", "订单已支付")
                order.trade_state = "CLOSED"
            return 204, None

        return await self._serve("close", request, work)

    async def _refund(self, request: Request) -> Response:
        def work(request: Request, body: bytes) -> tuple[int, dict[str, Any]]:
            data = self._json(body)
            no = data.get("out_refund_no")
            amount = data.get("amount") or {}
            if (
                not no
                or not isinstance(amount.get("refund"), int)
                or amount.get("currency") != "CNY"
            ):
                raise _Refused(400, "PARAM_ERROR", "参数错误")
            with self._lock:
                existing = self.state.refunds.get(no)
                if existing is not None:
                    return 200, self._refund_answer(existing)
                order = self.state.orders.get(str(data.get("out_trade_no")))
                if order is None:
                    raise _Refused(404, "RESOURCE_NOT_EXISTS", "订单不存在")
                if order.trade_state not in ("SUCCESS", "REFUND"):
                    raise _Refused(403, "TRADE_ERROR", "订单未支付")
                if amount.get("total") != order.amount:
                    raise _Refused(400, "PARAM_ERROR", "订单金额与原订单不一致")
                refund_fen = amount["refund"]
                if refund_fen <= 0 or order.refunded + refund_fen > order.amount:
                    raise _Refused(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额")
                order.refunded += refund_fen
                order.trade_state = "REFUND"
                refund = FakeRefund(
                    out_refund_no=no,
                    out_trade_no=order.out_trade_no,
                    refund_id="50000" + secrets.token_hex(12)[:24],
                    refund=refund_fen,
                    total=order.amount,
                    reason=str(data.get("reason") or ""),
                    status=self.refund_status,
                    create_time=_wechat_time(),
                    success_time=_wechat_time() if self.refund_status == "SUCCESS" else "",
                )
                self.state.refunds[no] = refund
                return 200, self._refund_answer(refund)

        return await self._serve("refund", request, work)

    async def _refund_query(self, request: Request) -> Response:
        def work(request: Request, body: bytes) -> tuple[int, dict[str, Any]]:
            with self._lock:
                refund = self.state.refunds.get(request.path_params["no"])
                if refund is None:
                    raise _Refused(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
                return 200, self._refund_answer(refund)

        return await self._serve("refund_query", request, work)

    # --- certificate mode --------------------------------------------------------------

    def use_platform_certificate(
        self, key: rsa.RSAPrivateKey | None = None, cert: x509.Certificate | None = None
    ) -> None:
        """Sign answers with a platform certificate (certificate mode), as WeChat Pay does
        for a merchant without a WeChat Pay public key."""
        self.response_key = key or self.platform_key
        self.response_serial = format((cert or self.platform_cert).serial_number, "X")

    def new_platform_certificate(
        self, *, days_from: int = -1, days_to: int = 5 * 365
    ) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        """Another platform certificate from the test CA, valid for the days given around
        the (possibly frozen) clock."""
        now = clock.now()
        key = new_key()
        cert = issue_certificate(
            key,
            self.ca_key,
            self.ca_cert,
            not_before=now + timedelta(days=days_from),
            not_after=now + timedelta(days=days_to),
        )
        return key, cert

    def certificates_answer(self) -> dict[str, Any]:
        """`GET /v3/certificates`: each certificate AEAD_AES_256_GCM-encrypted with the APIv3
        key, associated_data "certificate"."""
        data = []
        for _key, cert in self.certificates:
            nonce = secrets.token_hex(6)  # 12 characters, as WeChat's
            pem = cert.public_bytes(serialization.Encoding.PEM)
            ciphertext = AESGCM(self.certificates_apiv3_key.encode()).encrypt(
                nonce.encode(), pem, b"certificate"
            )
            data.append(
                {
                    "serial_no": format(cert.serial_number, "X"),
                    "effective_time": _wechat_time(cert.not_valid_before_utc),
                    "expire_time": _wechat_time(cert.not_valid_after_utc),
                    "encrypt_certificate": {
                        "algorithm": "AEAD_AES_256_GCM",
                        "nonce": nonce,
                        "associated_data": "certificate",
                        "ciphertext": base64.b64encode(ciphertext).decode(),
                    },
                }
            )
        return {"data": data}

    async def _certificates(self, request: Request) -> Response:
        def work(request: Request, body: bytes) -> tuple[int, dict[str, Any]]:
            return 200, self.certificates_answer()

        return await self._serve("certificates", request, work)

    # --- bills ---------------------------------------------------------------------------

    @staticmethod
    def _yuan(fen: int) -> str:
        return f"{fen / 100:.2f}"

    def bill_text(self, day: str, bill_type: str) -> str:
        """The trade bill (ALL) or refund bill (REFUND) of a Shanghai day, built from the
        fake's payments and refunds the way WeChat Pay writes it: a header row, rows whose
        fields each start with a backtick, the totals' header and the totals; CRLF."""
        if (day, bill_type) in self.bill_texts:
            return self.bill_texts[(day, bill_type)]
        with self._lock:
            orders = list(self.state.orders.values())
            refunds = list(self.state.refunds.values())
        rows: list[list[str]] = []
        settled = refunded = applied = total = 0
        fee_total = 0.0

        def on_day(moment: str) -> bool:
            return bool(moment) and moment[:10] == day

        stamp = "%Y-%m-%d %H:%M:%S"
        if bill_type == "ALL":
            for order in orders:
                if order.transaction_id and on_day(order.success_time):
                    fee = round(order.amount * 0.006) / 100
                    rows.append(
                        [
                            datetime.fromisoformat(order.success_time).strftime(stamp),
                            order.appid, order.mchid, "0", "", order.transaction_id,
                            order.out_trade_no, order.openid, "JSAPI", "SUCCESS", "OTHERS",
                            "CNY", self._yuan(order.amount), "0.00", "0", "0", "0.00", "0.00",
                            "", "", order.description, order.attach, f"{fee:.5f}", "0.60%",
                            self._yuan(order.amount), "0.00", "",
                        ]
                    )  # fmt: skip
                    settled += order.amount
                    total += order.amount
                    fee_total += fee
        header = ALL_HEADER if bill_type == "ALL" else REFUND_HEADER
        for refund in refunds:
            if not on_day(refund.create_time):
                continue
            order = self.state.orders[refund.out_trade_no]
            fee = -round(refund.refund * 0.006) / 100
            refund_part = [
                refund.refund_id, refund.out_refund_no, self._yuan(refund.refund), "0.00",
                "ORIGINAL", refund.status,
            ]  # fmt: skip
            times = [
                datetime.fromisoformat(refund.create_time).strftime(stamp),
                datetime.fromisoformat(refund.success_time).strftime(stamp)
                if refund.success_time
                else "",
            ]
            row = [
                datetime.fromisoformat(order.success_time).strftime(stamp),
                order.appid, order.mchid, "0", "", order.transaction_id, order.out_trade_no,
                order.openid, "JSAPI", "REFUND", "OTHERS", "CNY", "0.00", "0.00",
                *(times if bill_type == "REFUND" else []), *refund_part,
                order.description, order.attach, f"{fee:.5f}", "0.60%", "0.00",
                self._yuan(refund.refund), "",
            ]  # fmt: skip
            rows.append(row)
            refunded += refund.refund
            applied += refund.refund
            fee_total += fee
        lines = [",".join(header)]
        lines += [",".join("`" + value for value in row) for row in rows]
        lines.append(",".join(SUMMARY_HEADER))
        lines.append(
            ",".join(
                "`" + v
                for v in [
                    str(len(rows)),
                    self._yuan(settled),
                    self._yuan(refunded),
                    "0.00",
                    f"{fee_total:.5f}",
                    self._yuan(total),
                    self._yuan(applied),
                ]
            )
        )
        return "\r\n".join(lines) + "\r\n"

    async def _tradebill(self, request: Request) -> Response:
        def work(request: Request, body: bytes) -> tuple[int, dict[str, Any]]:
            day = request.query_params.get("bill_date", "")
            bill_type = request.query_params.get("bill_type", "ALL")
            try:
                datetime.strptime(day, "%Y-%m-%d")
            except ValueError:
                raise _Refused(400, "PARAM_ERROR", "bill_date 格式错误") from None
            if bill_type not in ("ALL", "SUCCESS", "REFUND"):
                raise _Refused(400, "PARAM_ERROR", "bill_type 错误")
            error = self.bill_errors.get((day, bill_type))
            if error == "NO_STATEMENT_EXIST":
                raise _Refused(400, error, "请求的账单文件不存在")
            if error == "STATEMENT_CREATING":
                raise _Refused(400, error, "账单生成中")
            raw = self.bill_text(day, bill_type).encode()
            token = secrets.token_urlsafe(24)
            gz = request.query_params.get("tar_type") == "GZIP"
            with self._lock:
                self.bill_files[token] = gzip.compress(raw) if gz else raw
            url = f"{self.base_url}/v3/billdownload/file?token={token}"
            if gz:
                url += "&tartype=gzip"
            digest = self.bill_hash_override or hashlib.sha1(raw).hexdigest()
            return 200, {"hash_type": "SHA1", "hash_value": digest, "download_url": url}

        return await self._serve("tradebill", request, work)

    async def _bill_file(self, request: Request) -> Response:
        """The file: Authorization checked like any request, the answer NOT signed."""
        recorded, body = await self._receive("billdownload", request)
        try:
            self._check("billdownload", request, recorded, body)
            with self._lock:
                data = self.bill_files.get(request.query_params.get("token", ""))
            if data is None:
                raise _Refused(404, "RESOURCE_NOT_EXISTS", "账单文件不存在")
        except _Refused as refused:
            recorded.status = refused.status
            return self._error(refused)
        recorded.status = 200
        return Response(data, status_code=200, media_type="application/octet-stream")


ALL_HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
    "交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,"
    "充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
).split(",")
REFUND_HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
    "交易状态,付款银行,货币种类,应结订单金额,代金券金额,退款申请时间,退款成功时间,微信退款单号,"
    "商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,"
    "订单金额,申请退款金额,费率备注"
).split(",")
SUMMARY_HEADER = (
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
).split(",")


class FakePayServer(ThreadedServer):
    """Serves a FakePay with uvicorn on 127.0.0.1 (a free port) in a daemon thread."""

    def __init__(self, fake: FakePay | None = None) -> None:
        self.fake = fake or FakePay()
        super().__init__(self.fake.app, "fake-pay")

    def start(self) -> None:
        super().start()
        self.fake.base_url = self.url


_server: FakePayServer | None = None

_SETTINGS = (
    "wechatpay_mchid",
    "wechatpay_api_base",
    "wechatpay_private_key_path",
    "wechatpay_serial",
    "wechatpay_apiv3_key",
    "wechatpay_public_key_path",
    "wechatpay_public_key_id",
    "wechatpay_notify_url",
    "wechatpay_platform_certs",
    "wechatpay_appid",
    "wechatpay_platform_cert_download",
    "wechatpay_platform_ca_path",
)


@pytest.fixture(scope="session")
def fake_pay_server() -> Iterator[FakePayServer]:
    """One server (and one set of keys) per test run, however many conftests import it."""
    global _server
    if _server is None:
        _server = FakePayServer()
        _server.start()
    yield _server
    if _server is not None:
        _server.stop()
        _server = None


@pytest.fixture
async def fake_pay(fake_pay_server: FakePayServer, settings: Settings) -> AsyncIterator[FakePay]:
    """A freshly reset fake with settings.wechatpay_* pointing at it (public-key mode,
    plus the platform certificate in the serial map); restored afterwards."""
    fake = fake_pay_server.fake
    fake.reset()
    saved = {name: getattr(settings, name) for name in _SETTINGS}
    settings.wechatpay_mchid = fake.mchid
    settings.wechatpay_api_base = fake_pay_server.url
    settings.wechatpay_private_key_path = fake.private_key_path
    settings.wechatpay_serial = fake.serial
    settings.wechatpay_apiv3_key = SecretStr(fake.apiv3_key)
    settings.wechatpay_public_key_path = fake.public_key_path
    settings.wechatpay_public_key_id = fake.public_key_id
    settings.wechatpay_notify_url = "https://mall.example.com" + NOTIFY_PATH
    settings.wechatpay_platform_certs = {fake.platform_serial: fake.platform_cert_path}
    settings.wechatpay_appid = fake.appid
    await wechat_pay.aclose()
    wechat_pay.downloaded_keys.clear()
    try:
        yield fake
    finally:
        await wechat_pay.aclose()
        wechat_pay.downloaded_keys.clear()
        for name, value in saved.items():
            setattr(settings, name, value)
        fake.reset()
