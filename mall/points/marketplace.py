"""Marketplace orders: import of platform order exports and binding them to members.

An order earns points once: binding is a conditional update and the grant is idempotent
on the order's key; a bound order is never rebound by a later import."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from tortoise.transactions import in_transaction

from mall.config import get_settings
from mall.errors import RATE_LIMITED, ErrorCode
from mall.i18n import translate
from mall.kit import clock, ratelimit
from mall.kit.text import scrub
from mall.points.errors import (
    EXTERNAL_ORDER_NOT_FOUND,
    IMPORT_ROW_BOUND,
    IMPORT_ROW_DUPLICATE,
    IMPORT_ROW_INVALID,
    IMPORT_TOO_LARGE,
    IMPORT_UNREADABLE,
    ORDER_ALREADY_BOUND,
    ORDER_ALREADY_BOUND_BY_YOU,
    ORDER_NOT_BINDABLE,
    ORDER_PHONE_MISMATCH,
)
from mall.points.holds import reverse
from mall.points.ledger import _earn, get_balance, growth_for_paid, points_for_paid
from mall.points.models import (
    EARN,
    ExternalOrder,
)
from mall.points.rules import get_rules
from mall.points.schemas import (
    ExternalOrderRow,
    ImportOut,
    ImportRowError,
)
from mall.redis import get_redis

# no real field of an order export comes near this (order numbers are at most 64); a
# longer one is a broken row, reported as such rather than carried any further
IMPORT_FIELD_MAX = 256
BINDABLE_STATUSES = ("paid", "shipped", "completed")


# --- marketplace orders: import and binding --------------------------------------


_PLATFORM_ALIASES = {
    "天猫": "tmall",
    "淘宝": "taobao",
    "京东": "jd",
    "抖音": "douyin",
    "拼多多": "pdd",
    "快手": "kuaishou",
    "小红书": "xiaohongshu",
}


def normalize_platform(platform: str) -> str:
    name = platform.strip().lower()
    return _PLATFORM_ALIASES.get(name, name)


def _phone_digits(phone: str) -> str:
    kept = "".join(ch for ch in phone if ch.isdigit() or ch == "*")
    if len(kept) == 13 and kept.startswith("86"):
        kept = kept[2:]
    return kept


def phone_matches(on_order: str, given: str) -> bool:
    """Digits equal; a `*` in the imported phone (marketplaces mask numbers) matches any."""
    a, b = _phone_digits(on_order), _phone_digits(given)
    if not a or len(a) != len(b) or "*" in b:
        return False
    return all(x == "*" or x == y for x, y in zip(a, b, strict=True))


async def _bind_failure(member_id: int) -> None:
    settings = get_settings()
    await ratelimit.hit(
        f"points:bind:{member_id}",
        settings.points_bind_max_failures,
        settings.points_bind_window_seconds,
    )


@dataclass
class BindResult:
    order: ExternalOrder
    points: int
    balance: int


async def bind_order(member_id: int, platform: str, order_no: str, phone: str) -> BindResult:
    """Claim a marketplace order: awards order-to-points once, to one member.

    Wrong guesses (unknown order, wrong phone) count against a per-member limit so
    orders cannot be enumerated; past it every attempt is RATE_LIMITED."""
    settings = get_settings()
    limit_key = f"points:bind:{member_id}"
    if await ratelimit.over_limit(limit_key, settings.points_bind_max_failures):
        ttl = await get_redis().ttl(f"rl:{limit_key}")
        raise RATE_LIMITED(retry_after=max(int(ttl), 1))
    platform = normalize_platform(platform)
    order_no = order_no.strip()
    order = await ExternalOrder.get_or_none(platform=platform, order_no=order_no)
    if order is None:
        await _bind_failure(member_id)
        raise EXTERNAL_ORDER_NOT_FOUND()
    if not phone_matches(order.phone, phone):
        await _bind_failure(member_id)
        raise ORDER_PHONE_MISMATCH()

    def already(bound_to: int) -> Exception:
        return ORDER_ALREADY_BOUND_BY_YOU() if bound_to == member_id else ORDER_ALREADY_BOUND()

    if order.member_id is not None:
        raise already(order.member_id)
    if order.status not in BINDABLE_STATUSES or order.refunded_fen >= order.paid_fen > 0:
        raise ORDER_NOT_BINDABLE(status=order.status)
    rules = await get_rules()
    # points on what is left after refunds so far; later refunds claw back from there
    net_fen = order.paid_fen - order.refunded_fen
    points = points_for_paid(rules, net_fen)
    async with in_transaction():
        claimed = await ExternalOrder.filter(
            id=order.id,
            member_id__isnull=True,
            status__in=BINDABLE_STATUSES,
            refunded_fen=order.refunded_fen,
        ).update(
            member_id=member_id,
            bound_at=clock.now(),
            points_awarded=points,
            refunded_at_bind_fen=order.refunded_fen,
        )
        if not claimed:
            fresh = await ExternalOrder.get(id=order.id)
            if fresh.member_id is not None:
                raise already(fresh.member_id)
            raise ORDER_NOT_BINDABLE(status=fresh.status)
        growth = growth_for_paid(rules, net_fen, points)
        if points > 0 or growth > 0:
            await _earn(
                member_id,
                points,
                f"bind:{order.id}",
                kind=EARN,
                reason="bind_order",
                reference=f"{platform}:{order_no}"[:128],
                expires_at=None,
                growth=growth,
            )
    order.member_id = member_id
    order.points_awarded = points
    return BindResult(order=order, points=points, balance=await get_balance(member_id))


def clawback_due(order: ExternalOrder, refunded_fen: int) -> int:
    """Points of a bound order to have clawed back once `refunded_fen` is refunded:
    pro rata of what the points were awarded on, rounded down (all of them when all of
    it is refunded)."""
    base = order.paid_fen - order.refunded_at_bind_fen
    refunded = max(0, min(refunded_fen, order.paid_fen) - order.refunded_at_bind_fen)
    if base <= 0 or order.points_awarded <= 0:
        return 0
    return order.points_awarded * refunded // base


async def refund_external_order(
    order: ExternalOrder, refunded_fen: int, status: str | None = None
) -> int:
    """A marketplace refund of a claimed order (cumulative `refunded_fen`): its points are
    clawed back pro rata in one transaction with the order's update. What the member
    already spent is taken from the balance as far as it goes and the rest is owed
    (`PointsDebt`), never a negative balance. Returns the points newly clawed back (taken
    or owed); 0 when the refund is not larger than the one recorded (idempotent)."""
    if order.member_id is None or refunded_fen <= order.refunded_fen:
        return 0
    refunded_fen = min(refunded_fen, order.paid_fen)
    due = clawback_due(order, refunded_fen)
    claw = due - order.points_reversed
    async with in_transaction():
        moved = await ExternalOrder.filter(
            id=order.id,
            member_id=order.member_id,
            refunded_fen=order.refunded_fen,
            points_reversed=order.points_reversed,
        ).update(
            refunded_fen=refunded_fen,
            points_reversed=max(due, order.points_reversed),
            status=status or order.status,
            updated_at=clock.now(),
        )
        if not moved:
            return 0  # a concurrent import applied it (or a bigger one) first
        if claw > 0:
            await reverse(
                f"bind:{order.id}",
                idempotency_key=f"bind:{order.id}:refund:{refunded_fen}",
                reason="marketplace refund",
                points=claw,
                owe_shortfall=True,
            )
    return max(claw, 0)


_HEADER_ALIASES = {
    "平台": "platform",
    "订单号": "order_no",
    "订单编号": "order_no",
    "手机号": "phone",
    "手机": "phone",
    "实付金额(分)": "paid_fen",
    "实付(分)": "paid_fen",
    "支付时间": "paid_at",
    "付款时间": "paid_at",
    "状态": "status",
    "订单状态": "status",
    "退款金额(分)": "refunded_fen",
    "已退款(分)": "refunded_fen",
}
_STATUS_ALIASES = {
    "已付款": "paid",
    "已支付": "paid",
    "已发货": "shipped",
    "已完成": "completed",
    "交易成功": "completed",
    "已退款": "refunded",
    "退款成功": "refunded",
    "已取消": "cancelled",
    "交易关闭": "cancelled",
    "canceled": "cancelled",
}


def _clean_row(raw: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, value in raw.items():
        if name is None:
            continue
        field = str(name).strip().lstrip("\ufeff")
        field = _HEADER_ALIASES.get(field, field.lower())
        if isinstance(value, str):
            value = value.strip()
            if value == "" and field in ("paid_at", "status", "refunded_fen"):
                continue
        row[field] = value
    status = row.get("status")
    if isinstance(status, str):
        row["status"] = _STATUS_ALIASES.get(status, status.lower())
    return row


def parse_import(body: bytes, content_type: str) -> list[tuple[int, dict[str, Any]]]:
    """(row number, fields) from a CSV (row numbers count the header as row 1, like a
    spreadsheet) or JSON (a list, or {"orders": [...]}; rows numbered from 1)."""
    if len(body) > get_settings().upload_max_bytes:
        raise IMPORT_TOO_LARGE()
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = body.decode("gb18030")  # Excel on Chinese Windows saves CSV as GBK
        except UnicodeDecodeError:
            raise IMPORT_UNREADABLE(reason="not UTF-8 or GBK text") from None
    stripped = text.lstrip()
    if "json" in content_type or (stripped[:1] in ("[", "{") and "csv" not in content_type):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IMPORT_UNREADABLE(reason=f"invalid JSON at line {exc.lineno}") from None
        except RecursionError:
            raise IMPORT_UNREADABLE(reason="JSON nested too deeply") from None
        except ValueError:  # e.g. an integer of more than 4300 digits
            raise IMPORT_UNREADABLE(reason="invalid JSON") from None
        if isinstance(data, dict):
            data = data.get("orders")
        if not isinstance(data, list):
            raise IMPORT_UNREADABLE(reason='expected a list of orders or {"orders": [...]}')
        return [
            (i, _clean_row(item) if isinstance(item, dict) else {"_invalid": item})
            for i, item in enumerate(data, start=1)
        ]
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise IMPORT_UNREADABLE(reason="the file is empty")
    rows = []
    try:
        for raw in reader:
            if not any((v or "").strip() for v in raw.values() if isinstance(v, str)):
                continue  # blank line
            rows.append((reader.line_num, _clean_row(raw)))
    except csv.Error as exc:
        # e.g. a field over csv's 131072 characters or a NUL byte: the reader cannot say
        # where the next row starts, so nothing of this file is imported
        # DictReader.line_num is only updated after a good row; its reader's is current
        raise IMPORT_UNREADABLE(reason=f"line {reader.reader.line_num}: {exc}") from None
    return rows


def _row_problem(row: dict[str, Any]) -> str | None:
    """Why a row cannot be read as an order at all: not an object, a nested value (JSON)
    or a field longer than any real one. Checked before anything renders its values."""
    if "_invalid" in row:
        return "row: an order must be an object"
    for name, value in row.items():
        if isinstance(value, dict | list):
            return f"{name[:32]}: a nested value is not allowed"
        if isinstance(value, str) and len(value) > IMPORT_FIELD_MAX:
            return f"{name[:32]}: longer than {IMPORT_FIELD_MAX} characters"
    return None


def _shown_order_no(row: dict[str, Any]) -> str:
    value = row.get("order_no")
    if isinstance(value, bool) or not isinstance(value, str | int):
        return ""
    return scrub(str(value)[:64])


def _as_shanghai(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=clock.SHANGHAI)
    return moment.astimezone(UTC)


def _row_error(row: int, order_no: str, error: ErrorCode, **params: Any) -> ImportRowError:
    return ImportRowError(
        row=row, order_no=order_no, code=error.code, message=translate(error.message, **params)
    )


async def import_external_orders(rows: list[tuple[int, dict[str, Any]]]) -> ImportOut:
    """Insert new orders, update changed ones not yet claimed; idempotent on
    (platform, order_no). Bad rows are reported with their row number; good rows land."""
    errors: list[ImportRowError] = []
    valid: dict[tuple[str, str], tuple[int, ExternalOrderRow]] = {}
    for number, raw in rows:
        problem = _row_problem(raw)
        if problem is not None:
            errors.append(
                _row_error(number, _shown_order_no(raw), IMPORT_ROW_INVALID, detail=problem)
            )
            continue
        try:
            parsed = ExternalOrderRow.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "row"
            errors.append(
                _row_error(
                    number,
                    _shown_order_no(raw),
                    IMPORT_ROW_INVALID,
                    detail=f"{where}: {first.get('msg', '')}",
                )
            )
            continue
        parsed.platform = normalize_platform(parsed.platform)
        ident = (parsed.platform, parsed.order_no)
        if ident in valid:
            errors.append(
                _row_error(number, parsed.order_no, IMPORT_ROW_DUPLICATE, first_row=valid[ident][0])
            )
            continue
        valid[ident] = (number, parsed)

    created = updated = unchanged = refunded = 0
    items = list(valid.items())
    now = clock.now()
    for start in range(0, len(items), 500):
        chunk = items[start : start + 500]
        existing = {
            (o.platform, o.order_no): o
            for o in await ExternalOrder.filter(
                platform__in=list({p for (p, _n), _v in chunk}),
                order_no__in=[n for (_p, n), _v in chunk],
            )
        }
        new: list[ExternalOrder] = []
        for ident, (number, row) in chunk:
            fields = {
                "phone": row.phone,
                "paid_fen": row.paid_fen,
                "paid_at": _as_shanghai(row.paid_at),
                "status": row.status,
                "refunded_fen": row.refund_fen,
            }
            old = existing.get(ident)
            if old is None:
                new.append(
                    ExternalOrder(
                        platform=row.platform,
                        order_no=row.order_no,
                        imported_at=now,
                        updated_at=now,
                        **fields,
                    )
                )
                continue
            if all(getattr(old, k) == v for k, v in fields.items()):
                unchanged += 1
                continue
            if old.member_id is None:
                moved = await ExternalOrder.filter(id=old.id, member_id__isnull=True).update(
                    updated_at=now, **fields
                )
                if moved:
                    updated += 1
                    continue
                old = await ExternalOrder.get(id=old.id)  # claimed meanwhile
            # A claimed order takes only a bigger refund (its points are clawed back);
            # any other change would rewrite what the member was awarded points for.
            refund_applies = row.refund_fen > old.refunded_fen
            if refund_applies:
                refunding = row.status in ("refunded", "cancelled")
                await refund_external_order(old, row.refund_fen, row.status if refunding else None)
                refunded += 1
            others = {k: v for k, v in fields.items() if k not in ("status", "refunded_fen")}
            status_moved = row.status != old.status and not (
                refund_applies and row.status in ("refunded", "cancelled")
            )
            if (
                status_moved
                or row.refund_fen < old.refunded_fen
                or any(getattr(old, k) != v for k, v in others.items())
            ):
                errors.append(_row_error(number, row.order_no, IMPORT_ROW_BOUND))
        if new:
            # a concurrent import of the same file may have inserted some: those are skipped
            await ExternalOrder.bulk_create(new, ignore_conflicts=True)
            created += len(new)
    errors.sort(key=lambda e: e.row)
    return ImportOut(
        rows=len(rows),
        created=created,
        updated=updated,
        unchanged=unchanged,
        refunded=refunded,
        errors=errors,
    )
