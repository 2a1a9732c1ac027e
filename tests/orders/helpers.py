"""A small shop for checkout tests, and what a test asserts after every scenario."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from mall.addresses import service as addresses_service
from mall.addresses.schemas import AddressIn
from mall.catalog.models import Category, Product, Sku
from mall.coupons import service as coupons_service
from mall.coupons.models import Coupon
from mall.kit import clock
from mall.members.models import Member
from mall.orders import service as orders_service
from mall.orders.models import Order, OrderLine, OrderRefund
from mall.points import service as points_service
from mall.wechat import pay as wechat_pay
from tests.conftest import MemberLogin
from tests.wallet.fake_pay import FakePay

# a Tuesday that is not member day (the 18th), noon in Shanghai
NOT_MEMBER_DAY = datetime(2025, 3, 11, 4, tzinfo=UTC)


@dataclass
class Shop:
    soap: Sku  # 5000 fen, stock 10, express or same-city
    towel: Sku  # 2990 fen, stock 5, any delivery
    last_one: Sku  # 8000 fen, stock 1
    gift: Sku  # the gift coupon's free item, stock 3


async def make_shop() -> Shop:
    home = await Category.create(name="家居")
    soap = await Product.create(
        name="洗衣液", category_id=home.id, list_price=5000, on_shelf=True,
        delivery_modes=["express", "same_city"],
    )  # fmt: skip
    towel = await Product.create(name="毛巾", category_id=home.id, list_price=2990, on_shelf=True)
    rare = await Product.create(name="限量香薰", list_price=8000, on_shelf=True)
    gift = await Product.create(name="小样", list_price=500, on_shelf=False)
    return Shop(
        soap=await Sku.create(product_id=soap.id, price=5000, stock=10, specs={"规格": "2L"}),
        towel=await Sku.create(product_id=towel.id, price=2990, stock=5),
        last_one=await Sku.create(product_id=rare.id, price=8000, stock=1),
        gift=await Sku.create(product_id=gift.id, price=500, stock=3),
    )


async def make_member(points: int = 0, name: str | None = None) -> Member:
    member = await Member.get_or_none(openid=f"dev_{name}") if name else None
    if member is None:
        member = await Member.create(openid=f"o_{secrets.token_hex(6)}")
    if points:
        await points_service.earn(
            member.id,
            points,
            idempotency_key=f"seed:{member.id}",
            reason="seed",
            counts_for_growth=False,
        )
        await member.refresh_from_db()
    return member


async def make_address(member: Member) -> int:
    address = await addresses_service.create_address(
        member.id,
        AddressIn(name="张三", phone="13800138000", region="上海市 徐汇区", detail="漕溪北路 1 号"),
    )
    return address.id


async def give_coupon(member: Member, **terms: Any) -> Coupon:
    data: dict[str, Any] = {
        "name": "满50减10", "kind": "threshold", "face_value_fen": 1000, "threshold_fen": 5000,
    }  # fmt: skip
    data.update(terms)
    template = await coupons_service.create_template(data)
    return await coupons_service.claim(member.id, template.id)


async def stock(sku: Sku) -> int:
    await sku.refresh_from_db()
    return sku.stock


async def coupon_status(coupon: Coupon) -> str:
    await coupon.refresh_from_db()
    return coupon.status


async def balance(member: Member) -> int:
    return await points_service.get_balance(member.id)


async def assert_books_clean() -> None:
    """The points ledger check and the orders check both pass."""
    from mall.orders.tasks import check_orders
    from mall.points.tasks import check_ledger

    ledger = await check_ledger()
    assert ledger.ok, ledger.lines
    orders = await check_orders()
    assert orders.ok, orders.lines


def paid_result(order: Order, **changes: Any) -> wechat_pay.PaymentResult:
    data: dict[str, Any] = {
        "out_trade_no": orders_service.out_trade_no(order),
        "transaction_id": f"4200{order.number}",
        "trade_state": "SUCCESS",
        "amount_total_fen": order.cash_fen,
        "payer_openid": "",
        "mchid": "",
        "appid": "",
        "success_time": clock.now(),
    }
    data.update(changes)
    return wechat_pay.PaymentResult(**data)


async def counts() -> tuple[int, int, int]:
    return await Order.all().count(), await OrderLine.all().count(), await OrderRefund.all().count()


async def paid_and_cancelled(
    client: httpx.AsyncClient, pay: FakePay, member_headers: MemberLogin, name: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A towel paid with WeChat Pay, then cancelled: the order's and its refund's answers
    (the refund sent to WeChat Pay, `processing`)."""
    shop = await make_shop()
    headers = await member_headers(name)
    r = await client.post(
        "/api/v1/orders",
        json={"items": [{"sku_id": shop.towel.id, "quantity": 1}], "delivery": "pickup"},
        headers=headers,
    )
    order: dict[str, Any] = r.json()
    await pay.deliver(client, pay.pay("O" + order["number"]))
    r = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=headers)
    (refund,) = r.json()["refunds"]
    assert refund["cash_status"] == "processing"
    return order, refund


async def abnormal_refund(
    client: httpx.AsyncClient, pay: FakePay, member_headers: MemberLogin, name: str
) -> dict[str, Any]:
    """A towel paid with WeChat Pay and cancelled, whose refund WeChat reports ABNORMAL:
    the refund's answer (from the cancel)."""
    _order, refund = await paid_and_cancelled(client, pay, member_headers, name)
    h, body = pay.refund_notification(refund["out_refund_no"], "ABNORMAL")
    r = await client.post("/api/v1/wechat/pay-notify", headers=h, content=body)
    assert r.status_code == 204, r.text
    row = await OrderRefund.get(id=refund["id"])
    assert (row.cash_status, row.cash_error) == ("abnormal", "ABNORMAL")
    return refund
