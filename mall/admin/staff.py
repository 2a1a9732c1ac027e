"""Staff login, staff accounts (admin only) and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict

from mall.audit import service as audit_service
from mall.deps import AdminStaff, ClientIP, CurrentStaff
from mall.errors import TOKEN_INVALID, error_responses
from mall.kit.bounds import Cursor
from mall.kit.text import SafeLine
from mall.members import service as members_service
from mall.members.schemas import (
    RefreshIn,
    StaffCreateIn,
    StaffLoginIn,
    StaffLoginOut,
    StaffOut,
    TokenOut,
)

router = APIRouter(tags=["admin: staff"])


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    staff_username: str
    action: str
    target: str
    detail: dict[str, Any]
    created_at: datetime


@router.post("/login", response_model=StaffLoginOut)
async def login(body: StaffLoginIn, ip: ClientIP) -> StaffLoginOut:
    """Staff login. Too many failures from one address answer 429 `RATE_LIMITED`;
    repeated failures on one name lock it for a while (423 `ACCOUNT_LOCKED`), whether the
    name exists or not. The access token lasts minutes: renew it at `/refresh`."""
    staff, tokens = await members_service.staff_login(body.username, body.password, ip=ip)
    return StaffLoginOut(
        token=tokens.token,
        refresh_token=tokens.refresh_token,
        expires_in=tokens.expires_in,
        staff=StaffOut.model_validate(staff),
    )


@router.post(
    "/refresh",
    response_model=TokenOut,
    responses=error_responses(TOKEN_INVALID, members_service.SESSION_REVOKED),
)
async def refresh(body: RefreshIn) -> TokenOut:
    """A new access token and refresh token; each refresh token works once (an old one
    used again ends the session: 401 `SESSION_REVOKED`)."""
    tokens = await members_service.staff_refresh(body.refresh_token)
    return TokenOut(**tokens.__dict__)


@router.post("/logout", status_code=204, response_class=Response)
async def logout(request: Request, _staff: CurrentStaff) -> Response:
    """End this session: its refresh token and its access token stop working at once."""
    await members_service.revoke_session(request.state.staff_session_id)
    return Response(status_code=204)


@router.get("/me", response_model=StaffOut)
async def me(staff: CurrentStaff) -> StaffOut:
    return StaffOut.model_validate(staff)


@router.get("/staff", response_model=list[StaffOut])
async def list_staff(_admin: AdminStaff) -> list[StaffOut]:
    return [StaffOut.model_validate(s) for s in await members_service.list_staff()]


@router.post("/staff", response_model=StaffOut, status_code=201)
async def create_staff(body: StaffCreateIn, admin: AdminStaff) -> StaffOut:
    staff = await members_service.create_staff(body.username, body.password, body.role)
    await audit_service.record(
        admin, "staff.create", f"staff:{staff.id}", username=staff.username, role=staff.role
    )
    return StaffOut.model_validate(staff)


@router.get("/audit-log", response_model=list[AuditOut])
async def audit_log(
    _admin: AdminStaff,
    response: Response,
    action: Annotated[SafeLine | None, Query(max_length=64)] = None,
    staff: Annotated[
        SafeLine | None, Query(max_length=64, description='staff username; "system" for jobs')
    ] = None,
    target: Annotated[
        SafeLine | None, Query(max_length=128, description="e.g. order:42, exact")
    ] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: Cursor | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AuditOut]:
    """Staff writes newest first, filtered by action, staff, target and time
    [since, until) (a time without offset is Shanghai time); the next page's cursor is in
    the `X-Next-Cursor` header."""
    rows, next_cursor = await audit_service.search(
        action=action,
        staff=staff,
        target=target,
        since=since,
        until=until,
        cursor=int(cursor) if cursor else None,
        limit=limit,
    )
    if next_cursor is not None:
        response.headers["X-Next-Cursor"] = str(next_cursor)
    return [AuditOut.model_validate(a) for a in rows]
