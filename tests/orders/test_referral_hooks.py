"""A promoter earns commission when a bound customer's mall order completes, and loses
it pro rata when that order is refunded afterwards."""

from __future__ import annotations

from mall.members import service as members_service
from mall.orders import service as orders_service
from mall.referral import service as referral_service
from mall.referral.models import CommissionEntry
from tests.orders.helpers import make_member, make_shop
from tests.orders.test_lifecycle import _pay


async def test_completion_pays_commission_and_a_refund_reverses_it() -> None:
    shop = await make_shop()
    promoter_member = await make_member(name="koc")
    promoter = await referral_service.promoter_for_member(promoter_member.id)
    await referral_service.update_promoter(promoter.id, level="koc", active=None, actor=None)
    buyer = await make_member(name="friend")
    await referral_service.bind(buyer, promoter.code)

    order = await orders_service.place_order(
        buyer,
        orders_service.OrderIn.model_validate(
            {"items": [{"sku_id": shop.towel.id, "quantity": 3}], "delivery": "pickup"}
        ),
        None,
    )
    await _pay(order.id)
    staff = await members_service.create_staff("ops_ref", "correct-horse-battery", "ops")
    done = await orders_service.complete(order.id, staff=staff)
    paid = done.amount_due_fen
    entries = await CommissionEntry.filter(promoter_id=promoter.id).order_by("id")
    assert [e.amount_fen for e in entries] == [paid * 5 // 100]  # KOC: 5%
    # completing again changes nothing
    await orders_service._referral_event(
        referral_service.on_order_completed, order.id, buyer.id, paid
    )
    assert await CommissionEntry.filter(promoter_id=promoter.id).count() == 1

    await orders_service.refund(order.id, None, reason="return", staff=staff)
    entries = await CommissionEntry.filter(promoter_id=promoter.id).order_by("id")
    assert len(entries) == 2 and sum(e.amount_fen for e in entries) == 0
