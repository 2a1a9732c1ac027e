"""Orders in the console: the list filtered by number and member, an order's price
breakdown and payment parts, shipping with a tracking number, a refund of one line, and
the CSV export (consignee phone masked)."""

from __future__ import annotations

from pathlib import Path

from mall.audit.models import AuditLog
from mall.kit import clock
from mall.orders import service as orders_service
from mall.orders.models import Order, OrderRefund
from mall.wallet import service as wallet_service
from tests.console.conftest import Console
from tests.orders.helpers import NOT_MEMBER_DAY, make_address, make_member, make_shop


async def _wallet_order() -> Order:
    """2 soap + 1 towel (12,990 fen), 1000 points off, the rest from the wallet."""
    shop = await make_shop()
    member = await make_member(5000)
    await wallet_service.adjust(
        member.id, principal_fen=50_000, bonus_fen=0, reason="seed", staff=None,
        idempotency_key=f"seed:{member.id}",
    )  # fmt: skip
    data = orders_service.OrderIn.model_validate(
        {"items": [{"sku_id": shop.soap.id, "quantity": 2},
                   {"sku_id": shop.towel.id, "quantity": 1}],
         "points": 1000, "use_wallet": True, "delivery": "express",
         "address_id": await make_address(member)}
    )  # fmt: skip
    order = await orders_service.place_order(member, data, None)
    await order.refresh_from_db()
    assert order.status == "paid" and order.cash_fen == 0 and order.wallet_fen > 0
    return order


async def test_order_found_shipped_and_refunded_by_line(console: Console, artifacts: Path) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    order = await _wallet_order()
    other = await _wallet_order()
    page = console.page
    await console.sign_in("ops", "orders")
    await page.wait_for_selector(f"[data-role=orders] tr[data-id='{other.id}']")
    assert await page.locator("[data-role=orders] tr[data-id]").count() == 2
    # filtered by number prefix, then by member
    await page.fill("#f-order_number", order.number)
    await page.click("[data-action=search]")
    await page.wait_for_function(
        "() => document.querySelectorAll('[data-role=orders] tr[data-id]').length === 1"
    )
    await page.fill("#f-order_number", "")
    await page.fill("#f-order_member", str(other.member_id))
    await page.click("[data-action=search]")
    await page.wait_for_selector(f"[data-role=orders] tr[data-id='{other.id}']")
    assert await page.locator(f"[data-role=orders] tr[data-id='{order.id}']").count() == 0

    # the export follows the filters; the consignee phone is masked
    async with page.expect_download() as info:
        await page.click("[data-action=export]")
    download = await info.value
    assert download.suggested_filename.startswith("orders-")
    text = Path(await download.path()).read_text(encoding="utf-8-sig")  # noqa: ASYNC240
    assert other.number in text and order.number not in text
    assert "138****8000" in text and "13800138000" not in text

    await console.go(f"orders/{order.id}")
    await page.wait_for_selector("[data-role=breakdown]")
    figure = page.locator("[data-role=breakdown] [data-figure=amount_due]")
    assert (
        await figure.text_content()
        == f"¥{order.amount_due_fen // 100:,}.{order.amount_due_fen % 100:02d}"
    )
    assert await page.text_content("[data-role=payment] [data-figure=points_used]") == "1,000"
    assert "138****8000" in (await page.text_content("[data-role=phone]") or "")
    await page.screenshot(path=str(artifacts / "console-order.png"), full_page=True)

    form = page.locator("form[data-form=ship]")
    await form.locator("#f-carrier").fill("顺丰速运")
    await form.locator("#f-tracking_no").fill("SF1234567890")
    await form.locator("[data-action=ship]").click()
    await page.wait_for_selector("[data-role=tracking]:text-is('SF1234567890')")
    assert (await Order.get(id=order.id)).status == "shipped"

    # refund one towel: the towel line only
    lines = {ln.name: ln for ln in (await orders_service.order_out(order, admin=True)).lines}
    towel = lines["毛巾"]
    await page.fill(f"[data-line='{towel.id}']", "1")
    await page.fill("#f-refund_reason", "破损")
    await page.click("form[data-form=refund] [data-action=refund]")
    await page.click("dialog .btn-primary")
    await page.wait_for_selector("tr[data-refund]")
    [refund] = await OrderRefund.filter(order_id=order.id)
    assert refund.lines == [{"line_id": towel.id, "quantity": 1}] and refund.reason == "破损"
    assert await AuditLog.filter(action__startswith="order").count() >= 2
    await page.screenshot(path=str(artifacts / "console-order-refunded.png"), full_page=True)


async def test_orders_page_in_english(console: Console) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    order = await _wallet_order()
    page = console.page
    await console.sign_in("ops", "orders")
    await page.click("button[data-lang=en]")
    await page.wait_for_selector("[data-menu=orders]:text-is('Orders')")
    await page.wait_for_selector("[data-role=orders] [data-status=paid]:text-is('To ship')")
    await console.go(f"orders/{order.id}")
    await page.wait_for_selector("h2:text-is('Price breakdown')")
