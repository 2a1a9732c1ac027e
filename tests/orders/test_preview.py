from __future__ import annotations

from datetime import UTC, datetime

import httpx

from mall.catalog.models import Category, Product, Sku
from mall.coupons import service as coupons_service
from mall.kit import clock
from mall.members.models import Member
from tests.conftest import MemberLogin


async def test_preview_breakdown_with_coupons_and_reasons(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    clock.set_now(datetime(2025, 3, 18, 4, tzinfo=UTC))  # member day, 12:00 Shanghai
    headers = await member_headers("buyer")
    member = await Member.get(openid="dev_buyer")
    await Member.filter(id=member.id).update(level=2, points_balance=10_000)
    home = await Category.create(name="家居")
    laundry = await Category.create(name="洗衣", parent_id=home.id)
    soap = await Product.create(
        name="洗衣液", category_id=laundry.id, list_price=5000, on_shelf=True,
        delivery_modes=["express", "same_city"],
    )  # fmt: skip
    sku = await Sku.create(product_id=soap.id, price=5000, stock=10)
    scoped = await coupons_service.create_template(
        {"name": "家居满80减10", "kind": "threshold", "face_value_fen": 1000,
         "threshold_fen": 8000, "scope": "categories", "scope_ids": [home.id]}
    )  # fmt: skip
    far = await coupons_service.create_template(
        {"name": "满200减50", "kind": "threshold", "face_value_fen": 5000, "threshold_fen": 20000}
    )
    fits = await coupons_service.claim(member.id, scoped.id)
    short = await coupons_service.claim(member.id, far.id)
    r = await client.post(
        "/api/v1/orders/preview",
        json={"items": [{"sku_id": sku.id, "quantity": 2}], "coupon_id": fits.id, "points": 3000},
        headers={**headers, "Accept-Language": "en"},
    )
    assert r.status_code == 200, r.text
    b = r.json()
    # level 2 on member day: 90% -> 4500 x 2 = 9000; coupon 1000 (parent category in scope)
    assert b["member_day"] is True and b["member_total_fen"] == 9000
    assert b["coupon_fen"] == 1000 and b["goods_after_coupon_fen"] == 8000
    assert b["points_fen"] == 3000 and b["points_used"] == 3000
    assert b["shipping_fen"] == 1000  # 8000 < 9900
    assert b["amount_due_fen"] == 8000 - 3000 + 1000
    verdicts = {v["coupon_id"]: v for v in b["coupons"]}
    assert verdicts[fits.id]["usable"] is True
    assert verdicts[short.id]["reason"] == "COUPON_BELOW_THRESHOLD"
    assert verdicts[short.id]["message"] == "Spend ¥110.00 more on covered items to use this coupon"
    pickup = await client.post(
        "/api/v1/orders/preview",
        json={"items": [{"sku_id": sku.id, "quantity": 1}], "delivery": "pickup"},
        headers=headers,
    )
    assert pickup.status_code == 422
    assert pickup.json()["error"]["code"] == "ORDER_DELIVERY_UNAVAILABLE"
