"""Referral in the console: a promoter made from a member, its customers and commission
ledger (with a refund reversal) and the CSV export; levels editable by admins only."""

from __future__ import annotations

from pathlib import Path

from mall.members.models import Member
from mall.referral import service as referral_service
from mall.referral.models import CommissionEntry, Promoter
from tests.console.conftest import Console


async def test_promoter_created_and_its_commission_ledger(
    console: Console, artifacts: Path
) -> None:
    koc = await Member.create(openid="o_koc", nickname="星推官小林")
    customer = await Member.create(openid="o_customer", nickname="新客小王")
    page = console.page
    await console.sign_in("ops", "referral")
    await page.click("[data-action=new-promoter]")
    form = page.locator("form[data-form=promoter]")
    # salespeople (staff promoters) are for admins: ops are not offered them
    assert await form.locator("#f-promoter_kind option").count() == 1
    await form.locator("#f-promoter_who").fill(str(koc.id))
    await form.locator("#f-promoter_level").select_option("koc")
    await form.locator("[data-action=save]").click()
    await page.wait_for_url("**/admin#/referral/promoter/*")
    promoter = await Promoter.get(id=int(page.url.rsplit("/", 1)[1]))
    assert (promoter.member_id, promoter.level) == (koc.id, "koc")
    assert await page.text_content("[data-role=share-code]") == promoter.code

    # the customer joins through the code, pays 100 yuan, then 40 is refunded
    await referral_service.bind(customer, promoter.code)
    await referral_service.on_order_completed(9001, customer.id, 10000)
    await referral_service.on_order_refunded(9001, customer.id, 4000)
    entries = await CommissionEntry.filter(promoter_id=promoter.id).order_by("-id")
    assert [e.event for e in entries] == ["refunded", "completed"]
    await page.reload()
    await page.wait_for_selector("[data-role=ledger] tr[data-entry]")
    shown = [
        int(await cell.get_attribute("data-amount"))
        for cell in await page.locator("[data-role=ledger] [data-amount]").all()
    ]
    assert shown == [e.amount_fen for e in entries] and shown[1] == 500
    net = sum(shown)
    assert await page.text_content("[data-role=net-commission]") == f"¥{net // 100}.{net % 100:02d}"
    assert await page.text_content("[data-role=customers]") == "1"
    await page.wait_for_selector(f"[data-role=customers] tr[data-customer='{customer.id}']")

    await page.screenshot(path=str(artifacts / "console-promoter.png"), full_page=True)
    async with page.expect_download() as info:
        await page.click("[data-action=export]")
    download = await info.value
    assert download.suggested_filename.startswith("commissions-")
    csv = Path(await download.path()).read_text(encoding="utf-8-sig")  # noqa: ASYNC240
    assert csv.count("9001") == 2

    # and on the promoters list, with its figures
    await console.go("referral")
    row = page.locator(f"[data-role=promoters] tr[data-id='{promoter.id}']")
    assert await row.locator("[data-figure=customers]").text_content() == "1"
    await page.screenshot(path=str(artifacts / "console-promoters.png"), full_page=True)
    await console.go("referral/commissions")
    await page.wait_for_selector("[data-role=ledger] tr[data-entry]")
    assert await page.locator("[data-role=ledger] tr[data-entry]").count() == 2
    await page.screenshot(path=str(artifacts / "console-commissions.png"), full_page=True)


async def test_levels_read_only_for_ops_editable_by_admin(
    console: Console, artifacts: Path
) -> None:
    page = console.page
    await console.sign_in("ops", "referral/levels")
    await page.wait_for_selector("[data-role=read-only]")
    assert await page.locator("form[data-form=referral-rules] [data-action=save]").count() == 0
    await page.screenshot(path=str(artifacts / "console-referral-levels.png"), full_page=True)

    await console.sign_in("admin", "referral/levels")
    rate = page.locator("tr[data-level=koc] input[name=level_rate]")
    assert await rate.input_value() == "5.00"
    await rate.fill("8")
    await page.click("form[data-form=referral-rules] [data-action=save]")
    # the page reloads the saved rules: "8" comes back as "8.00"
    await page.wait_for_function(
        "() => document.querySelector('tr[data-level=koc] input[name=level_rate]')"
        "?.value === '8.00'"
    )
    koc = (await referral_service.get_rules()).level("koc")
    assert koc is not None and koc.rate_bp == 800
