"""WeChat Pay's daily bills: fetched, checked and read.

- `GET /v3/bill/tradebill?bill_date=YYYY-MM-DD&bill_type=ALL|REFUND&tar_type=GZIP` answers
  (signed, verified like every answer) `{"hash_type": "SHA1", "hash_value", "download_url"}`;
  the URL lives a few minutes. `ALL` lists the day's successful payments (and the refunds
  started that day), `REFUND` the refunds started that day with their own times (WeChat's
  "refund bill"; RECHARGE_REFUND bills are for recharge coupons, which this mall has none of).
- The file is fetched with a signed GET of `download_url`; WeChat does not sign that answer,
  so it is checked by the SHA1 of the bill (after gunzip) instead.
- The file: a header row, one row per trade whose every field starts with a backtick
  (so spreadsheets keep long numbers), then `总交易单数,...` and one row of totals. Amounts
  are yuan with 2 decimals (fees with 5). Rows are read by their header names, so the
  ALL, SUCCESS and REFUND layouts (27, 20 and 29 columns) all read the same way.
- `NO_STATEMENT_EXIST` (no trade that day) is an empty bill; `STATEMENT_CREATING` (before
  about 10:00 the next day) is BILL_NOT_READY, to be asked again later."""

from __future__ import annotations

import gzip
import hashlib
import logging
import zlib
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

import httpx

from mall.config import get_settings
from mall.errors import ErrorCode, MallError
from mall.i18n import _
from mall.kit import clock
from mall.wechat import pay

log = logging.getLogger("mall.wechat.bills")

BILL_NOT_READY = ErrorCode(
    "PAY_BILL_NOT_READY",
    503,
    _("WeChat Pay is still making the bill of {day}; try again after 10:00"),
)
BILL_INVALID = ErrorCode(
    "PAY_BILL_INVALID", 502, _("WeChat Pay's bill of {day} could not be read ({reason})")
)

WECHAT_HOSTS = ("api.mch.weixin.qq.com", "api2.mch.weixin.qq.com")
SUMMARY_FIRST = "总交易单数"


@dataclass(frozen=True)
class BillRow:
    """One row of a trade bill, amounts in fen."""

    trade_time: datetime | None
    appid: str
    mchid: str
    transaction_id: str
    out_trade_no: str
    trade_state: str  # SUCCESS | REFUND | REVOKED
    settlement_fen: int  # 应结订单金额
    total_fen: int  # 订单金额 (0 on a refund row)
    refund_id: str = ""
    out_refund_no: str = ""
    refund_fen: int = 0  # 退款金额 (what went back, without coupons)
    applied_refund_fen: int = 0  # 申请退款金额 (what was asked)
    refund_status: str = ""  # SUCCESS | PROCESSING | ... at the time of the bill
    refund_time: datetime | None = None


@dataclass
class Bill:
    day: date
    bill_type: str
    rows: list[BillRow] = field(default_factory=list)
    count: int = 0  # 总交易单数
    settlement_fen: int = 0  # 应结订单总金额
    refund_fen: int = 0  # 退款总金额


def _fen(value: str, *, where: str) -> int:
    text = value.strip() or "0"
    try:
        fen = Decimal(text) * 100
    except InvalidOperation:
        raise ValueError(f"{where}: not an amount") from None
    if fen != fen.to_integral_value():
        raise ValueError(f"{where}: not whole fen")
    return int(fen)


def _time(value: str) -> datetime | None:
    text = value.strip().replace("：", ":")  # old bills have full-width colons
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=clock.SHANGHAI)
    except ValueError:
        return None


def _number(value: str) -> str:
    """A refund number; payment rows carry "0" there."""
    text = value.strip()
    return "" if text in ("", "0") else text


def _fields(line: str) -> list[str]:
    """A data row: `\\`a,\\`b,...`; splitting on ",`" keeps commas inside a field."""
    if not line.startswith("`"):
        raise ValueError("a data row must start with a backtick")
    return line[1:].split(",`")


def parse(text: str, day: date, bill_type: str) -> Bill:
    """Read a trade bill's text; raises ValueError when it is not one (or its totals
    disagree with its rows)."""
    lines = [line.rstrip("\r") for line in text.lstrip("\ufeff").split("\n")]
    lines = [line for line in lines if line.strip()]
    bill = Bill(day=day, bill_type=bill_type)
    if not lines:
        return bill
    header = [name.strip() for name in lines[0].split(",")]
    if "商户订单号" not in header:
        raise ValueError("no header row")
    try:
        summary_at = next(i for i, line in enumerate(lines) if line.startswith(SUMMARY_FIRST))
    except StopIteration:
        raise ValueError("no summary rows") from None
    for number, line in enumerate(lines[1:summary_at], start=2):
        values = _fields(line)
        if len(values) != len(header):
            raise ValueError(f"row {number}: {len(values)} fields for {len(header)} columns")
        row = dict(zip(header, values, strict=True))

        def amount(name: str, row: dict[str, str] = row, number: int = number) -> int:
            return _fen(row.get(name, ""), where=f"row {number} {name}")

        bill.rows.append(
            BillRow(
                trade_time=_time(row["交易时间"]),
                appid=row.get("公众账号ID", ""),
                mchid=row.get("商户号", ""),
                transaction_id=row.get("微信订单号", ""),
                out_trade_no=row["商户订单号"],
                trade_state=row.get("交易状态", ""),
                settlement_fen=amount("应结订单金额"),
                total_fen=amount("订单金额"),
                refund_id=_number(row.get("微信退款单号", "")),
                out_refund_no=_number(row.get("商户退款单号", "")),
                refund_fen=amount("退款金额"),
                applied_refund_fen=amount("申请退款金额"),
                refund_status=row.get("退款状态", ""),
                refund_time=_time(row.get("退款申请时间", "")),
            )
        )
    if summary_at + 1 >= len(lines):
        raise ValueError("no totals row")
    names = [name.strip() for name in lines[summary_at].split(",")]
    totals = dict(zip(names, _fields(lines[summary_at + 1]), strict=False))
    try:
        bill.count = int(totals.get("总交易单数", "").strip())
    except ValueError:
        raise ValueError("totals: no count") from None
    bill.settlement_fen = _fen(totals.get("应结订单总金额", ""), where="totals")
    bill.refund_fen = _fen(totals.get("退款总金额", ""), where="totals")
    if bill.count != len(bill.rows):
        raise ValueError(f"totals say {bill.count} rows, the bill has {len(bill.rows)}")
    if bill.settlement_fen != sum(r.settlement_fen for r in bill.rows):
        raise ValueError("settlement total disagrees with the rows")
    if bill.refund_fen != sum(r.refund_fen for r in bill.rows):
        raise ValueError("refund total disagrees with the rows")
    return bill


def _gunzip(data: bytes, limit: int) -> bytes:
    """Unzip at most `limit` bytes (a bill is text; a bomb is refused)."""
    out = zlib.decompressobj(16 + zlib.MAX_WBITS)
    plain = out.decompress(data, limit + 1)
    if len(plain) > limit or out.unconsumed_tail:
        raise ValueError("bill too large")
    return plain


async def download(day: date, bill_type: str = "ALL") -> Bill:
    """The bill of a Shanghai `day` (ALL: payments, REFUND: refunds), fetched and checked."""
    try:
        answer = await pay._request(
            "GET",
            f"/v3/bill/tradebill?bill_date={day.isoformat()}&bill_type={bill_type}&tar_type=GZIP",
        )
    except MallError as exc:
        code = str(exc.params.get("wechat_code") or "")
        if code == "NO_STATEMENT_EXIST":
            return Bill(day=day, bill_type=bill_type)
        if code == "STATEMENT_CREATING":
            raise BILL_NOT_READY(day=day.isoformat()) from None
        raise
    url = str(answer.get("download_url") or "")
    hash_type = str(answer.get("hash_type") or "").upper()
    expected = str(answer.get("hash_value") or "").lower()
    base = httpx.URL(get_settings().wechatpay_api_base)
    target = httpx.URL(url) if url else None
    hosts = (*WECHAT_HOSTS, base.host)
    if target is None or target.host not in hosts or target.scheme != base.scheme:
        log.error("wechatpay bill %s %s: download_url on an unexpected host", day, bill_type)
        raise BILL_INVALID(day=day.isoformat(), reason="download_url")
    if hash_type != "SHA1" or not expected:
        raise BILL_INVALID(day=day.isoformat(), reason=f"hash_type {hash_type[:16]}")
    response = await pay.send("GET", url, accept="*/*")
    data = response.content
    limit = get_settings().wechatpay_bill_max_bytes
    try:
        plain = _gunzip(data, limit) if data[:2] == b"\x1f\x8b" else data
    except (ValueError, zlib.error, EOFError, gzip.BadGzipFile):
        raise BILL_INVALID(day=day.isoformat(), reason="gzip") from None
    if len(plain) > limit:
        raise BILL_INVALID(day=day.isoformat(), reason="size")
    if hashlib.sha1(plain).hexdigest() != expected:
        log.error("wechatpay bill %s %s: SHA1 does not match", day, bill_type)
        raise BILL_INVALID(day=day.isoformat(), reason="SHA1")
    try:
        return parse(plain.decode("utf-8"), day, bill_type)
    except (UnicodeDecodeError, ValueError) as exc:
        log.error("wechatpay bill %s %s unreadable: %s", day, bill_type, exc)
        raise BILL_INVALID(day=day.isoformat(), reason=str(exc)[:80]) from None
