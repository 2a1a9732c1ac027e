"""Staff login, staff accounts (admin only) and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from mall.audit import service as audit_service
from mall.config import get_settings
from mall.deps import AdminStaff, CurrentStaff
from mall.kit.text import SafeLine
from mall.members import service as members_service
from mall.members.schemas import StaffCreateIn, StaffLoginIn, StaffLoginOut, StaffOut

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
async def login(body: StaffLoginIn) -> StaffLoginOut:
    """Staff login; locks the account for a while after repeated failures."""
    staff, token = await members_service.staff_login(body.username, body.password)
    return StaffLoginOut(
        token=token,
        expires_in=get_settings().staff_token_ttl_seconds,
        staff=StaffOut.model_validate(staff),
    )


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
    action: Annotated[SafeLine | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AuditOut]:
    return [AuditOut.model_validate(a) for a in await audit_service.recent(limit, action)]
