"""A reconciled day with mismatches, made the real way (orders and a top-up paid at the
fake WeChat Pay, the day's bills reconciled by `mall.wechat.reconcile`), for the ops
routes' tests and the console's. The payments are made at noon yesterday (Shanghai), and
the clock is left at noon today, so yesterday can be reconciled by ops."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import httpx

from mall.kit import clock
from mall.orders.models import Order
from mall.wallet.models import TopUp
from tests.conftest import MemberLogin
from tests.orders.helpers import make_shop
from tests.wallet.fake_pay import FakePay
from tests.wallet.helpers import plan, start_top_up


@dataclass
class PaidDay:
    day: date  # yesterday, when everything was paid
    matched: Order  # paid and notified, then cancelled: its refund WeChat never got
    lost: Order  # paid at WeChat, the notification lost
    top_up: TopUp  # paid at WeChat, the notification lost
    refund_no: str  # the matched order's refund, unknown to WeChat


async def _order(client: httpx.AsyncClient, headers: dict[str, str], sku_id: int) -> Any:
    r = await client.post(
        "/api/v1/orders",
        json={"items": [{"sku_id": sku_id, "quantity": 1}], "delivery": "pickup"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return r.json()


async def paid_day(
    client: httpx.AsyncClient, fake_pay: FakePay, member_headers: MemberLogin
) -> PaidDay:
    """Yesterday: one order paid and refunded (the refund lost on the way to WeChat), one
    order and one top-up paid at WeChat that the mall never heard of."""
    day = clock.today() - timedelta(days=1)
    clock.set_now(clock.start_of_local_day(day) + timedelta(hours=12))
    shop = await make_shop()
    towel = await member_headers("payrec_towel")
    matched = await _order(client, towel, shop.towel.id)
    r = await fake_pay.deliver(client, fake_pay.pay("O" + matched["number"]))
    assert r.status_code == 204, r.text
    r = await client.post(f"/api/v1/orders/{matched['id']}/cancel", headers=towel)
    assert r.status_code == 200, r.text
    (refund,) = r.json()["refunds"]
    del fake_pay.refunds[refund["out_refund_no"]]  # WeChat never got it

    other = await member_headers("payrec_other")
    lost = await _order(client, other, shop.last_one.id)
    fake_pay.pay("O" + lost["number"])  # paid; the notification never arrives
    top_up = await start_top_up(client, other, (await plan(10_000)).id)
    fake_pay.pay(top_up["top_up"]["out_trade_no"])  # the same

    clock.set_now(clock.start_of_local_day(day + timedelta(days=1)) + timedelta(hours=12))
    return PaidDay(
        day=day,
        matched=await Order.get(id=matched["id"]),
        lost=await Order.get(id=lost["id"]),
        top_up=await TopUp.get(id=top_up["top_up"]["id"]),
        refund_no=refund["out_refund_no"],
    )
