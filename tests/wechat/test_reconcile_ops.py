"""Ops and the reconciliation of WeChat Pay's bills: the kept days with each mismatch
linked to its order or top-up and member, one day by date, and a past day reconciled
again on demand (bounded to the days WeChat Pay keeps bills for, one run at a time,
audited, a bill not made yet kept as a failed run)."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from mall.audit.models import AuditLog
from mall.kit import clock
from mall.redis import get_redis
from mall.wechat.models import FAILED, PayReconciliation
from tests.conftest import MemberLogin
from tests.wallet.fake_pay import FakePay
from tests.wallet.helpers import staff_token
from tests.wechat.payrec import paid_day

A = "/api/admin/v1/pay/reconciliations"


@pytest.mark.clock
async def test_ops_reconcile_yesterday_and_see_each_mismatch_linked(
    client: httpx.AsyncClient, member_headers: MemberLogin, fake_pay: FakePay
) -> None:
    paid = await paid_day(client, fake_pay, member_headers)
    ops = await staff_token("ops")
    day = paid.day.isoformat()
    r = await client.post(f"{A}/{day}/run", headers=ops)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["bill_date"], answer["status"]) == (day, "mismatch")
    assert (answer["payments"], answer["paid_fen"]) == (
        3,
        paid.matched.cash_fen + paid.lost.cash_fen + paid.top_up.amount_fen,
    )
    by_kind = {(m["kind"], m["out_trade_no"]): m for m in answer["mismatches"]}
    assert set(by_kind) == {
        ("paid_not_in_mall", "O" + paid.lost.number),
        ("paid_not_in_mall", paid.top_up.out_trade_no),
        ("refund_not_at_wechat", "O" + paid.matched.number),
    }
    lost = by_kind[("paid_not_in_mall", "O" + paid.lost.number)]
    assert (lost["order_id"], lost["member_id"], lost["top_up_id"]) == (
        paid.lost.id, paid.lost.member_id, None,
    )  # fmt: skip
    assert (lost["wechat_fen"], lost["mall_fen"]) == (8000, None)
    top_up = by_kind[("paid_not_in_mall", paid.top_up.out_trade_no)]
    assert (top_up["top_up_id"], top_up["member_id"], top_up["order_id"]) == (
        paid.top_up.id, paid.top_up.member_id, None,
    )  # fmt: skip
    refund = by_kind[("refund_not_at_wechat", "O" + paid.matched.number)]
    assert (refund["out_refund_no"], refund["wechat_fen"], refund["mall_fen"]) == (
        paid.refund_no, None, paid.matched.cash_fen,
    )  # fmt: skip
    assert refund["order_id"] == paid.matched.id

    (audit,) = await AuditLog.filter(action="wechat.pay.reconcile")
    assert audit.target == f"pay_reconciliation:{day}"
    assert (audit.detail["status"], audit.detail["mismatches"]) == ("mismatch", 3)
    assert audit.staff_username.startswith("ops_")

    listed = (await client.get(A, headers=ops)).json()
    assert [d["bill_date"] for d in listed] == [day]
    assert listed[0]["mismatches"] == answer["mismatches"]
    one = await client.get(f"{A}/{day}", headers=ops)
    assert one.status_code == 200 and one.json() == listed[0]
    latest = await client.get(f"{A}/latest", headers=ops)
    assert latest.json() == listed[0]
    missing = await client.get(f"{A}/{(paid.day - timedelta(days=1)).isoformat()}", headers=ops)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "PAY_RECONCILIATION_DAY_NOT_FOUND"


@pytest.mark.clock
async def test_only_past_days_whose_bills_wechat_keeps(
    client: httpx.AsyncClient, fake_pay: FakePay
) -> None:
    clock.set_now(clock.now())
    today = clock.today()
    ops = await staff_token("ops")
    for day in (today, today + timedelta(days=1), today - timedelta(days=91)):
        r = await client.post(f"{A}/{day.isoformat()}/run", headers=ops)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "PAY_BILL_DATE_OUT_OF_RANGE"
        first, last = today - timedelta(days=90), today - timedelta(days=1)
        assert error["message"] == (
            f"只能对 {first.isoformat()} 至 {last.isoformat()} 之间的微信支付账单对账"
        )
    for bad in ("2026-02-30", "yesterday", "99999-01-01"):
        r = await client.post(f"{A}/{bad}/run", headers=ops)
        assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    oldest = today - timedelta(days=90)
    r = await client.post(f"{A}/{oldest.isoformat()}/run", headers=ops)
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text
    assert await AuditLog.filter(action="wechat.pay.reconcile").count() == 1


@pytest.mark.clock
async def test_a_bill_not_made_yet_is_kept_failed_and_one_run_at_a_time(
    client: httpx.AsyncClient, fake_pay: FakePay
) -> None:
    clock.set_now(clock.now())
    day = (clock.today() - timedelta(days=1)).isoformat()
    admin = await staff_token()
    fake_pay.bill_errors[(day, "ALL")] = "STATEMENT_CREATING"
    r = await client.post(f"{A}/{day}/run", headers={**admin, "Accept-Language": "en"})
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "PAY_BILL_NOT_READY"
    row = await PayReconciliation.get(bill_date=day)
    assert row.status == FAILED and "PAY_BILL_NOT_READY" in row.error
    audit = await AuditLog.get(action="wechat.pay.reconcile")
    assert audit.detail == {"status": "failed", "error": "PAY_BILL_NOT_READY"}
    listed = (await client.get(A, headers=admin)).json()
    assert [(d["bill_date"], d["status"]) for d in listed] == [(day, "failed")]

    # another run of the day under way (the job, `mall check pay`): refused, not audited
    await get_redis().set(f"wechat:reconcile:{day}:run", "someone", ex=60)
    del fake_pay.bill_errors[(day, "ALL")]
    r = await client.post(f"{A}/{day}/run", headers=admin)
    assert r.status_code == 409 and r.json()["error"]["code"] == "PAY_RECONCILIATION_RUNNING"
    assert await AuditLog.filter(action="wechat.pay.reconcile").count() == 1
    await get_redis().delete(f"wechat:reconcile:{day}:run")
    r = await client.post(f"{A}/{day}/run", headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text
    assert await get_redis().get(f"wechat:reconcile:{day}:run") is None


async def test_staff_only_and_wechat_pay_must_be_configured(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    day = (clock.today() - timedelta(days=1)).isoformat()
    assert (await client.post(f"{A}/{day}/run")).status_code == 401
    member = await member_headers("curious")
    assert (await client.post(f"{A}/{day}/run", headers=member)).status_code in (401, 403)
    r = await client.post(f"{A}/{day}/run", headers=await staff_token("ops"))
    assert r.status_code == 503 and r.json()["error"]["code"] == "PAY_NOT_CONFIGURED"
    assert not await PayReconciliation.exists()
