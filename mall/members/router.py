from __future__ import annotations

from fastapi import APIRouter

from mall.deps import CurrentMember
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
async def wechat_login(body: WeChatLoginIn) -> LoginOut:
    """Exchange a `wx.login` code for a token; creates the member on first login."""
    member, is_new = await service.login_with_wechat(body.code)
    tokens = service.tokens_for(member).model_dump()
    return LoginOut(member=MemberOut.model_validate(member), is_new=is_new, **tokens)


@router.post("/auth/refresh", response_model=TokenOut)
async def refresh(body: RefreshIn) -> TokenOut:
    _member, tokens = await service.refresh(body.refresh_token)
    return tokens


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
