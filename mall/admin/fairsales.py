"""Ops routes for fair flash sales: bookings of a session, member flags (audited, with a
reason) and the patterns scalpers leave: many accounts on one phone, one delivery
address or one login address. Phones are masked like every ops answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from mall.deps import CurrentStaff
from mall.kit.bounds import Cursor, Id, Limit
from mall.kit.masking import mask_text, phone_out
from mall.kit.pagination import Page
from mall.members import service as members_service
from mall.seckill import fair
from mall.seckill.schemas import AdminBookingOut, FlagIn, FlagOut, SharedMemberOut, SharedOut

router = APIRouter(tags=["admin: fair sales"])

MinMembers = Annotated[int, Query(ge=2, le=1000, description="At least this many accounts")]
Days = Annotated[int, Query(ge=1, le=90, description="Logins of the last N days")]
SharedLimit = Annotated[int, Query(ge=1, le=200)]


@router.get("/seckill/sessions/{session_id}/bookings", response_model=Page[AdminBookingOut])
async def bookings(
    session_id: Id, _staff: CurrentStaff, cursor: Cursor | None = None, size: Limit = 50
) -> Page[AdminBookingOut]:
    """Bookings of a session (cancelled ones too), newest first, with the reminder state
    (`due`, `sending`, `sent`, `no_grant`, `capped`, `refused`, `cancelled`)."""
    rows, next_cursor = await fair.session_bookings(session_id, cursor, size)
    cards = await members_service.cards([r.member_id for r in rows])
    return Page[AdminBookingOut](
        items=[
            AdminBookingOut(
                id=r.id,
                member_id=r.member_id,
                **_card_fields(cards.get(r.member_id)),
                created_at=r.created_at,
                cancelled_at=r.cancelled_at,
                reminder=r.reminder.value,
                reminded_at=r.reminded_at,
            )
            for r in rows
        ],
        next_cursor=next_cursor,
    )


def _card_fields(card: members_service.MemberCard | None) -> dict[str, str | None]:
    """Who a listed member is (nothing for an account that no longer exists)."""
    if card is None:
        return {}
    return {"member_nickname": card.nickname, "member_phone": card.phone}


async def _flags_out(flags: list[Any]) -> list[FlagOut]:
    """`flags`: MemberFlag rows (a router imports no other domain's models)."""
    out = [FlagOut.model_validate(f, from_attributes=True) for f in flags]
    cards = await members_service.cards([f.member_id for f in out])
    return [f.model_copy(update=_card_fields(cards.get(f.member_id))) for f in out]


@router.post("/seckill/members/{member_id}/flag", response_model=FlagOut)
async def flag_member(member_id: Id, body: FlagIn, staff: CurrentStaff) -> FlagOut:
    """Flag a member as a suspected scalper (or change the reason). Sales that exclude
    flagged members turn them away from their next attempt, without a new login."""
    return (await _flags_out([await fair.flag(member_id, body.reason, staff)]))[0]


@router.post("/seckill/members/{member_id}/unflag", status_code=204, response_class=Response)
async def unflag_member(member_id: Id, body: FlagIn, staff: CurrentStaff) -> Response:
    """Lift a flag (the reason is audited). Not flagged: 204 all the same."""
    await fair.unflag(member_id, body.reason, staff)
    return Response(status_code=204)


@router.get("/seckill/flags", response_model=list[FlagOut])
async def flags(
    _staff: CurrentStaff,
    before_id: Annotated[Id | None, Query(description="Page on from this flag id")] = None,
    limit: Limit = 50,
) -> list[FlagOut]:
    """Flagged members, newest flag first."""
    return await _flags_out(await fair.flags(before_id, limit))


async def _shared_out(found: list[fair.Shared]) -> list[SharedOut]:
    # one look-up for the members of every group of the page
    cards = await members_service.cards([m for s in found for m in s.member_ids])

    def member(member_id: int) -> SharedMemberOut:
        card = cards.get(member_id)
        if card is None:
            return SharedMemberOut(id=member_id)
        return SharedMemberOut(id=member_id, nickname=card.nickname, phone=card.phone)

    return [
        SharedOut(
            value=s.value,
            member_count=len(s.member_ids),
            member_ids=s.member_ids,
            flagged_ids=s.flagged_ids,
            members=[member(m) for m in s.member_ids],
        )
        for s in found
    ]


@router.get("/seckill/suspicious/phones", response_model=list[SharedOut])
async def shared_phones(
    _staff: CurrentStaff, min_members: MinMembers = 2, limit: SharedLimit = 50
) -> list[SharedOut]:
    """Phone numbers bound by several accounts, most accounts first."""
    found = await fair.shared_phones(min_members, limit)
    for s in found:
        s.value = phone_out(s.value) or ""
    return await _shared_out(found)


@router.get("/seckill/suspicious/addresses", response_model=list[SharedOut])
async def shared_addresses(
    _staff: CurrentStaff, min_members: MinMembers = 2, limit: SharedLimit = 50
) -> list[SharedOut]:
    """Delivery addresses (normalized: width, case, spaces and punctuation ignored) saved
    by several accounts, most accounts first; `value` is one of them as typed."""
    found = await fair.shared_addresses(min_members, limit)
    for s in found:
        s.value = mask_text(s.value)
    return await _shared_out(found)


@router.get("/seckill/suspicious/logins", response_model=list[SharedOut])
async def shared_logins(
    _staff: CurrentStaff, days: Days = 7, min_members: MinMembers = 2, limit: SharedLimit = 50
) -> list[SharedOut]:
    """Client addresses (IPs) several accounts logged in from in the last `days`. One
    office or mobile carrier can put many honest members behind one address: a lead."""
    return await _shared_out(await fair.shared_login_ips(days, min_members, limit))
