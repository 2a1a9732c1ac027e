"""Ops: a member's profile (phone masked unless an admin reveals it, audited) and
deleting an account on the member's request (admin only, audited)."""

from __future__ import annotations

from fastapi import APIRouter

from mall.admin._phones import PhoneReveal
from mall.deps import AdminStaff, CurrentStaff
from mall.kit.bounds import Id
from mall.members import privacy
from mall.members.schemas import AdminDeletionIn, AdminDeletionOut, AdminMemberOut

router = APIRouter(tags=["admin: members"])

MemberId = Id


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
