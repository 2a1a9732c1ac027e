"""Shopper routes for flash sales. The attempt route is the hot path: the member id comes
straight from the signed token (no database read) and one Lua call decides."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from mall.deps import CurrentMember, MemberId
from mall.kit import idempotency
from mall.kit.bounds import Id
from mall.kit.fastpath import FastRoute, bearer_openapi, fits_id
from mall.members import service as members_service
from mall.orders import service as orders_service
from mall.orders.schemas import OrderOut
from mall.seckill import fair, payment, service
from mall.seckill.models import SeckillBooking
from mall.seckill.schemas import AttemptOut, BookingOut, ReservationOut, SessionOut, WinPayIn

router = APIRouter(prefix="/api/v1", tags=["seckill"])

# "<item id>-<hex>" as the attempt answers it
ReservationId = Annotated[str, Path(max_length=40, pattern=r"^[A-Za-z0-9_-]+$")]


@router.get("/seckill/sessions", response_model=list[SessionOut])
async def sessions() -> list[SessionOut]:
    """Current and upcoming flash sales with their items and the stock left."""
    return await service.open_sessions()


@router.post(
    "/seckill/items/{item_id}/attempt",
    response_model=AttemptOut,
    openapi_extra=bearer_openapi(retry="the same win"),
)
async def attempt(item_id: Id, request: Request) -> Response:
    """Try to win one unit. Every answer is 200 with `result`: `won` (poll the reservation),
    `sold_out`, `limit_reached`, `not_started`, `ended` or `rate_limited`. A retry with the
    same `Idempotency-Key` returns the same win. Redis unreachable: 503, nothing changed.
    A member the sale's rules turn away gets 403: SECKILL_PHONE_REQUIRED,
    SECKILL_JOINED_TOO_LATE, SECKILL_LEVEL_TOO_LOW, SECKILL_MEMBER_FLAGGED or
    SECKILL_BOOKING_REQUIRED (level and phone are read from the access token: refresh it
    after binding a phone or levelling up).

    The hot path: headers are read directly (no dependency tree) and the answer is
    serialized once, since most answers in a burst are the same `sold_out`."""
    headers = request.headers
    member_id, claims = await members_service.member_of_header(headers.get("authorization"))
    key = headers.get("idempotency-key")
    idempotency.check_key(key)
    answer = await service.attempt(item_id, member_id, key, claims)
    return Response(service.answer_json(answer), media_type="application/json")


@router.get("/seckill/reservations/{reservation_id}", response_model=ReservationOut)
async def reservation(reservation_id: ReservationId, member_id: MemberId) -> ReservationOut:
    """Status of your win: pending (being persisted), confirmed, pending_payment (pay it
    with `POST .../pay`; `order_id` once taken to payment), paid, expired (unpaid in
    time), released (e.g. not enough points) or refunded (its order was refunded)."""
    return await service.reservation(member_id, reservation_id)


@router.post("/seckill/reservations/{reservation_id}/pay", response_model=OrderOut)
async def pay(reservation_id: ReservationId, body: WinPayIn, member: CurrentMember) -> OrderOut:
    """Take a `pending_payment` win to payment: it becomes a mall order at the sale's
    price (no catalog stock taken), paid from the wallet (`use_wallet`) and/or WeChat Pay
    (`payment` holds the wx.requestPayment parameters; the WeChat order expires at the
    win's `pay_deadline`). Calling again returns the same order. It then ships, refunds
    and closes like any order (`/api/v1/orders/{id}`); closed unpaid, the win expires."""
    order = await payment.pay_win(member, reservation_id, body)
    return await orders_service.order_out(order)


# --- bookings (预约) ---------------------------------------------------------------------


def _booking_out(booking: SeckillBooking) -> BookingOut:
    return BookingOut(
        session_id=booking.session.id,
        session_name=booking.session.name,
        starts_at=booking.session.starts_at,
        ends_at=booking.session.ends_at,
        booked_at=booking.created_at,
        reminder=booking.reminder.value,
    )


@router.post("/seckill/sessions/{session_id}/booking", response_model=BookingOut)
async def book(session_id: Id, member: CurrentMember) -> BookingOut:
    """Book a flash sale before it starts: a subscribe-message reminder a few minutes
    before the start (if you allowed it), and the ticket in to sales that require
    booking. Booking again is harmless. A sale whose rules you do not meet answers the
    same 403 SECKILL_* error an attempt would; after the start: 409
    SECKILL_BOOKING_CLOSED."""
    booking = await fair.book(session_id, member)
    await booking.fetch_related("session")
    return _booking_out(booking)


@router.delete("/seckill/sessions/{session_id}/booking", status_code=204, response_class=Response)
async def cancel_booking(session_id: Id, member_id: MemberId) -> Response:
    """Cancel your booking (before the sale starts)."""
    await fair.cancel(session_id, member_id)
    return Response(status_code=204)


@router.get("/seckill/bookings", response_model=list[BookingOut])
async def my_bookings(member_id: MemberId) -> list[BookingOut]:
    """Your bookings of flash sales that have not ended, soonest first."""
    return [_booking_out(b) for b in await fair.my_bookings(member_id)]


# --- the hot path without the framework ---------------------------------------------


async def _fast_attempt(
    found: re.Match[str], authorization: str | None, key: str | None, _body: bytes
) -> bytes:
    """`attempt` above, answered by kit.fastpath: same answers, errors and headers."""
    idempotency.check_key(key)
    member_id, claims = await members_service.member_of_header(authorization)
    answer = await service.attempt(int(found.group(1)), member_id, key, claims)
    return service.answer_json(answer)


FAST_ROUTES = [
    FastRoute(
        "POST",
        "/api/v1/seckill/items/{item_id}/attempt",
        # ASCII digits only (`\d` would take other scripts' digits too), at most BIGINT's 19
        re.compile(r"^/api/v1/seckill/items/([0-9]{1,19})/attempt$"),
        _fast_attempt,
        accepts=fits_id,
    )
]
