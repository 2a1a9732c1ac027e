"""Ops: earning rules, points grants and deductions, marketplace order import, and
the overview figures."""

from __future__ import annotations

from datetime import date, timedelta

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile

from mall.audit import service as audit_service
from mall.deps import AdminStaff, CurrentStaff, IdempotencyKey
from mall.errors import VALIDATION_ERROR
from mall.kit import clock, idempotency
from mall.kit.bounds import Cursor, Id, Limit
from mall.kit.pagination import Page
from mall.points import service
from mall.points.schemas import (
    EntryOut,
    GrantIn,
    GrantOut,
    ImportOut,
    OverviewOut,
    RulesIn,
    RulesOut,
)

router = APIRouter(tags=["admin: points"])


@router.get("/rules", response_model=RulesOut)
async def get_rules(_staff: CurrentStaff) -> RulesOut:
    """The earning rules in force and their version (send it back as `base_version`)."""
    version, rules, at = await service.get_rules_version()
    return RulesOut(version=version, rules=rules, updated_at=at)


@router.put("/rules", response_model=RulesOut)
async def put_rules(body: RulesIn, admin: AdminStaff) -> RulesOut:
    """Replace the rules (admin only; audited). A stale `base_version` is refused."""
    await service.save_rules(body.rules, staff=admin, base_version=body.base_version)
    version, rules, at = await service.get_rules_version()
    return RulesOut(version=version, rules=rules, updated_at=at)


@router.post("/members/{member_id}/points", response_model=GrantOut, status_code=201)
async def grant(
    member_id: Id, body: GrantIn, staff: CurrentStaff, key: IdempotencyKey = None
) -> GrantOut:
    """Grant (positive) or deduct (negative) points with a reason; audited."""

    async def work() -> GrantOut:
        entry = await service.admin_adjust(
            member_id,
            body.points,
            reason=body.reason,
            staff=staff,
            idempotency_key=f"{staff.id}:{key}" if key else None,
            counts_for_growth=body.counts_for_growth,
            expires_at=body.expires_at,
        )
        return GrantOut(
            entry=EntryOut.model_validate(entry), balance=await service.get_balance(member_id)
        )

    answer = await idempotency.run(
        f"admin.points.grant:{staff.id}",
        key,
        idempotency.fingerprint(member_id, body.model_dump(mode="json")),
        work,
    )
    return GrantOut.model_validate(answer)


@router.get("/members/{member_id}/points", response_model=Page[EntryOut])
async def ledger(
    member_id: Id, _staff: CurrentStaff, cursor: Cursor | None = None, size: Limit = 50
) -> Page[EntryOut]:
    """A member's points ledger, newest first."""
    rows, next_cursor = await service.ledger_page(member_id, cursor, size)
    return Page[EntryOut](items=[EntryOut.model_validate(e) for e in rows], next_cursor=next_cursor)


@router.post("/external-orders/import", response_model=ImportOut)
async def import_orders(request: Request, staff: CurrentStaff) -> ImportOut:
    """Marketplace orders as CSV (a multipart `file`, or a text/csv body) or JSON (a list,
    or `{"orders": [...]}`). Columns: platform, order_no, phone, paid_fen, paid_at,
    status. Re-importing changes nothing; bad rows come back with their row number."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        async with request.form() as form:  # closes the spooled upload
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise VALIDATION_ERROR(fields=[{"field": "file", "message": "a file is required"}])
            data = await upload.read()
            content_type = upload.content_type or ""
            if (upload.filename or "").lower().endswith(".csv"):
                content_type = "text/csv"
            elif (upload.filename or "").lower().endswith(".json"):
                content_type = "application/json"
    else:
        data = await request.body()
    rows = service.parse_import(data, content_type)
    result = await service.import_external_orders(rows)
    await audit_service.record(
        staff,
        "points.external_orders.import",
        "external_orders",
        rows=result.rows,
        created=result.created,
        updated=result.updated,
        errors=len(result.errors),
    )
    return result


@router.get("/metrics/overview", response_model=OverviewOut)
async def overview(
    _staff: CurrentStaff, start: date | None = None, end: date | None = None
) -> OverviewOut:
    """Points issued / spent / expired and consumption rate (spent / issued), binding
    rate (bound / imported) over [start, end] in Shanghai days; default the last 30."""
    end = end or clock.today()
    start = start or end - timedelta(days=29)
    if start > end:
        raise VALIDATION_ERROR(fields=[{"field": "query.start", "message": "start after end"}])
    return OverviewOut.model_validate(await service.overview(start, end))
