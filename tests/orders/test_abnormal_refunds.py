"""Ops resolve an order's cash refund WeChat Pay reported ABNORMAL: retry it to the
original payment, or record that it was paid out another way. Audited, idempotent,
and the order's own figures do not move."""

from __future__ import annotations

import httpx

from mall.audit.models import AuditLog
from mall.orders.models import Order, OrderRefund
from tests.conftest import MemberLogin
from tests.orders.helpers import abnormal_refund, assert_books_clean
from tests.wallet.fake_pay import FakePay
from tests.wallet.helpers import staff_token

NOTIFY = "/api/v1/wechat/pay-notify"


async def _resolve(
    client: httpx.AsyncClient, admin: dict[str, str], refund_id: int, **body: str
) -> httpx.Response:
    return await client.post(
        f"/api/admin/v1/order-refunds/{refund_id}/resolve", json=body, headers=admin
    )


async def test_retry_to_the_original_payment_and_the_old_attempt_is_ignored(
    client: httpx.AsyncClient, member_headers: MemberLogin, fake_pay: FakePay
) -> None:
    refund = await abnormal_refund(client, fake_pay, member_headers, "towel1")
    admin = await staff_token()
    listed = (await client.get("/api/admin/v1/order-refunds/abnormal", headers=admin)).json()
    assert [r["id"] for r in listed] == [refund["id"]]
    order = await Order.get(id=(await OrderRefund.get(id=refund["id"])).order_id)
    # ops see whose order it is (the console links the member)
    assert listed[0]["member_id"] == order.member_id
    assert "member_id" not in refund  # the member's own order answer does not carry it
    no = refund["out_refund_no"]

    refused = await _resolve(client, admin, refund["id"], action="retry")
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "ORDER_REFUND_RETRY_REFUSED"
    assert refused.json()["error"]["details"] == {"wechat_code": "INVALID_REQUEST"}
    row = await OrderRefund.get(id=refund["id"])
    assert (row.cash_status, row.cash_attempt) == ("abnormal", 1)

    fake_pay.settle_refund(no, "CLOSED")  # WeChat gave the amount back to the merchant
    fake_pay.refund_status = "SUCCESS"
    r = await _resolve(client, admin, refund["id"], action="retry")
    assert r.status_code == 200, r.text
    assert (r.json()["cash_status"], r.json()["cash_attempt"]) == ("succeeded", 2)
    assert fake_pay.refunds[f"{no}-2"].refund == 2990
    # the old number's news changes nothing now
    h, body = fake_pay.notification(fake_pay.settle_refund(no, "ABNORMAL"))
    assert (await client.post(NOTIFY, headers=h, content=body)).status_code == 204
    assert (await OrderRefund.get(id=refund["id"])).cash_status == "succeeded"
    again = await _resolve(client, admin, refund["id"], action="retry")
    assert again.status_code == 200 and again.json()["cash_attempt"] == 2
    audits = await AuditLog.filter(action="order.refund.retry").order_by("id")
    assert [a.detail["out_refund_no"] for a in audits] == [f"{no}-1", f"{no}-2"]
    order = await Order.get(id=(await OrderRefund.get(id=refund["id"])).order_id)
    assert (order.status, order.refunded_cash_fen) == ("cancelled", 2990)
    await assert_books_clean()


async def test_paid_offline_is_recorded_once_and_closes_it(
    client: httpx.AsyncClient, member_headers: MemberLogin, fake_pay: FakePay
) -> None:
    refund = await abnormal_refund(client, fake_pay, member_headers, "towel2")
    admin = await staff_token()
    ops = await staff_token("ops")
    forbidden = await _resolve(client, ops, refund["id"], action="offline", note="现金")
    assert forbidden.status_code == 403
    no_note = await _resolve(client, admin, refund["id"], action="offline")
    assert no_note.status_code == 422
    body = {"action": "offline", "note": "门店现金退还 收据 0042"}
    first = await client.post(
        f"/api/admin/v1/order-refunds/{refund['id']}/resolve",
        json=body,
        headers={**admin, "Idempotency-Key": "k1"},
    )
    assert first.status_code == 200, first.text
    assert (first.json()["cash_status"], first.json()["resolution"]) == ("offline", "offline")
    order = await Order.get(id=(await OrderRefund.get(id=refund["id"])).order_id)
    assert first.json()["member_id"] == order.member_id
    replay = await client.post(
        f"/api/admin/v1/order-refunds/{refund['id']}/resolve",
        json=body,
        headers={**admin, "Idempotency-Key": "k1"},
    )
    assert replay.json() == first.json()
    assert (await _resolve(client, admin, refund["id"], **body)).status_code == 200
    retry = await _resolve(client, admin, refund["id"], action="retry")
    assert retry.status_code == 409
    assert retry.json()["error"]["code"] == "ORDER_REFUND_NOT_ABNORMAL"
    assert retry.json()["error"]["message"] == "只有微信支付无法退出的（退款异常）退款才能这样处理"
    audit = await AuditLog.get(action="order.refund.offline")
    assert audit.detail["note"] == "门店现金退还 收据 0042" and audit.detail["cash_fen"] == 2990
    assert fake_pay.calls["refund"] == 1
    await assert_books_clean()
