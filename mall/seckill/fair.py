"""Fair sales: bookings (预约) and their reminders, member flags, suspicious patterns.

The attempt itself decides eligibility in its one Lua call (attempt.py); this module keeps
what that call reads in step with the database: a live booking is in the `booked` set of
each warm item of its session, a flag in the `flagged` set of every warm item (the
database first, then Redis; a cold item loads both when it warms, see stock.warm).

Booking checks the sale's rules against the member row (not a hot path), so a member
who could not win cannot book either. Reminders: one subscribe message per booking, a
few minutes before the start, under the monthly touch cap; a booking is claimed by a
conditional update before sending, so it is never reminded twice."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from mall.addresses import service as addresses_service
from mall.audit import service as audit_service
from mall.audit.service import Actor
from mall.config import get_settings
from mall.errors import ErrorCode, MallError
from mall.i18n import _, translate
from mall.kit import clock
from mall.kit.bulk import select_in
from mall.kit.pagination import cursor_page
from mall.members import service as members_service
from mall.members.models import Member
from mall.seckill import stock
from mall.seckill.attempt import ineligible
from mall.seckill.models import (
    BookingReminder,
    MemberFlag,
    SeckillBooking,
    SeckillItem,
    SeckillSession,
    SessionStatus,
)
from mall.seckill.service import get_session
from mall.touch import service as touch_service
from mall.wechat import client as wechat_client

log = logging.getLogger("mall.seckill")

SECKILL_BOOKING_CLOSED = ErrorCode(
    "SECKILL_BOOKING_CLOSED", 409, _("Bookings close when the flash sale starts")
)
SECKILL_BOOKING_NOT_FOUND = ErrorCode(
    "SECKILL_BOOKING_NOT_FOUND", 404, _("You have not booked this flash sale")
)
REMINDER_KIND = "seckill_booking"
REMINDER_NOTE = _("Your flash sale starts soon")


async def _item_ids(session_id: int) -> list[int]:
    ids: list[Any] = await SeckillItem.filter(session_id=session_id).values_list("id", flat=True)
    return [int(i) for i in ids]


# --- eligibility from the member row (booking; the attempt reads the token) ----------


async def check_member(session: SeckillSession, member: Member) -> None:
    """Raise the attempt's SECKILL_* error for the first rule (but booking) the member
    fails, read from the database."""
    if session.require_phone and not member.phone:
        raise ineligible("phone")
    if session.joined_before is not None and member.created_at >= session.joined_before:
        raise ineligible("joined", str(stock.ms(session.joined_before)))
    if member.level < session.min_level:
        raise ineligible("level", str(session.min_level))
    if session.exclude_flagged and await MemberFlag.exists(member_id=member.id):
        raise ineligible("flagged")


# --- bookings -------------------------------------------------------------------------


async def book(session_id: int, member: Member) -> SeckillBooking:
    """Book a session before it starts (idempotent: booking again keeps the booking)."""
    session = await get_session(session_id)
    if session.status == SessionStatus.CLOSED or clock.now() >= session.starts_at:
        raise SECKILL_BOOKING_CLOSED()
    await check_member(session, member)
    booking = await SeckillBooking.get_or_none(session_id=session.id, member_id=member.id)
    if booking is None:
        try:
            booking = await SeckillBooking.create(session_id=session.id, member_id=member.id)
        except IntegrityError:  # a double tap: the other request created it
            booking = await SeckillBooking.get(session_id=session.id, member_id=member.id)
    if booking.cancelled_at is not None:
        await SeckillBooking.filter(id=booking.id).update(cancelled_at=None)
        # a reminder already sent (or refused...) before the cancel is not sent again
        await SeckillBooking.filter(id=booking.id, reminder=BookingReminder.CANCELLED).update(
            reminder=BookingReminder.DUE
        )
        await booking.refresh_from_db()
    await stock.mark_member("booked", await _item_ids(session.id), member.id, on=True)
    return booking


async def cancel(session_id: int, member_id: int) -> None:
    """Cancel a booking before the sale starts (after that it is the ticket in)."""
    session = await get_session(session_id)
    if clock.now() >= session.starts_at:
        raise SECKILL_BOOKING_CLOSED()
    cancelled = await SeckillBooking.filter(
        session_id=session.id, member_id=member_id, cancelled_at__isnull=True
    ).update(cancelled_at=clock.now())
    if not cancelled:
        raise SECKILL_BOOKING_NOT_FOUND()
    # a reminder not sent yet is not sent any more
    await SeckillBooking.filter(
        session_id=session.id, member_id=member_id, reminder=BookingReminder.DUE
    ).update(reminder=BookingReminder.CANCELLED)
    await stock.mark_member("booked", await _item_ids(session.id), member_id, on=False)


async def my_bookings(member_id: int, limit: int = 50) -> list[SeckillBooking]:
    """The member's live bookings of sessions not ended yet, soonest first."""
    return (
        await SeckillBooking.filter(
            member_id=member_id,
            cancelled_at__isnull=True,
            session__ends_at__gt=clock.now(),
        )
        .select_related("session")
        .order_by("session__starts_at", "id")
        .limit(limit)
    )


async def session_bookings(
    session_id: int, cursor: str | None, size: int
) -> tuple[list[SeckillBooking], str | None]:
    """A session's bookings for ops (cancelled too), newest first."""
    await get_session(session_id)
    return await cursor_page(SeckillBooking.filter(session_id=session_id), cursor, size)


# --- reminders ------------------------------------------------------------------------


@dataclass
class ReminderReport:
    due: int = 0
    sent: int = 0
    no_grant: int = 0
    capped: int = 0
    refused: int = 0
    failed: int = 0
    booking_ids: list[int] = field(default_factory=list)


async def _remind(booking: SeckillBooking, template_id: str, report: ReminderReport) -> None:
    settings = get_settings()
    session = booking.session
    member_id = booking.member_id
    # claim the booking first: two runs (or two hosts) never remind it twice
    claimed = await SeckillBooking.filter(id=booking.id, reminder=BookingReminder.DUE).update(
        reminder=BookingReminder.SENDING
    )
    if not claimed:
        return

    async def settle(state: BookingReminder) -> None:
        await SeckillBooking.filter(id=booking.id).update(
            reminder=state,
            reminded_at=clock.now() if state == BookingReminder.SENT else None,
        )

    if not await touch_service.use_grant(member_id, template_id):
        report.no_grant += 1
        await settle(BookingReminder.NO_GRANT)
        return
    reference = f"seckill_booking:{booking.id}"
    if not await touch_service.try_touch(member_id, REMINDER_KIND, reference):
        await touch_service.give_back_grant(member_id, template_id)
        report.capped += 1
        await settle(BookingReminder.CAPPED)
        return
    start = session.starts_at.astimezone(clock.SHANGHAI)
    data = {
        "thing1": session.name[:20],
        "time2": start.strftime("%Y-%m-%d %H:%M"),
        "thing3": translate(REMINDER_NOTE, settings.default_locale)[:20],
    }
    try:
        member = await members_service.get_member(member_id)
        await wechat_client.send_subscribe_message(
            member.openid, template_id, data, page=settings.seckill_reminder_page
        )
    except MallError as exc:
        await touch_service.give_back_touch(member_id, REMINDER_KIND, reference)
        if exc.code == "WECHAT_USER_REFUSED":
            await touch_service.refused(member_id, template_id)
            report.refused += 1
            await settle(BookingReminder.REFUSED)
        else:
            # grant and touch back; the booking is due again for the next run
            await touch_service.give_back_grant(member_id, template_id)
            report.failed += 1
            await settle(BookingReminder.DUE)
            log.warning("booking reminder failed booking=%s code=%s", booking.id, exc.code)
        return
    await settle(BookingReminder.SENT)
    report.sent += 1
    report.booking_ids.append(booking.id)


async def send_booking_reminders() -> ReminderReport:
    """Job: remind every live booking of a session starting within
    `seckill_reminder_lead_seconds` (and not started yet), once."""
    settings = get_settings()
    report = ReminderReport()
    template_id = settings.seckill_booking_template_id
    if not template_id:
        return report
    now = clock.now()
    due = (
        await SeckillBooking.filter(
            cancelled_at__isnull=True,
            reminder=BookingReminder.DUE,
            session__status=SessionStatus.SCHEDULED,
            session__starts_at__gt=now,
            session__starts_at__lte=now + timedelta(seconds=settings.seckill_reminder_lead_seconds),
        )
        .select_related("session")
        .order_by("session__starts_at", "id")
        .limit(5000)
    )
    report.due = len(due)
    for booking in due:
        await _remind(booking, template_id, report)
    return report


# --- flags ----------------------------------------------------------------------------


async def flag(member_id: int, reason: str, actor: Actor | None) -> MemberFlag:
    """Flag a member (or change the reason of a flag); sessions that exclude flagged
    members turn them away from the next attempt on (no login needed)."""
    await members_service.get_member(member_id)
    async with in_transaction():
        current = await MemberFlag.get_or_none(member_id=member_id)
        if current is None:
            current = await MemberFlag.create(
                member_id=member_id,
                reason=reason,
                flagged_by=actor.username if actor else "system",
                flagged_at=clock.now(),
            )
        else:
            await MemberFlag.filter(id=current.id).update(reason=reason)
            current.reason = reason
        await audit_service.record(
            actor, "seckill.member.flag", f"member:{member_id}", reason=reason
        )
    await stock.mark_member("flagged", await stock.active_item_ids(), member_id, on=True)
    return current


async def unflag(member_id: int, reason: str, actor: Actor | None) -> bool:
    """Lift a flag; False if the member was not flagged (nothing recorded)."""
    async with in_transaction():
        removed = await MemberFlag.filter(member_id=member_id).delete()
        if removed:
            await audit_service.record(
                actor, "seckill.member.unflag", f"member:{member_id}", reason=reason
            )
    if removed:
        await stock.mark_member("flagged", await stock.active_item_ids(), member_id, on=False)
    return bool(removed)


async def flagged_among(member_ids: list[int]) -> set[int]:
    # in chunks: a suspicious page asks about up to 40,000 ids, more than one statement's
    # parameters (PostgreSQL: 32,767)
    rows = await select_in(MemberFlag, "member_id", sorted(set(member_ids)), ["member_id"])
    return {int(r[0]) for r in rows}


async def flags(before_id: int | None, limit: int) -> list[MemberFlag]:
    """Flags, newest first (`before_id`: the page after the one ending there)."""
    query = MemberFlag.all()
    if before_id is not None:
        query = query.filter(id__lt=before_id)
    return await query.order_by("-id").limit(limit)


# --- suspicious patterns ---------------------------------------------------------------


@dataclass
class Shared:
    value: str
    member_ids: list[int]
    flagged_ids: list[int]


async def _with_flags(groups: list[tuple[str, list[int]]]) -> list[Shared]:
    flagged = await flagged_among([m for _value, ids in groups for m in ids])
    return [Shared(v, ids, [m for m in ids if m in flagged]) for v, ids in groups]


async def shared_phones(min_members: int, limit: int) -> list[Shared]:
    return await _with_flags(await members_service.shared_phones(min_members, limit))


async def shared_addresses(min_members: int, limit: int) -> list[Shared]:
    return await _with_flags(await addresses_service.shared_addresses(min_members, limit))


async def shared_login_ips(days: int, min_members: int, limit: int) -> list[Shared]:
    since: datetime = clock.now() - timedelta(days=days)
    found = await members_service.shared_login_addresses(since, min_members, limit)
    return await _with_flags(found)
