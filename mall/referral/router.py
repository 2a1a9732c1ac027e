from __future__ import annotations

from fastapi import APIRouter

from mall.deps import ClientIP, CurrentMember
from mall.errors import MallError
from mall.kit.bounds import Cursor, Limit
from mall.kit.pagination import Page
from mall.members import service as members_service
from mall.members.schemas import MemberOut
from mall.referral import service
from mall.referral.models import ReferralBinding
from mall.referral.schemas import (
    BindIn,
    BindingOut,
    CommissionOut,
    MyReferralOut,
    ReferralResult,
    ShareLoginIn,
    ShareLoginOut,
)

router = APIRouter(prefix="/api/v1", tags=["referral"])


def _binding_out(b: ReferralBinding) -> BindingOut:
    return BindingOut(
        customer_id=b.customer_id,
        promoter_id=b.promoter_id,
        code=b.code,
        source=b.source,
        bound_at=b.bound_at,
    )


@router.get("/referral/me", response_model=MyReferralOut)
async def my_referral(member: CurrentMember) -> MyReferralOut:
    """My share code, my level and rate, how many customers are bound to me, and my net
    commission."""
    return MyReferralOut.model_validate(await service.my_referral(member))


@router.post("/referral/bind", response_model=BindingOut)
async def bind(body: BindIn, member: CurrentMember) -> BindingOut:
    """Bind me to the promoter whose share code I joined through: only within
    `referral_bind_days` (7) of joining, never to my own code, and only once (the first
    binding wins; sending the same code again answers the same binding)."""
    return _binding_out(await service.bind(member, body.code))


@router.post("/referral/wechat-login", response_model=ShareLoginOut)
async def login_with_share_code(body: ShareLoginIn, ip: ClientIP) -> ShareLoginOut:
    """`/auth/wechat-login` for a mini-program opened from a share: logs in (creating the
    member on first login) and binds the share code. A code that cannot be bound never
    fails the login; `referral.error` says why."""
    member, is_new = await members_service.login_with_wechat(body.code, ip=ip)
    result: ReferralResult | None = None
    if body.share_code:
        try:
            await service.bind(member, body.share_code, source="login")
            result = ReferralResult(bound=True)
        except MallError as exc:
            result = ReferralResult(bound=False, error=exc.code)
    tokens = await members_service.tokens_for(member, ip)
    return ShareLoginOut(
        **tokens.model_dump(),
        member=MemberOut.model_validate(member),
        is_new=is_new,
        referral=result,
    )


@router.get("/referral/commissions", response_model=Page[CommissionOut])
async def my_commissions(
    member: CurrentMember,
    cursor: Cursor | None = None,
    size: Limit = 20,
) -> Page[CommissionOut]:
    """My commission entries, newest first (refunds show as negative entries)."""
    promoter = await service.promoter_for_member(member.id)
    rows, next_cursor = await service.commissions_page(
        promoter_id=promoter.id, cursor=cursor, size=size
    )
    return Page[CommissionOut](
        items=[CommissionOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )
