from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from mall.addresses.schemas import AddressSnapshot
from mall.deps import CurrentMember, IdempotencyKey
from mall.kit import idempotency
from mall.kit.bounds import Cursor, Id, Limit
from mall.kit.text import SafeLine
from mall.pointsmall import service
from mall.pointsmall.models import PointsMallRedemption
from mall.pointsmall.schemas import (
    CancelIn,
    ItemOut,
    ItemPage,
    RedeemIn,
    RedemptionOut,
    RedemptionPage,
)

router = APIRouter(prefix="/api/v1", tags=["points mall"])


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
    response_model=RedemptionOut,
    status_code=201,
    responses={
        409: {
            "description": "NOT_ENOUGH_POINTS, ITEM_OFF_SHELF, OUT_OF_STOCK, REDEEM_LIMIT_REACHED, "
            "REDEEM_PERIOD_LIMIT_REACHED, POINTS_THRESHOLD_NOT_MET, ACTIVITY_FULL, and for "
            "coupon vouchers COUPON_SOLD_OUT, COUPON_NOT_CLAIMABLE; nothing is spent"
        },
        403: {"description": "LEVEL_TOO_LOW"},
        422: {"description": "ADDRESS_REQUIRED, ONE_PLACE_PER_ENTRY"},
    },
)
async def redeem(
    item_id: Id, body: RedeemIn, member: CurrentMember, idempotency_key: IdempotencyKey = None
) -> Any:
    """Redeem an item with points. Send an `Idempotency-Key`: a retry returns the same
    redemption. Physical gifts need `address_id` (from `/api/v1/addresses`); vouchers
    come back with `voucher_code`, or with `coupon_ids` when the item issues coupons
    (they are in `/api/v1/coupons`)."""

    async def work() -> RedemptionOut:
        redemption = await service.redeem(
            member, item_id, body.quantity, body.address_id, idempotency_key
        )
        return redemption_out(redemption)

    return await idempotency.run(
        f"pointsmall.redeem:{member.id}",
        idempotency_key,
        idempotency.fingerprint(item_id, body.model_dump()),
        work,
    )


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
