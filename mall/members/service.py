"""Member login and profile, staff accounts, their login lock-out, and the login
sessions (refresh-token families) of both.

Staff login, in order, each step before anything costly:
1. the client address: its unsuccessful staff logins (any names) are counted up front and
   given back on success; past `staff_login_ip_max_failures` it gets 429. That is below
   `staff_max_failed_logins`, so one address can neither lock a name nor guess on.
2. the name: at most `staff_login_name_max_attempts` tries per window from everywhere, 429.
3. the lock, by name, in Redis, whether the name exists or not (so answers never tell
   which names exist): one Lua step hands out at most `staff_max_failed_logins` password
   checks per window; the last failing one, or any one asked for beyond, locks the name.
4. the password, checked in a worker thread; unknown names check a dummy hash.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F

from mall.config import get_settings
from mall.errors import FORBIDDEN, NOT_FOUND, TOKEN_INVALID, UNAUTHORIZED, ErrorCode
from mall.i18n import _
from mall.kit import clock, ratelimit
from mall.kit.bulk import driver_sql, select_in
from mall.kit.cache import Refreshing
from mall.kit.clientip import rate_key
from mall.kit.security import (
    TokenType,
    bearer_token,
    decode_token,
    hash_password,
    hash_password_async,
    issue_token,
    member_token,
    needs_rehash,
    new_token_id,
    verify_password_async,
)
from mall.members.models import AuthSession, Member, Staff
from mall.members.schemas import MemberOut, MeOut, TokenOut
from mall.redis import UNAVAILABLE, get_redis, script
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
SESSION_REVOKED = ErrorCode(
    "SESSION_REVOKED", 401, _("You have been logged out; please log in again")
)

SessionKind = Literal["member", "staff"]

# Hooks run after a member joins (e.g. the new-member gift pack); domains append here.
on_member_joined: list[Callable[[Member], Awaitable[None]]] = []


async def _resolve_openid(code: str) -> tuple[str, str | None]:
    settings = get_settings()
    if settings.dev_login_enabled and code.startswith("dev:"):
        name = code[4:].strip() or "anonymous"
        return f"dev_{name}"[:64], None
    session = await wechat.code2session(code)
    return session.openid, session.unionid


async def login_with_wechat(code: str, *, ip: str | None = None) -> tuple[Member, bool]:
    """Find or create the member by openid; `is_new` says whether it just joined.
    A login from a client (`ip` given: every route passes it) is limited per client
    address (429) before WeChat is asked."""
    settings = get_settings()
    if ip is not None:
        await ratelimit.hit(
            f"member-login-ip:{rate_key(ip)}",
            settings.member_login_ip_max_attempts,
            settings.member_login_ip_window_seconds,
        )
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


# --- sessions: refresh-token families --------------------------------------


@dataclass(frozen=True)
class Tokens:
    token: str
    refresh_token: str
    expires_in: int


def _now_s() -> int:
    return int(clock.now().timestamp())


def _tokens(
    kind: SessionKind, subject_id: int, sid: int, jti: str, ends: int, **claims: Any
) -> Tokens:
    """An access token (minutes; never past the session's end) and the refresh token `jti`
    of session `sid`, which lapses at `ends` (unix seconds)."""
    left = max(ends - _now_s(), 1)
    access_ttl = get_settings().access_token_ttl_seconds
    if kind == "staff":
        access_ttl = get_settings().staff_token_ttl_seconds
    access_ttl = min(access_ttl, left)
    refresh_typ: TokenType = "member_refresh" if kind == "member" else "staff_refresh"
    return Tokens(
        token=issue_token(subject_id, kind, access_ttl, sid=sid, **claims),
        refresh_token=issue_token(subject_id, refresh_typ, left, sid=sid, jti=jti),
        expires_in=access_ttl,
    )


async def _open_session(
    kind: SessionKind, subject_id: int, ip: str, ttl: int, **claims: Any
) -> Tokens:
    jti = new_token_id()
    ends = _now_s() + ttl
    session = await AuthSession.create(
        kind=kind,
        subject_id=subject_id,
        refresh_jti=jti,
        ip=ip[:64],
        expires_at=datetime.fromtimestamp(ends, UTC),
    )
    return _tokens(kind, subject_id, session.id, jti, ends, **claims)


async def _rotate(refresh_token: str, kind: SessionKind) -> tuple[int, int, str, int]:
    """Use a refresh token once: (subject id, session id, new jti, session end). A signed
    token of the session that is not its newest one was used before, so someone holds a
    copy: the whole session is revoked (the rightful client logs in again)."""
    payload = decode_token(refresh_token, "member_refresh" if kind == "member" else "staff_refresh")
    sid, jti = payload.get("sid"), payload.get("jti")
    if not isinstance(sid, int) or not isinstance(jti, str):
        raise TOKEN_INVALID()
    subject_id = int(payload["sub"])
    now = clock.now()
    # members' sessions slide with use; a staff session ends where its login said
    ends = _now_s() + get_settings().refresh_token_ttl_seconds
    if kind == "staff":
        ends = int(payload["exp"])
    new_jti = new_token_id()
    mine = AuthSession.filter(id=sid, kind=kind, subject_id=subject_id, revoked_at__isnull=True)
    rotated = await mine.filter(refresh_jti=jti).update(
        refresh_jti=new_jti,
        rotations=F("rotations") + 1,
        last_used_at=now,
        expires_at=datetime.fromtimestamp(ends, UTC),
    )
    if not rotated:
        if await mine.update(revoked_at=now, revoked_reason="reuse"):
            log.warning("reused refresh token: %s session %s revoked", kind, sid)
        raise SESSION_REVOKED()
    return subject_id, sid, new_jti, ends


async def revoke_session(session_id: int, reason: str = "logout") -> bool:
    """End one session: its refresh tokens at once, staff access tokens too."""
    updated = await AuthSession.filter(id=session_id, revoked_at__isnull=True).update(
        revoked_at=clock.now(), revoked_reason=reason[:16]
    )
    return bool(updated)


async def revoke_sessions(kind: SessionKind, subject_id: int, reason: str) -> int:
    """End every session of a member or staff account (e.g. account deleted, disabled)."""
    return await AuthSession.filter(
        kind=kind, subject_id=subject_id, revoked_at__isnull=True
    ).update(revoked_at=clock.now(), revoked_reason=reason[:16])


async def prune_sessions(older_than: timedelta = timedelta(days=7)) -> int:
    """Delete sessions that lapsed or were revoked more than `older_than` ago."""
    cutoff = clock.now() - older_than
    lapsed = await AuthSession.filter(expires_at__lt=cutoff).delete()
    revoked = await AuthSession.filter(revoked_at__lt=cutoff).delete()
    return lapsed + revoked


# --- members -----------------------------------------------------------------


def access_claims(member: Member) -> dict[str, Any]:
    """What a member access token carries besides the id, so a flash-sale attempt decides
    eligibility without a database read: `lv` level, `ph` phone bound (0/1), `jn` joined
    (unix seconds). They are as old as the token (minutes): a member who binds a phone or
    levels up refreshes the token to show it (flags are not claims: they live in Redis)."""
    return {
        "lv": int(member.level),
        "ph": 1 if member.phone else 0,
        "jn": int(member.created_at.timestamp()),
    }


async def tokens_for(member: Member, ip: str = "") -> TokenOut:
    """A new session for a member who just logged in."""
    tokens = await _open_session(
        "member", member.id, ip, get_settings().refresh_token_ttl_seconds, **access_claims(member)
    )
    return TokenOut(**tokens.__dict__)


async def refresh(refresh_token: str) -> tuple[Member, TokenOut]:
    member_id, sid, jti, ends = await _rotate(refresh_token, "member")
    member = await Member.get_or_none(id=member_id)
    if member is None or member.deleted_at is not None:  # a deleted account logs in no more
        await revoke_session(sid, "gone")
        raise TOKEN_INVALID()
    tokens = _tokens("member", member_id, sid, jti, ends, **access_claims(member))
    return member, TokenOut(**tokens.__dict__)


async def member_logout(token: str) -> None:
    """End the session of a member access token (its refresh tokens stop working; the
    access token itself lapses within minutes)."""
    sid = decode_token(token, "member").get("sid")
    if isinstance(sid, int):
        await revoke_session(sid)


async def member_from_token(token: str) -> Member:
    payload = decode_token(token, "member")
    member = await Member.get_or_none(id=int(payload["sub"]))
    if member is None or member.deleted_at is not None:  # a deleted account logs in no more
        raise TOKEN_INVALID()
    return member


# --- deleted accounts, on the routes that load no member -------------------------------
# The hot routes (their fast paths) and those that only need the member's id take a
# signed member token as proof and load no member: a deleted account's access tokens
# would work there until they expire. Each deletion is also written to Redis (a sorted
# set: member id -> deletion time, kept for as long as an access token lives), which
# every process reads at most a second late; those tokens are then refused.
DELETED_KEY = "mall:members:deleted"
DELETED_REFRESH_SECONDS = 1.0


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _token_life_ms() -> int:
    """How long an access token lives: a deletion older than that has no live token."""
    return get_settings().access_token_ttl_seconds * 1000


async def _load_deleted(_key: int) -> frozenset[int]:
    since = _ms(clock.now()) - _token_life_ms()
    found: list[Any] = await get_redis().zrangebyscore(DELETED_KEY, since, "+inf")
    return frozenset(int(member_id) for member_id in found)


_deleted = Refreshing(_load_deleted, DELETED_REFRESH_SECONDS, max_size=1)
# Redis unreachable before this process read the set once: not asked again until this
# monotonic time; 0.0 outside such an outage (so its warning is said once, at its start)
_unreadable_until = 0.0


async def _deleted_ids() -> frozenset[int]:
    """The accounts deleted within an access token's life. Redis unable to serve before
    the first read (down, or a cluster's failover): none, for a second at a time (the
    routes that need no Redis keep answering, as before deletions were written there;
    the hot routes need Redis anyway). Once read, a failed reload keeps the last copy."""
    global _unreadable_until
    if _unreadable_until > time.monotonic():
        return frozenset()
    try:
        found = await _deleted.get(0)
    except UNAVAILABLE as exc:  # what the routes answer 503 for: an outage, a failover
        if not _unreadable_until:
            log.warning("deleted accounts not read (Redis: %s); none refused until read", exc)
        _unreadable_until = time.monotonic() + DELETED_REFRESH_SECONDS
        return frozenset()
    if _unreadable_until:
        _unreadable_until = 0.0
        log.info("deleted accounts read again; their tokens are refused")
    return found


async def mark_deleted(member_id: int) -> None:
    """After an account's deletion committed: its access tokens are refused everywhere
    (this process at once, the others within `DELETED_REFRESH_SECONDS`)."""
    now = _ms(clock.now())
    async with get_redis().pipeline(transaction=False) as pipe:
        pipe.zadd(DELETED_KEY, {str(member_id): now})
        pipe.zremrangebyscore(DELETED_KEY, "-inf", f"({now - _token_life_ms()}")
        await pipe.execute()
    _deleted.forget()


async def member_of_token(token: str) -> tuple[int, dict[str, Any]]:
    """`kit.security.member_token` (the id and claims of a signed member token, no member
    loaded), TOKEN_INVALID for an account deleted since the token was issued."""
    member_id, claims = member_token(token)
    if member_id in await _deleted_ids():
        raise TOKEN_INVALID()
    return member_id, claims


async def member_of_header(authorization: str | None) -> tuple[int, dict[str, Any]]:
    """`member_of_token` of an `Authorization: Bearer` header, UNAUTHORIZED without one
    (the hot routes, which read their headers by hand)."""
    token = bearer_token(authorization)
    if token is None:
        raise UNAUTHORIZED()
    return await member_of_token(token)


def forget_deleted() -> None:
    """Read the deleted accounts from Redis again on the next check (tests)."""
    global _unreadable_until
    _unreadable_until = 0.0
    _deleted.forget()


async def get_member(member_id: int) -> Member:
    member = await Member.get_or_none(id=member_id)
    if member is None:
        raise MEMBER_NOT_FOUND()
    return member


async def locked(
    member_ids: Sequence[int], column: Literal["level", "points_balance"]
) -> dict[int, int]:
    """`column` of each member that exists (a missing one is left out), their rows locked
    in id order for the open transaction (PostgreSQL; SQLite's write transaction holds
    the whole database). A consumer's batch takes them before any other lock, so two
    batches wait for each other here instead of deadlocking."""
    if not member_ids:
        return {}
    conn = Member._choose_db(for_write=True)
    locking = " FOR UPDATE" if conn.capabilities.support_for_update else ""
    marks = ", ".join("?" * len(member_ids))
    sql = f"SELECT id, {column} FROM member WHERE id IN ({marks}) ORDER BY id{locking}"
    _n, found = await conn.execute_query(driver_sql(conn, sql), list(member_ids))
    return {int(row[0]): int(row[1]) for row in found}


async def birthdays(member_ids: list[int]) -> dict[int, date | None]:
    """The birthday (None: not on file) of each member that exists, in one query (the
    first draws of a burst); a missing member is left out."""
    rows: list[Any] = await Member.filter(id__in=member_ids).values_list("id", "birthday")
    return {int(member_id): birthday for member_id, birthday in rows}


@dataclass(frozen=True)
class MemberCard:
    """Who an account is, for ops lists that otherwise show member ids only."""

    nickname: str
    phone: str | None  # in full: answers type it `masking.Phone`, which masks it


async def cards(member_ids: Sequence[int]) -> dict[int, MemberCard]:
    """The nickname and phone of each live member among `member_ids`, in one query for
    a page (a query per 1,000 ids beyond); a missing or deleted member is left out."""
    ids = list(dict.fromkeys(member_ids))
    rows = await select_in(Member, "id", ids, ["id", "nickname", "phone", "deleted_at"])
    return {
        int(member_id): MemberCard(str(nickname or ""), str(phone) if phone else None)
        for member_id, nickname, phone, deleted_at in rows
        if deleted_at is None
    }


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
    password_hash = await hash_password_async(password)
    try:
        return await Staff.create(username=username, password_hash=password_hash, role=role)
    except IntegrityError:
        raise STAFF_EXISTS() from None


def _name_key(username: str) -> str:
    # a digest: names are any text a client sends, and a key must not be steered
    return hashlib.sha256(username.encode("utf-8")).hexdigest()[:24]


async def staff_login(username: str, password: str, *, ip: str) -> tuple[Staff, Tokens]:
    """Check a staff login (see the module docstring for the order) and open a session.
    Unknown names, inactive accounts and wrong passwords answer alike."""
    settings = get_settings()
    ip_bucket = f"staff-login-ip:{rate_key(ip)}"
    await ratelimit.hit(
        ip_bucket, settings.staff_login_ip_max_failures, settings.staff_login_ip_window_seconds
    )
    name = _name_key(username)
    await ratelimit.hit(
        f"staff-login-name:{name}",
        settings.staff_login_name_max_attempts,
        settings.staff_login_name_window_seconds,
    )
    keys = [f"stafflogin:{{{name}}}:fails", f"stafflogin:{{{name}}}:lock"]
    now_ms = int(clock.now().timestamp() * 1000)
    lockout_ms = settings.staff_lockout_seconds * 1000
    locked, value = await script("mall.members", "staff_login_reserve")(
        keys=keys, args=[now_ms, settings.staff_max_failed_logins, lockout_ms]
    )
    if int(locked):
        raise ACCOUNT_LOCKED(minutes=max(1, math.ceil(int(value) / 60_000)))
    staff = await Staff.get_or_none(username=username)
    # unknown names check a dummy hash: the same work, the same time
    checked = await verify_password_async(staff.password_hash if staff else _DUMMY_HASH, password)
    if not checked or staff is None or not staff.active:
        log.info("staff login failed ip=%s staff=%s", ip, staff.id if staff else "-")
        if int(value) >= settings.staff_max_failed_logins:
            await script("mall.members", "staff_login_lock")(keys=keys, args=[now_ms, lockout_ms])
            log.warning("staff login name locked ip=%s staff=%s", ip, staff.id if staff else "-")
            raise ACCOUNT_LOCKED(minutes=max(1, math.ceil(settings.staff_lockout_seconds / 60)))
        raise LOGIN_FAILED()
    await get_redis().delete(keys[0])
    await ratelimit.give_back(ip_bucket)
    changes: dict[str, Any] = {"last_login_at": clock.now()}
    if needs_rehash(staff.password_hash):  # hashed with older parameters
        changes["password_hash"] = await hash_password_async(password)
    await Staff.filter(id=staff.id).update(**changes)
    log.info("staff login staff=%s ip=%s", staff.id, ip)
    return staff, await staff_tokens(staff, ip)


async def staff_tokens(staff: Staff, ip: str = "") -> Tokens:
    """A new session for a staff account (the login above; tests skip the password)."""
    ttl = get_settings().staff_session_ttl_seconds
    return await _open_session("staff", staff.id, ip, ttl, role=staff.role)


async def staff_refresh(refresh_token: str) -> Tokens:
    staff_id, sid, jti, ends = await _rotate(refresh_token, "staff")
    staff = await Staff.get_or_none(id=staff_id)
    if staff is None or not staff.active:
        await revoke_session(sid, "inactive")
        raise TOKEN_INVALID()
    return _tokens("staff", staff_id, sid, jti, ends, role=staff.role)


async def staff_from_token(token: str) -> tuple[Staff, int]:
    """The staff account and session id of an access token; a token of a session that
    was logged out or revoked is refused at once (one indexed read per admin request)."""
    payload = decode_token(token, "staff")
    sid = payload.get("sid")
    if not isinstance(sid, int):
        raise TOKEN_INVALID()
    staff_id = int(payload["sub"])
    live = await AuthSession.filter(
        id=sid, kind="staff", subject_id=staff_id, revoked_at__isnull=True
    ).exists()
    if not live:
        raise SESSION_REVOKED()
    staff = await Staff.get_or_none(id=staff_id)
    if staff is None or not staff.active:
        raise TOKEN_INVALID()
    return staff, sid


async def list_staff() -> list[Staff]:
    return await Staff.all().order_by("id")


async def get_staff(staff_id: int) -> Staff:
    staff = await Staff.get_or_none(id=staff_id)
    if staff is None:
        raise NOT_FOUND()
    return staff


_DUMMY_HASH = hash_password("not-a-real-password")


async def search_members(
    q: str | None, cursor: str | None, size: int
) -> tuple[list[Member], str | None]:
    """Members for ops, newest first: `q` is a member id or a phone (both exact when all
    digits; a phone also by its start of 3-10 digits), an openid (exact) or a nickname
    (contains). No `q`: every member."""
    from tortoise.expressions import Q

    from mall.kit.pagination import cursor_page

    query = Member.all()
    text = (q or "").strip()
    if text:
        if text.isdigit():
            # a phone column holds at most 20 characters: longer digits are no phone
            found = Q(phone=text) if len(text) >= 11 else Q(phone__startswith=text)
            if len(text) > 20:
                found = Q(id=0)  # matches nothing
            if len(text) <= 18:  # an id fits a BIGINT
                found |= Q(id=int(text))
            if len(text) < 3:
                found = Q(id=int(text))
            query = query.filter(found)
        else:
            query = query.filter(Q(openid=text) | Q(nickname__icontains=text))
    return await cursor_page(query, cursor, size)


# --- suspicious patterns (fair sales) ---------------------------------------------------


async def shared_phones(min_members: int, limit: int) -> list[tuple[str, list[int]]]:
    """Phone numbers bound by at least `min_members` live members, most first:
    (phone, member ids)."""
    from tortoise.functions import Count

    rows = (
        await Member.filter(phone__isnull=False, phone__not="", deleted_at__isnull=True)
        .annotate(n=Count("id"))
        .group_by("phone")
        .filter(n__gte=min_members)
        .order_by("-n", "phone")
        .limit(limit)
        .values_list("phone", "n")
    )
    found: list[tuple[str, list[int]]] = []
    for phone, _n in rows:
        ids = await Member.filter(phone=phone, deleted_at__isnull=True).order_by("id").limit(200)
        found.append((str(phone), [m.id for m in ids]))
    return found


async def shared_login_addresses(
    since: datetime, min_members: int, limit: int
) -> list[tuple[str, list[int]]]:
    """Client addresses (IPs) that logged in at least `min_members` members since
    `since`, most first: (ip, member ids). Many accounts behind one address can also be
    one office or carrier NAT: a lead to look at, not a verdict."""
    from tortoise.functions import Count

    logins = AuthSession.filter(kind="member", created_at__gte=since, ip__not="")
    rows = (
        await logins.annotate(n=Count("subject_id", distinct=True))
        .group_by("ip")
        .filter(n__gte=min_members)
        .order_by("-n", "ip")
        .limit(limit)
        .values_list("ip", "n")
    )
    found: list[tuple[str, list[int]]] = []
    for ip, _n in rows:
        ids: list[Any] = (
            await logins.filter(ip=ip)
            .distinct()
            .order_by("subject_id")
            .limit(200)
            .values_list("subject_id", flat=True)
        )
        found.append((str(ip), [int(i) for i in ids]))
    return found
