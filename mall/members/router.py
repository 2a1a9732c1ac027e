from __future__ import annotations

from fastapi import APIRouter, Response

from mall.deps import BearerToken, ClientIP, CurrentMember
from mall.members import service
from mall.members.schemas import (
    LoginOut,
    MemberOut,
    MeOut,
    MePatch,
    PhoneIn,
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
