"""Ops: a member's profile (phone masked unless an admin reveals it, audited) and
deleting an account on the member's request (admin only, audited)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from mall.admin._phones import PhoneReveal
from mall.coupons import service as coupons_service
from mall.coupons.router import coupon_out
from mall.coupons.schemas import CouponPage
from mall.deps import AdminStaff, CurrentStaff
from mall.kit.bounds import Cursor, Id, Limit
from mall.kit.pagination import Page
from mall.kit.text import SafeLine
from mall.members import privacy
from mall.members import service as members_service
from mall.members.schemas import AdminDeletionIn, AdminDeletionOut, AdminMemberOut

router = APIRouter(tags=["admin: members"])

MemberId = Id


@router.get("/members", response_model=Page[AdminMemberOut])
async def search_members(
    _staff: CurrentStaff,
    _reveal: PhoneReveal,
    q: Annotated[
        SafeLine | None,
        Query(
            max_length=64, description="member id, phone (or its first digits), openid or nickname"
        ),
    ] = None,
    cursor: Cursor | None = None,
    size: Limit = 20,
) -> Page[AdminMemberOut]:
    """Members newest first, found by id, phone, openid or nickname. Phones are masked
    unless an admin asks `?reveal=phone` (audited)."""
    rows, next_cursor = await members_service.search_members(q, cursor, size)
    return Page[AdminMemberOut](
        items=[AdminMemberOut.model_validate(m) for m in rows], next_cursor=next_cursor
    )


@router.get("/members/{member_id}/coupons", response_model=CouponPage)
async def member_coupons(
    member_id: MemberId,
    _staff: CurrentStaff,
    status: Literal["usable", "locked", "used", "expired", "voided"] | None = None,
    cursor: Cursor | None = None,
    size: Limit = 50,
) -> CouponPage:
    """A member's coupons, newest first (`usable` excludes those past expiry)."""
    rows, next_cursor = await coupons_service.list_coupons(member_id, status, cursor, size)
    return CouponPage(items=[coupon_out(c) for c in rows], next_cursor=next_cursor)


@router.get(
    "/members/{member_id}",
    response_model=AdminMemberOut,
    responses={403: {"description": "PHONE_REVEAL_FORBIDDEN: only admins may reveal"}},
)
async def get_member(
    member_id: MemberId, _staff: CurrentStaff, _reveal: PhoneReveal
) -> AdminMemberOut:
    """A member's profile. The phone is masked (138****8000); an admin may add
    `?reveal=phone` to see it in full, which is audited. A deleted account shows
    `deleted_at` and no personal data."""
    return AdminMemberOut.model_validate(await privacy.member_for_staff(member_id))


@router.post(
    "/members/{member_id}/deletion",
    response_model=AdminDeletionOut,
    responses={
        409: {
            "description": "WALLET_BALANCE_NOT_REFUNDED, UNFINISHED_ORDERS, "
            "UNFINISHED_REDEMPTIONS, PAYMENT_IN_PROGRESS; nothing was changed"
        },
    },
)
async def delete_member(
    member_id: MemberId, body: AdminDeletionIn, staff: AdminStaff
) -> AdminDeletionOut:
    """Delete an account on the member's request made to customer service (admin only),
    exactly as the member's own `POST /api/v1/me/deletion` would; audited with the
    reason. Repeating it answers `already_deleted` and changes nothing."""
    done = await privacy.delete_account(member_id, staff=staff, reason=body.reason)
    return AdminDeletionOut(
        member_id=done.member_id,
        deleted_at=done.deleted_at,
        already_deleted=done.already_deleted,
        erased=done.erased,
    )
