from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from mall.coupons import service
from mall.coupons.models import Coupon
from mall.coupons.schemas import ClaimIn, CouponOut, CouponPage
from mall.deps import CurrentMember, IdempotencyKey
from mall.kit import clock, idempotency
from mall.kit.bounds import Cursor, Limit

router = APIRouter(prefix="/api/v1", tags=["coupons"])


def coupon_out(coupon: Coupon) -> CouponOut:
    t = coupon.template
    return CouponOut(
        id=coupon.id,
        template_id=t.id,
        name=t.name,
        description=t.description,
        kind=t.kind,  # type: ignore[arg-type]
        face_value_fen=t.face_value_fen,
        threshold_fen=t.threshold_fen,
        discount_percent=t.discount_percent,
        discount_cap_fen=t.discount_cap_fen,
        gift_sku_id=t.gift_sku_id,
        scope=t.scope,  # type: ignore[arg-type]
        scope_ids=list(t.scope_ids or []),
        status=service.effective_status(coupon, clock.now()),  # type: ignore[arg-type]
        source=coupon.source,
        valid_from=coupon.valid_from,
        expires_at=coupon.expires_at,
        last_valid_day=service.last_valid_day(coupon.expires_at),
        created_at=coupon.created_at,
    )


@router.get("/coupons", response_model=CouponPage)
async def my_coupons(
    member: CurrentMember,
    status: Literal["usable", "locked", "used", "expired", "voided"] | None = None,
    cursor: Cursor | None = None,
    size: Limit = 20,
) -> CouponPage:
    """The member's coupons, newest first; `usable` excludes those past expiry."""
    rows, next_cursor = await service.list_coupons(member.id, status, cursor, size)
    return CouponPage(items=[coupon_out(c) for c in rows], next_cursor=next_cursor)


@router.post(
    "/coupons/claim",
    response_model=CouponOut,
    responses={
        404: {"description": "COUPON_TEMPLATE_NOT_FOUND"},
        409: {
            "description": "COUPON_SOLD_OUT, COUPON_LIMIT_REACHED, COUPON_NOT_CLAIMABLE, "
            "COUPON_CLAIM_NOT_STARTED, COUPON_CLAIM_ENDED"
        },
    },
)
async def claim(
    body: ClaimIn, member: CurrentMember, idempotency_key: IdempotencyKey = None
) -> CouponOut:
    """Claim one coupon of a template. A retry with the same `Idempotency-Key` returns
    the same coupon."""

    async def work() -> CouponOut:
        coupon = await service.claim(member.id, body.template_id, idempotency_key)
        await coupon.fetch_related("template")
        return coupon_out(coupon)

    result = await idempotency.run(
        f"coupons.claim:{member.id}",
        idempotency_key,
        idempotency.fingerprint(body.template_id),
        work,
    )
    return CouponOut.model_validate(result)
