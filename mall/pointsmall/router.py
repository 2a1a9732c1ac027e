from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import ValidationError

from mall.addresses.schemas import AddressSnapshot
from mall.deps import CurrentMember, IdempotencyKey, MemberId
from mall.kit import idempotency
from mall.kit.bounds import Cursor, Id, Limit
from mall.kit.fastpath import Decline, FastRoute, bearer_openapi, fits_id
from mall.kit.text import SafeLine
from mall.members import service as members_service
from mall.orders import service as orders_service
from mall.orders.schemas import OrderOut
from mall.pointsmall import payment, service
from mall.pointsmall.models import PointsMallRedemption
from mall.pointsmall.schemas import (
    CancelIn,
    ItemOut,
    ItemPage,
    RedeemIn,
    RedemptionOut,
    RedemptionPage,
    RedemptionPayIn,
    ReservationOut,
)

router = APIRouter(prefix="/api/v1", tags=["points mall"])

# "<item id>-<hex>" as the redeem answers it
ReservationId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


def redemption_out(r: PointsMallRedemption) -> RedemptionOut:
    return RedemptionOut.model_validate(
        {
            **{k: getattr(r, k) for k in RedemptionOut.model_fields if k != "address"},
            "address": AddressSnapshot.model_validate(r.address) if r.address else None,
        }
    )


@router.get("/points-mall/items", response_model=ItemPage)
async def list_items(
    member: CurrentMember,
    cursor: Cursor | None = None,
    size: Limit = 20,
) -> ItemPage:
    """Items on the shelf: those the member can afford and whose level allows first,
    each with its live remaining stock and, if it cannot be redeemed now, why."""
    return await service.list_for_member(member, cursor, size)


@router.get("/points-mall/items/{item_id}", response_model=ItemOut)
async def get_item(item_id: Id, member: CurrentMember) -> ItemOut:
    return await service.item_for_member(member, item_id)


@router.post(
    "/points-mall/items/{item_id}/redeem",
    response_model=ReservationOut,
    status_code=202,
    responses={
        409: {
            "description": "ITEM_OFF_SHELF, OUT_OF_STOCK, REDEEM_LIMIT_REACHED, "
            "REDEEM_PERIOD_LIMIT_REACHED, POINTS_THRESHOLD_NOT_MET, ACTIVITY_FULL; nothing is "
            "taken"
        },
        403: {"description": "LEVEL_TOO_LOW"},
        422: {"description": "ADDRESS_REQUIRED, ONE_PLACE_PER_ENTRY, IDEMPOTENCY_KEY_REUSED"},
    },
    openapi_extra=bearer_openapi(),
)
async def redeem(
    item_id: Id, body: RedeemIn, member_id: MemberId, idempotency_key: IdempotencyKey = None
) -> Response:
    """Redeem an item with points. The answer comes at once (202): the reservation,
    `pending`, with the points it will spend. Poll `/points-mall/reservations/{id}`: it
    becomes the redemption's status (`issued` with the voucher or coupons,
    `awaiting_shipment`, `enrolled`) or `released` with `release_reason` (e.g.
    `not_enough_points`; nothing spent). Send an `Idempotency-Key`: a retry returns the
    same reservation. Physical gifts need `address_id` (from `/api/v1/addresses`)."""
    answer = await service.redeem(
        member_id, item_id, body.quantity, body.address_id, idempotency_key
    )
    return Response(answer.json(), status_code=202, media_type="application/json")


@router.get("/points-mall/reservations/{reservation_id}", response_model=ReservationOut)
async def my_reservation(reservation_id: ReservationId, member_id: MemberId) -> ReservationOut:
    """A redemption by its reservation id: `pending` until it is written, then its
    status, or `released` with the reason."""
    return ReservationOut.model_validate(await service.reservation(member_id, reservation_id))


@router.post(
    "/points-mall/reservations/{reservation_id}/pay",
    response_model=OrderOut,
    responses={
        404: {"description": "REDEMPTION_NOT_FOUND"},
        409: {
            "description": "REDEMPTION_NOT_READY (still being recorded), "
            "REDEMPTION_NOT_PAYABLE (not pending payment, e.g. released), PAYMENT_EXPIRED"
        },
    },
)
async def pay(
    reservation_id: ReservationId, body: RedemptionPayIn, member: CurrentMember
) -> OrderOut:
    """Pay the cash part of a points + cash redemption (`pending_payment`, points held):
    it becomes a mall order for the cash part (no catalog stock taken, nothing shipped
    with it), paid from the wallet (`use_wallet`) and/or WeChat Pay (`payment` holds the
    wx.requestPayment parameters; the WeChat order expires at the redemption's
    `pay_deadline`). Calling again returns the same order. Once paid, the points are
    spent and the redemption is issued (voucher code, awaiting_shipment, enrolled);
    unpaid by the deadline, it is `released` (`unpaid`): points and units back. A full
    refund of the order gives the points back (`refunded`)."""
    order = await payment.pay(member, reservation_id, body)
    return await orders_service.order_out(order)


@router.get("/points-mall/redemptions", response_model=RedemptionPage)
async def my_redemptions(
    member: CurrentMember,
    status: Annotated[SafeLine | None, Query(max_length=24)] = None,
    cursor: Cursor | None = None,
    size: Limit = 20,
) -> RedemptionPage:
    """The member's redemptions, newest first."""
    rows, next_cursor = await service.list_redemptions(
        member_id=member.id, status=status, cursor=cursor, size=size
    )
    return RedemptionPage(items=[redemption_out(r) for r in rows], next_cursor=next_cursor)


@router.get("/points-mall/redemptions/{redemption_id}", response_model=RedemptionOut)
async def my_redemption(redemption_id: Id, member: CurrentMember) -> RedemptionOut:
    return redemption_out(await service.get_redemption(redemption_id, member.id))


@router.post("/points-mall/redemptions/{redemption_id}/cancel", response_model=RedemptionOut)
async def cancel(
    redemption_id: Id,
    member: CurrentMember,
    body: CancelIn | None = None,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Cancel a gift not yet shipped (or an activity entry): the points come back as a
    reversing ledger entry and the stock returns."""
    reason = body.reason if body else ""

    async def work() -> RedemptionOut:
        redemption = await service.cancel(redemption_id, member_id=member.id, reason=reason)
        return redemption_out(redemption)

    return await idempotency.run(
        f"pointsmall.cancel:{member.id}",
        idempotency_key,
        idempotency.fingerprint(redemption_id, reason),
        work,
    )


# --- the hot path without the framework ---------------------------------------------


async def _fast_redeem(
    found: re.Match[str], authorization: str | None, key: str | None, body: bytes
) -> bytes:
    """`redeem` above, answered by kit.fastpath: same answers, errors and headers; a body
    that does not validate goes on to the route (its 422)."""
    idempotency.check_key(key)
    member_id = (await members_service.member_of_header(authorization))[0]
    try:
        data = RedeemIn.model_validate_json(body)
    except ValidationError:
        raise Decline() from None
    answer = await service.redeem(
        member_id, int(found.group(1)), data.quantity, data.address_id, key
    )
    return answer.json()


FAST_ROUTES = [
    FastRoute(
        "POST",
        "/api/v1/points-mall/items/{item_id}/redeem",
        # ASCII digits only, at most BIGINT's 19
        re.compile(r"^/api/v1/points-mall/items/([0-9]{1,19})/redeem$"),
        _fast_redeem,
        accepts=fits_id,
        status=202,
        body=True,
    )
]
