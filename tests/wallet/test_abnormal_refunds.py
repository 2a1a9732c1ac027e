"""Ops resolve a top-up refund WeChat Pay reported ABNORMAL: retry it to the original
payment, or record that it was paid out another way. Audited and idempotent."""

from __future__ import annotations

from typing import Any

import httpx

from mall.audit.models import AuditLog
from mall.wallet import service
from mall.wallet.models import TopUpRefund
from tests.conftest import MemberLogin
from tests.wallet.fake_pay import FakePay
from tests.wallet.helpers import assert_ledger_clean, member_id, paid_top_up, staff_token

NOTIFY = "/api/v1/wechat/pay-notify"


async def _abnormal(
    client: httpx.AsyncClient, fake_pay: FakePay, member_headers: MemberLogin
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """A member's 500-yuan top-up refunded in full, which WeChat reports ABNORMAL."""
    alice = await member_headers("alice")
    member = await member_id(client, alice)
    top_up = (await paid_top_up(client, fake_pay, alice, 50000))["top_up"]
    admin = await staff_token()
    r = await client.post(
        f"/api/admin/v1/wallet/top-ups/{top_up['id']}/refund",
        json={"reason": "member moved away"},
        headers=admin,
    )
    assert r.status_code == 201 and r.json()["status"] == "processing", r.text
    headers, body = fake_pay.refund_notification(r.json()["out_refund_no"], "ABNORMAL")
    assert (await client.post(NOTIFY, headers=headers, content=body)).status_code == 204
    refund: dict[str, Any] = r.json()
    assert (await TopUpRefund.get(id=refund["id"])).status == "abnormal"
    return member, refund, admin


async def _resolve(
    client: httpx.AsyncClient, admin: dict[str, str], refund_id: int, **body: str
) -> httpx.Response:
    return await client.post(
        f"/api/admin/v1/wallet/refunds/{refund_id}/resolve",
        json=body,
        headers={**admin, "Accept-Language": "en"},
    )


async def test_retry_refused_by_wechat_then_paid_offline(
    client: httpx.AsyncClient, fake_pay: FakePay, member_headers: MemberLogin
) -> None:
    member, refund, admin = await _abnormal(client, fake_pay, member_headers)
    listed = (await client.get("/api/admin/v1/wallet/refunds/abnormal", headers=admin)).json()
    assert [r["id"] for r in listed] == [refund["id"]]

    # WeChat still holds the abnormal refund's amount: a new refund of it is refused
    r = await _resolve(client, admin, refund["id"], action="retry")
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "WALLET_REFUND_RETRY_REFUSED"
    assert "INVALID_REQUEST" in r.json()["error"]["message"]
    row = await TopUpRefund.get(id=refund["id"])
    assert (row.status, row.attempt, row.error_code) == ("abnormal", 1, "PAY_REQUEST_INVALID")
    assert f"{row.out_refund_no}-1" not in fake_pay.refunds
    # the member's wallet stays as it was: the money is on its way to them
    assert (await service.get_balance(member)).total_fen == 0

    missing_note = await _resolve(client, admin, refund["id"], action="offline")
    assert missing_note.status_code == 422
    ops = await staff_token("ops")
    assert (
        await _resolve(client, ops, refund["id"], action="offline", note="bank")
    ).status_code == 403
    r = await _resolve(client, admin, refund["id"], action="offline", note="银行转账 流水 8812")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["resolution"]) == ("offline", "offline")
    assert r.json()["resolution_note"] == "银行转账 流水 8812"
    again = await _resolve(client, admin, refund["id"], action="offline", note="银行转账 流水 8812")
    assert again.status_code == 200 and again.json()["status"] == "offline"
    late = await _resolve(client, admin, refund["id"], action="retry")
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "WALLET_REFUND_NOT_ABNORMAL"
    actions = [
        a.action
        for a in await AuditLog.filter(target=f"topup_refund:{refund['id']}").order_by("id")
    ]
    assert actions == ["wallet.topup_refund.retry", "wallet.topup_refund.offline"]
    liability = (await client.get("/api/admin/v1/wallet/liability", headers=admin)).json()
    assert liability["refunds_in_flight_fen"] == 0
    assert (await service.get_balance(member)).total_fen == 0
    await assert_ledger_clean()


async def test_retry_goes_through_once_wechat_has_the_amount_back(
    client: httpx.AsyncClient, fake_pay: FakePay, member_headers: MemberLogin
) -> None:
    member, refund, admin = await _abnormal(client, fake_pay, member_headers)
    no = refund["out_refund_no"]
    fake_pay.settle_refund(no, "CLOSED")  # WeChat closed it: the amount is refundable again
    r = await client.post(
        f"/api/admin/v1/wallet/refunds/{refund['id']}/resolve",
        json={"action": "retry"},
        headers={**admin, "Idempotency-Key": "fix-1"},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["attempt"]) == ("processing", 1)
    sent = fake_pay.refunds[f"{no}-1"]
    assert (sent.refund, sent.out_trade_no) == (50000, fake_pay.refunds[no].out_trade_no)
    replay = await client.post(
        f"/api/admin/v1/wallet/refunds/{refund['id']}/resolve",
        json={"action": "retry"},
        headers={**admin, "Idempotency-Key": "fix-1"},
    )
    assert replay.json() == r.json()
    # asked again without the key: the retry is in flight, nothing is sent twice
    again = await _resolve(client, admin, refund["id"], action="retry")
    assert again.status_code == 200 and again.json()["attempt"] == 1
    assert fake_pay.calls["refund"] == 2

    # news of the replaced attempt is ignored; the new attempt's success settles it
    headers, body = fake_pay.notification(fake_pay.settle_refund(no, "ABNORMAL"))
    assert (await client.post(NOTIFY, headers=headers, content=body)).status_code == 204
    assert (await TopUpRefund.get(id=refund["id"])).status == "processing"
    headers, body = fake_pay.refund_notification(f"{no}-1")
    assert (await client.post(NOTIFY, headers=headers, content=body)).status_code == 204
    row = await TopUpRefund.get(id=refund["id"])
    assert (row.status, row.resolution) == ("succeeded", "retry")
    assert (await service.get_balance(member)).total_fen == 0
    await assert_ledger_clean()


async def test_retry_finds_the_refund_went_through_meanwhile(
    client: httpx.AsyncClient, fake_pay: FakePay, member_headers: MemberLogin
) -> None:
    _member, refund, admin = await _abnormal(client, fake_pay, member_headers)
    fake_pay.settle_refund(refund["out_refund_no"], "SUCCESS")  # e.g. handled at WeChat
    r = await _resolve(client, admin, refund["id"], action="retry")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["attempt"]) == ("succeeded", 0)
    assert fake_pay.calls["refund"] == 1
    assert await AuditLog.filter(action="wallet.topup_refund.retry").count() == 1


async def test_only_abnormal_refunds_resolve(
    client: httpx.AsyncClient, fake_pay: FakePay, member_headers: MemberLogin
) -> None:
    alice = await member_headers("bob")
    top_up = (await paid_top_up(client, fake_pay, alice, 10000))["top_up"]
    admin = await staff_token()
    r = await client.post(
        f"/api/admin/v1/wallet/top-ups/{top_up['id']}/refund",
        json={"reason": "member asked"},
        headers=admin,
    )
    processing = await _resolve(client, admin, r.json()["id"], action="offline", note="cash")
    assert processing.status_code == 409
    assert processing.json()["error"]["details"] == {"status": "processing"}
    assert (await _resolve(client, admin, 999_999, action="retry")).status_code == 404
    assert (await _resolve(client, admin, 2**63, action="retry")).status_code == 422
