"""Orders in the reconciliation of WeChat Pay's bills: a paid order, its cancel refund and
an ops retry of that refund ("<number>-1") all match; an order the mall closed unpaid
while WeChat took the money is listed."""

from __future__ import annotations

import httpx
import pytest

from mall import domains
from mall.kit import clock
from mall.orders.models import Order
from mall.wechat import bills, reconcile
from mall.wechat.models import MISMATCH, OK
from tests.conftest import MemberLogin
from tests.orders.helpers import make_shop, paid_and_cancelled
from tests.wallet.fake_pay import FakePay
from tests.wallet.helpers import staff_token

NOTIFY = "/api/v1/wechat/pay-notify"


@pytest.mark.clock
async def test_orders_paid_refunded_and_retried_reconcile_and_a_lost_payment_is_listed(
    client: httpx.AsyncClient, member_headers: MemberLogin, fake_pay: FakePay
) -> None:
    clock.set_now(clock.now())
    day = clock.today()
    shop = await make_shop()
    headers = await member_headers("towel")
    order = (
        await client.post(
            "/api/v1/orders",
            json={"items": [{"sku_id": shop.towel.id, "quantity": 1}], "delivery": "pickup"},
            headers=headers,
        )
    ).json()
    await fake_pay.deliver(client, fake_pay.pay("O" + order["number"]))
    (refund,) = (await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=headers)).json()[
        "refunds"
    ]
    h, body = fake_pay.refund_notification(refund["out_refund_no"], "ABNORMAL")
    assert (await client.post(NOTIFY, headers=h, content=body)).status_code == 204
    fake_pay.settle_refund(refund["out_refund_no"], "CLOSED")
    fake_pay.refund_status = "SUCCESS"
    admin = await staff_token()
    r = await client.post(
        f"/api/admin/v1/order-refunds/{refund['id']}/resolve",
        json={"action": "retry"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert f"{refund['out_refund_no']}-1" in fake_pay.refunds

    row = await reconcile.run(day, domains.pay_books())
    assert row.status == OK, row.mismatches
    paid = await Order.get(id=order["id"])
    assert (row.payments, row.paid_fen) == (1, paid.cash_fen)
    assert (row.refunds, row.refunded_fen) == (2, 2 * paid.cash_fen)

    # a second order the member paid at WeChat while the mall never took the payment
    other = (
        await client.post(
            "/api/v1/orders",
            json={"items": [{"sku_id": shop.towel.id, "quantity": 1}], "delivery": "pickup"},
            headers=headers,
        )
    ).json()
    fake_pay.pay("O" + other["number"])  # the notification is lost, the job has not run
    row = await reconcile.run(day, domains.pay_books())
    assert row.status == MISMATCH
    assert [(m["kind"], m["out_trade_no"]) for m in row.mismatches] == [
        ("paid_not_in_mall", "O" + other["number"])
    ]


@pytest.mark.clock
async def test_a_day_of_more_payments_than_one_statement_takes(
    client: httpx.AsyncClient, member_headers: MemberLogin, fake_pay: FakePay
) -> None:
    # a flash-sale day's bill can list more payments and refunds than one statement's
    # parameters (PostgreSQL: 32,767): the books are asked in chunks
    clock.set_now(clock.now())
    order, refund = await paid_and_cancelled(client, fake_pay, member_headers, "busy")
    books = {b.prefix: b for b in domains.pay_books()}
    numbers = [f"O9{n:011d}" for n in range(40_000)] + ["O" + order["number"]]
    assert list(await reconcile._payments(books, numbers)) == ["O" + order["number"]]

    def refund_row(out_refund_no: str) -> bills.BillRow:
        return bills.BillRow(
            None, "", "", "", "O" + order["number"], "REFUND", 0, 0, out_refund_no=out_refund_no
        )

    rows = [refund_row(f"R9{n:011d}") for n in range(40_000)]
    found = await reconcile._refunds(books, [*rows, refund_row(refund["out_refund_no"])])
    assert list(found) == [refund["out_refund_no"]]
