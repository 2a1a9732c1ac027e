"""A coupon's life: usable -> locked -> used; back on cancel or refund while valid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mall.coupons import service
from mall.coupons.models import Coupon
from mall.errors import MallError
from mall.kit import clock
from mall.pricing import CartLine, PricingInput, price_cart
from tests.factories import make_members, make_template

pytestmark = pytest.mark.clock

ISSUED = datetime(2025, 1, 10, 4, tzinfo=UTC)


async def _coupon() -> Coupon:
    clock.set_now(ISSUED)
    template = await make_template()
    (member,) = await make_members(1)
    return await service.claim(member.id, template.id)


async def test_lock_use_and_give_back_within_validity() -> None:
    coupon = await _coupon()
    await service.lock(coupon.id, coupon.member_id, "order-1")
    await service.lock(coupon.id, coupon.member_id, "order-1")  # same order: no-op
    with pytest.raises(MallError) as other:
        await service.lock(coupon.id, coupon.member_id, "order-2")
    assert other.value.code == "COUPON_NOT_USABLE"
    await service.use(coupon.id, "order-1")
    await service.use(coupon.id, "order-1")  # idempotent
    assert (await Coupon.get(id=coupon.id)).status == "used"
    assert await service.release(coupon.id, "order-1") == "usable"  # refunded within validity
    assert await service.release(coupon.id, "order-1") == "usable"  # twice changes nothing
    fresh = await Coupon.get(id=coupon.id)
    assert fresh.order_ref is None and fresh.used_at is None


async def test_given_back_after_expiry_stays_expired() -> None:
    coupon = await _coupon()
    await service.lock(coupon.id, coupon.member_id, "order-1")
    clock.set_now(coupon.expires_at)
    assert await service.release(coupon.id, "order-1") == "expired"
    with pytest.raises(MallError):
        await service.lock(coupon.id, coupon.member_id, "order-3")


async def test_expire_job_and_no_lock_past_expiry() -> None:
    coupon = await _coupon()
    clock.set_now(coupon.expires_at - timedelta(seconds=1))
    assert await service.expire_due() == 0
    clock.advance(timedelta(seconds=1))
    with pytest.raises(MallError) as late:
        await service.lock(coupon.id, coupon.member_id, "order-1")
    assert late.value.params["status"] == "expired"
    assert await service.expire_due() == 1
    assert (await Coupon.get(id=coupon.id)).status == "expired"


async def test_offers_feed_pricing() -> None:
    coupon = await _coupon()
    offers = await service.offers_for(coupon.member_id)
    assert [o.coupon_id for o in offers] == [coupon.id]
    result = price_cart(
        PricingInput(
            lines=[CartLine(sku_id=1, product_id=1, quantity=1, list_price_fen=10000)],
            at=clock.now(),
            coupons=offers,
            coupon_id=coupon.id,
        )
    )
    assert result.coupon_fen == 2000 and result.amount_due_fen == 8000 + 1000
    await service.lock(coupon.id, coupon.member_id, "order-1")
    assert await service.offers_for(coupon.member_id) == []
    locked = await service.offers_for(coupon.member_id, also=coupon.id)
    assert locked[0].status == "locked"
