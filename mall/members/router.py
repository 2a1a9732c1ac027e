from __future__ import annotations

from fastapi import APIRouter, Response

from mall.deps import BearerToken, ClientIP, CurrentMember
from mall.members import privacy, service
from mall.members.schemas import (
    DeletionCheckOut,
    DeletionIn,
    DeletionOut,
    LoginOut,
    MemberExportOut,
    MemberOut,
    MeOut,
    MePatch,
    PhoneIn,
    ProblemOut,
    RefreshIn,
    TokenOut,
    WeChatLoginIn,
)

router = APIRouter(prefix="/api/v1", tags=["members"])


@router.post("/auth/wechat-login", response_model=LoginOut)
async def wechat_login(body: WeChatLoginIn, ip: ClientIP) -> LoginOut:
    """Exchange a `wx.login` code for a token; creates the member on first login.
    The access token lasts `expires_in` seconds (minutes); renew it with the refresh
    token. Limited per client address (429 `RATE_LIMITED`)."""
    member, is_new = await service.login_with_wechat(body.code, ip=ip)
    tokens = (await service.tokens_for(member, ip)).model_dump()
    return LoginOut(member=MemberOut.model_validate(member), is_new=is_new, **tokens)


@router.post("/auth/refresh", response_model=TokenOut)
async def refresh(body: RefreshIn) -> TokenOut:
    """A new access token and a new refresh token. Each refresh token works once: keep
    the new one. Using an old one again ends the session (401 `SESSION_REVOKED`)."""
    _member, tokens = await service.refresh(body.refresh_token)
    return tokens


@router.post("/auth/logout", status_code=204, response_class=Response)
async def logout(token: BearerToken) -> Response:
    """End this login: its refresh token stops working."""
    await service.member_logout(token)
    return Response(status_code=204)


@router.post("/auth/phone", response_model=MemberOut)
async def bind_phone(body: PhoneIn, member: CurrentMember) -> MemberOut:
    """Bind the phone number from a getPhoneNumber button code."""
    return MemberOut.model_validate(await service.bind_phone(member, body.code))


@router.get("/me", response_model=MeOut)
async def me(member: CurrentMember) -> MeOut:
    return await service.profile(member)


@router.patch("/me", response_model=MeOut)
async def patch_me(body: MePatch, member: CurrentMember) -> MeOut:
    """Nickname, avatar, and the birthday (only once)."""
    updated = await service.update_profile(
        member, nickname=body.nickname, avatar_url=body.avatar_url, birthday=body.birthday
    )
    return await service.profile(updated)


# --- privacy (PIPL): delete the account, export one's data ----------------------------


@router.get("/me/deletion", response_model=DeletionCheckOut)
async def deletion_check(member: CurrentMember) -> DeletionCheckOut:
    """Before deleting the account: what must finish first (`blockers`, e.g. a stored-value
    balance to refund or an order on its way) and what deleting gives up (`forfeits`)."""
    check = await privacy.deletion_check(member.id)
    return DeletionCheckOut(
        can_delete=not check.blockers,
        blockers=[
            ProblemOut(code=body["code"], message=body["message"], details=body.get("details", {}))
            for body in (b.body()["error"] for b in check.blockers)
        ],
        forfeits=check.forfeits,
    )


@router.post(
    "/me/deletion",
    response_model=DeletionOut,
    responses={
        409: {
            "description": "WALLET_BALANCE_NOT_REFUNDED, UNFINISHED_ORDERS, "
            "UNFINISHED_REDEMPTIONS, PAYMENT_IN_PROGRESS; nothing was changed"
        },
    },
)
async def delete_account(body: DeletionIn, member: CurrentMember) -> DeletionOut:
    """Delete the account (`{"confirm": true}`). Nickname, avatar, phone, birthday,
    addresses and the WeChat identity are erased; points left and the top-up bonus are
    forfeited; orders, ledgers and coupons stay, anonymous, for the accounts. Every
    token of the account stops working; logging in with the same WeChat account later
    creates a new member, so a retry after success answers 401 `TOKEN_INVALID`.
    Refused, changing nothing, while stored value (principal) is left or an order, a
    payment or a refund is still under way: see `GET /me/deletion`."""
    done = await privacy.delete_account(member.id, reason=body.reason)
    return DeletionOut(
        member_id=done.member_id, deleted_at=done.deleted_at, already_deleted=done.already_deleted
    )


@router.get(
    "/me/export",
    response_model=MemberExportOut,
    responses={429: {"description": "RATE_LIMITED: a few exports per hour"}},
)
async def export_my_data(member: CurrentMember, response: Response) -> MemberExportOut:
    """A copy of everything the mall keeps about you, as JSON: profile, addresses, points
    ledger and lots, sign-ins, coupons, wallet ledger and top-ups, orders with lines and
    refunds, redemptions, flash-sale wins, blind-box draws, referral binding, subscribe
    permissions and auto tags. Sent as a download."""
    export = await privacy.export_data(member.id)
    response.headers["Content-Disposition"] = (
        f'attachment; filename="mall-member-{member.id}-data.json"'
    )
    response.headers["Cache-Control"] = "no-store"
    return MemberExportOut(
        member_id=export.member_id,
        generated_at=export.generated_at,
        sections=export.sections,
        truncated=export.truncated,
    )
