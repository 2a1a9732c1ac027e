"""WeChat Pay reconciliation in the console: ops reconcile yesterday from the page and see
each mismatch with both amounts, what to do and a link to its order or member (in
Chinese and English); an admin resolves ABNORMAL refunds from the same page (an order's
paid out another way with a note, a top-up's retried to the original payment after a
refused first retry), each audited."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from mall.audit.models import AuditLog
from mall.kit import clock
from mall.orders.models import Order, OrderRefund
from mall.wallet.models import TopUpRefund
from mall.wechat.models import PayReconciliation
from tests.conftest import MemberLogin
from tests.console.conftest import Console
from tests.orders.helpers import abnormal_refund
from tests.wallet.fake_pay import FakePay, fake_pay, fake_pay_server  # noqa: F401
from tests.wallet.helpers import paid_top_up, staff_token
from tests.wechat.payrec import paid_day

NOTIFY = "/api/v1/wechat/pay-notify"


@pytest.mark.clock
async def test_ops_reconcile_yesterday_and_read_the_mismatches(
    console: Console,
    client: httpx.AsyncClient,
    member_headers: MemberLogin,
    fake_pay: FakePay,  # noqa: F811
    artifacts: Path,
) -> None:
    # the payments are made at noon yesterday and the server's clock is left at noon
    # today; the browser's clock is set to the server's, so "yesterday" is the same day
    # on both sides whatever the real date
    paid = await paid_day(client, fake_pay, member_headers)
    day = paid.day.isoformat()
    page = console.page
    await page.clock.set_fixed_time(clock.now())
    await console.sign_in("ops", "pay-reconciliation")
    await page.wait_for_selector("[data-menu=pay-reconciliation]:text-is('支付对账')")
    await page.wait_for_selector("[data-role=days] td.empty:text-is('还没有任何对账记录')")
    assert day in (await page.text_content("[data-role=not-yet]") or "")
    # ops may read but not resolve refunds
    await page.wait_for_selector("[data-role=abnormal] td.empty:text-is('没有待处理的退款')")
    assert "仅管理员" in (await page.text_content("[data-role=abnormal]") or "")

    assert await page.input_value("#f-payrec_day") == day  # yesterday by default
    await page.click("form[data-form=run] [data-action=run]")
    row = page.locator(f"[data-role=days] tr[data-bill-date='{day}']")
    await row.wait_for()
    assert await row.get_attribute("data-status") == "mismatch"
    assert await row.locator("[data-status]").text_content() == "有差异"
    assert await row.locator("[data-figure=mismatches]").text_content() == "3"
    total = paid.matched.cash_fen + paid.lost.cash_fen + paid.top_up.amount_fen
    assert f"¥{total // 100}.{total % 100:02d}" in (await row.text_content() or "")
    await page.wait_for_selector("[data-role=not-yet]:empty", state="attached")
    audit = await AuditLog.get(action="wechat.pay.reconcile")
    assert audit.staff_username.startswith("ops_") and audit.detail["mismatches"] == 3
    assert (await PayReconciliation.get(bill_date=paid.day)).status == "mismatch"

    await row.locator("[data-action=view]").click()
    await page.wait_for_selector("[data-role=mismatches] tr[data-kind]")
    assert await page.locator("[data-role=mismatches] tr[data-kind]").count() == 3
    assert await page.text_content("h1") == f"{day} 对账详情"
    lost = page.locator(f"tr[data-trade-no='O{paid.lost.number}']")
    assert await lost.get_attribute("data-kind") == "paid_not_in_mall"
    assert await lost.locator("[data-role=kind]").text_content() == "微信已收款，商城未记账"
    assert await lost.locator("[data-figure=wechat]").text_content() == "¥80.00"
    assert await lost.locator("[data-figure=mall]").text_content() == "—"
    assert await lost.locator("[data-role=order]").get_attribute("href") == (
        f"#/orders/{paid.lost.id}"
    )
    assert await lost.locator("[data-role=member]").get_attribute("href") == (
        f"#/members/{paid.lost.member_id}"
    )
    assert "支付通知丢失" in (await lost.text_content() or "")
    top_up = page.locator(f"tr[data-trade-no='{paid.top_up.out_trade_no}']")
    assert await top_up.locator("[data-role=top-up]").text_content() == (f"充值 #{paid.top_up.id}")
    assert await top_up.locator("[data-figure=wechat]").text_content() == "¥100.00"
    refund = page.locator(f"tr[data-trade-no='O{paid.matched.number}']")
    assert await refund.get_attribute("data-kind") == "refund_not_at_wechat"
    assert await refund.locator("[data-role=refund-no]").text_content() == paid.refund_no
    assert await refund.locator("[data-figure=mall]").text_content() == "¥29.90"
    assert await refund.locator("[data-figure=wechat]").text_content() == "—"
    await page.screenshot(path=str(artifacts / "console-pay-reconciliation.png"), full_page=True)

    await page.click("button[data-lang=en]")
    await page.wait_for_selector(f"h1:text-is('Reconciliation of {day}')")
    await page.wait_for_selector(
        f"tr[data-trade-no='O{paid.lost.number}'] [data-role=kind]"
        ":text-is('Paid at WeChat, not in the mall')"
    )
    await page.wait_for_selector("[data-menu=pay-reconciliation]:text-is('Pay reconciliation')")
    # the link takes ops to the order
    await page.click(f"tr[data-trade-no='O{paid.lost.number}'] [data-role=order]")
    await page.wait_for_selector(f"h1:has-text('{paid.lost.number}')")

    # a day that was never reconciled says so, with the button to do it
    await console.go(f"pay-reconciliation/{(paid.day - timedelta(days=1)).isoformat()}")
    await page.wait_for_selector("[data-role=missing]")
    assert await page.locator("[data-action=run]").count() == 1


async def _abnormal_top_up_refund(
    client: httpx.AsyncClient, pay: FakePay, member_headers: MemberLogin
) -> TopUpRefund:
    """A 500-yuan top-up refunded in full, which WeChat reports ABNORMAL."""
    alice = await member_headers("payrec_alice")
    top_up = (await paid_top_up(client, pay, alice, 50_000))["top_up"]
    r = await client.post(
        f"/api/admin/v1/wallet/top-ups/{top_up['id']}/refund",
        json={"reason": "member moved away"},
        headers=await staff_token(),
    )
    assert r.status_code == 201, r.text
    h, body = pay.refund_notification(r.json()["out_refund_no"], "ABNORMAL")
    assert (await client.post(NOTIFY, headers=h, content=body)).status_code == 204
    return await TopUpRefund.get(id=r.json()["id"], status="abnormal")


async def test_admin_resolves_abnormal_refunds(
    console: Console,
    client: httpx.AsyncClient,
    member_headers: MemberLogin,
    fake_pay: FakePay,  # noqa: F811
    artifacts: Path,
) -> None:
    refund = await abnormal_refund(client, fake_pay, member_headers, "payrec_abnormal")
    order_refund = await OrderRefund.get(id=refund["id"])
    top_up_refund = await _abnormal_top_up_refund(client, fake_pay, member_headers)
    page = console.page
    await console.sign_in("admin", "pay-reconciliation")
    by_order = page.locator(f"[data-role=abnormal] tr[data-refund='order:{order_refund.id}']")
    by_top_up = page.locator(f"[data-role=abnormal] tr[data-refund='top_up:{top_up_refund.id}']")
    await by_order.wait_for()
    assert await by_order.locator("[data-figure=cash]").text_content() == "¥29.90"
    assert await by_order.locator("[data-role=order]").get_attribute("href") == (
        f"#/orders/{order_refund.order_id}"
    )
    order = await Order.get(id=order_refund.order_id)
    assert await by_order.locator("[data-role=member]").get_attribute("href") == (
        f"#/members/{order.member_id}"
    )
    assert await by_top_up.locator("[data-figure=cash]").text_content() == "¥500.00"
    assert await by_top_up.locator("[data-role=member]").get_attribute("href") == (
        f"#/members/{top_up_refund.member_id}"
    )
    assert "null" not in (await page.text_content("[data-role=abnormal]") or "")
    await page.screenshot(path=str(artifacts / "console-pay-refunds.png"), full_page=True)

    # the order's: paid out another way, with a note
    await by_order.locator("[data-action=offline]").click()
    form = page.locator("form[data-form=resolve-offline]")
    assert "¥29.90" in (await form.text_content() or "")
    await form.locator("#f-resolve_note").fill("门店现金退还 收据 0042")
    await form.locator("[data-action=confirm-offline]").click()
    await by_order.wait_for(state="detached")
    row = await OrderRefund.get(id=order_refund.id)
    assert (row.cash_status, row.resolution, row.resolution_note) == (
        "offline", "offline", "门店现金退还 收据 0042",
    )  # fmt: skip
    audit = await AuditLog.get(action="order.refund.offline")
    assert audit.target == f"order:{order_refund.order_id}"
    assert audit.detail["note"] == "门店现金退还 收据 0042" and audit.detail["cash_fen"] == 2990
    assert audit.staff_username.startswith("admin_")

    # the top-up's: WeChat still holds the abnormal amount, so the first retry is refused
    await by_top_up.locator("[data-action=retry]").click()
    dialog = page.locator("dialog.modal")
    assert "¥500.00" in (await dialog.text_content() or "")
    await dialog.locator(".btn-primary").click()
    await page.wait_for_selector(".toast-error")
    await by_top_up.locator("td:nth-child(6):text-is('1')").wait_for()
    assert (await TopUpRefund.get(id=top_up_refund.id)).status == "abnormal"
    # once WeChat gives the amount back to the merchant, a retry goes through
    fake_pay.settle_refund(top_up_refund.out_refund_no, "CLOSED")
    fake_pay.refund_status = "SUCCESS"
    await by_top_up.locator("[data-action=retry]").click()
    await page.locator("dialog.modal .btn-primary").click()
    await by_top_up.wait_for(state="detached")
    await page.wait_for_selector("[data-role=abnormal] td.empty")
    row2 = await TopUpRefund.get(id=top_up_refund.id)
    assert (row2.status, row2.attempt, row2.resolution) == ("succeeded", 2, "retry")
    assert f"{top_up_refund.out_refund_no}-2" in fake_pay.refunds
    retries = await AuditLog.filter(action="wallet.topup_refund.retry").order_by("id")
    assert len(retries) == 2 and all(a.staff_username.startswith("admin_") for a in retries)
