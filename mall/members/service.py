"""Member login and profile, staff accounts and their login lock-out."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import date, timedelta

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F

from mall.config import get_settings
from mall.errors import FORBIDDEN, NOT_FOUND, TOKEN_INVALID, ErrorCode
from mall.i18n import _
from mall.kit import clock
from mall.kit.security import decode_token, hash_password, issue_token, verify_password
from mall.members.models import Member, Staff
from mall.members.schemas import MemberOut, MeOut, TokenOut
from mall.wechat import client as wechat

log = logging.getLogger("mall.members")

BIRTHDAY_ALREADY_SET = ErrorCode(
    "BIRTHDAY_ALREADY_SET", 409, _("Your birthday is already set and cannot be changed")
)
BIRTHDAY_INVALID = ErrorCode("BIRTHDAY_INVALID", 422, _("The birthday is not a valid date"))
LOGIN_FAILED = ErrorCode("LOGIN_FAILED", 401, _("Wrong username or password"))
ACCOUNT_LOCKED = ErrorCode(
    "ACCOUNT_LOCKED", 423, _("Too many failed logins; try again in {minutes} minutes")
)
STAFF_EXISTS = ErrorCode("STAFF_EXISTS", 409, _("A staff account with this name already exists"))
MEMBER_NOT_FOUND = ErrorCode("MEMBER_NOT_FOUND", 404, _("Member not found"))

# Hooks run after a member joins (e.g. the new-member gift pack); domains append here.
on_member_joined: list[Callable[[Member], Awaitable[None]]] = []


async def _resolve_openid(code: str) -> tuple[str, str | None]:
    settings = get_settings()
    if settings.dev_login_enabled and code.startswith("dev:"):
        name = code[4:].strip() or "anonymous"
        return f"dev_{name}"[:64], None
    session = await wechat.code2session(code)
    return session.openid, session.unionid


async def login_with_wechat(code: str) -> tuple[Member, bool]:
    """Find or create the member by openid; `is_new` says whether it just joined."""
    openid, unionid = await _resolve_openid(code)
    member = await Member.get_or_none(openid=openid)
    if member is not None:
        if unionid and member.unionid != unionid:
            await Member.filter(id=member.id).update(unionid=unionid)
            member.unionid = unionid
        return member, False
    nickname = openid[4:] if openid.startswith("dev_") else ""
    try:
        member = await Member.create(openid=openid, unionid=unionid, nickname=nickname[:32])
    except IntegrityError:  # two first logins at once: the other one created it
        return await Member.get(openid=openid), False
    for hook in on_member_joined:
        try:
            await hook(member)
        except Exception:
            log.exception("member-joined hook failed member=%s", member.id)
    return member, True


def tokens_for(member: Member) -> TokenOut:
    settings = get_settings()
    return TokenOut(
        token=issue_token(member.id, "member", settings.access_token_ttl_seconds),
        refresh_token=issue_token(member.id, "member_refresh", settings.refresh_token_ttl_seconds),
        expires_in=settings.access_token_ttl_seconds,
    )


async def refresh(refresh_token: str) -> tuple[Member, TokenOut]:
    payload = decode_token(refresh_token, "member_refresh")
    member = await Member.get_or_none(id=int(payload["sub"]))
    if member is None or member.deleted_at is not None:  # a deleted account logs in no more
        raise TOKEN_INVALID()
    return member, tokens_for(member)


async def member_from_token(token: str) -> Member:
    payload = decode_token(token, "member")
    member = await Member.get_or_none(id=int(payload["sub"]))
    if member is None or member.deleted_at is not None:  # a deleted account logs in no more
        raise TOKEN_INVALID()
    return member


async def get_member(member_id: int) -> Member:
    member = await Member.get_or_none(id=member_id)
    if member is None:
        raise MEMBER_NOT_FOUND()
    return member


async def bind_phone(member: Member, code: str) -> Member:
    info = await wechat.get_phone_number(
        code, openid=None if member.openid.startswith("dev_") else member.openid
    )
    # mainland numbers are kept bare (order binding matches them); others keep their prefix
    country = info.country_code.lstrip("+")
    if not info.pure_phone_number:
        phone = info.phone_number[:20]
    elif country in ("", "86"):
        phone = info.pure_phone_number
    else:
        phone = f"+{country}{info.pure_phone_number}"[:20]
    await Member.filter(id=member.id).update(phone=phone)
    member.phone = phone
    return member


async def update_profile(
    member: Member, *, nickname: str | None, avatar_url: str | None, birthday: date | None
) -> Member:
    changes: dict[str, object] = {}
    if nickname is not None:
        changes["nickname"] = nickname
    if avatar_url is not None:
        changes["avatar_url"] = avatar_url
    if changes:
        await Member.filter(id=member.id).update(**changes)
    if birthday is not None:
        if birthday > clock.today() or birthday.year < 1900:
            raise BIRTHDAY_INVALID()
        # set once: a conditional update, so two racing requests cannot both set it
        updated = await Member.filter(id=member.id, birthday__isnull=True).update(birthday=birthday)
        if not updated:
            raise BIRTHDAY_ALREADY_SET()
    await member.refresh_from_db()
    return member


# Other domains add figures to the profile (level name, wallet balance) here.
profile_extras: list[Callable[[Member], Awaitable[dict[str, object]]]] = []


async def profile(member: Member) -> MeOut:
    extra: dict[str, object] = {}
    for provider in profile_extras:
        extra.update(await provider(member))
    return MeOut.model_validate({**MemberOut.model_validate(member).model_dump(), **extra})


def age_on(birthday: date, day: date) -> int:
    return day.year - birthday.year - ((day.month, day.day) < (birthday.month, birthday.day))


# --- staff -----------------------------------------------------------------


async def create_staff(username: str, password: str, role: str = "ops") -> Staff:
    if role not in ("admin", "ops"):
        raise FORBIDDEN()
    try:
        return await Staff.create(
            username=username, password_hash=hash_password(password), role=role
        )
    except IntegrityError:
        raise STAFF_EXISTS() from None


async def staff_login(username: str, password: str) -> tuple[Staff, str]:
    settings = get_settings()
    staff = await Staff.get_or_none(username=username)
    now = clock.now()
    if staff is None or not staff.active:
        verify_password(_DUMMY_HASH, password)  # same cost for unknown users
        raise LOGIN_FAILED()
    if staff.locked_until and staff.locked_until > now:
        minutes = max(1, int((staff.locked_until - now).total_seconds() // 60) + 1)
        raise ACCOUNT_LOCKED(minutes=minutes)
    if not verify_password(staff.password_hash, password):
        await Staff.filter(id=staff.id).update(failed_logins=F("failed_logins") + 1)
        await staff.refresh_from_db()
        if staff.failed_logins >= settings.staff_max_failed_logins:
            until = now + timedelta(seconds=settings.staff_lockout_seconds)
            await Staff.filter(id=staff.id).update(locked_until=until, failed_logins=0)
            raise ACCOUNT_LOCKED(minutes=settings.staff_lockout_seconds // 60)
        raise LOGIN_FAILED()
    await Staff.filter(id=staff.id).update(failed_logins=0, locked_until=None, last_login_at=now)
    token = issue_token(staff.id, "staff", settings.staff_token_ttl_seconds, role=staff.role)
    return staff, token


async def staff_from_token(token: str) -> Staff:
    payload = decode_token(token, "staff")
    staff = await Staff.get_or_none(id=int(payload["sub"]))
    if staff is None or not staff.active:
        raise TOKEN_INVALID()
    return staff


async def list_staff() -> list[Staff]:
    return await Staff.all().order_by("id")


async def get_staff(staff_id: int) -> Staff:
    staff = await Staff.get_or_none(id=staff_id)
    if staff is None:
        raise NOT_FOUND()
    return staff


_DUMMY_HASH = hash_password("not-a-real-password")
