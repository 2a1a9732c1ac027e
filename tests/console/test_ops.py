"""Order import with row-level errors; coupon templates and gift packs issued."""

from __future__ import annotations

from mall.coupons.models import Coupon
from mall.points.models import ExternalOrder
from tests.conftest import MemberLogin
from tests.console.conftest import Console

CSV = (
    "platform,order_no,phone,paid_fen,paid_at,status\n"
    "tmall,TM001,13800138000,19900,2025-06-01 10:00:00,completed\n"
    "jd,JD002,13900139000,not-a-number,2025-06-02 11:00:00,completed\n"
    "douyin,DY003,13700137000,5900,2025-06-03 12:00:00,completed\n"
)


async def test_csv_import_shows_row_errors(console: Console) -> None:
    page = console.page
    await console.sign_in("ops", "import")
    await console.drop_files(
        "[data-role=dropzone]", [("orders.csv", "text/csv", CSV.encode("utf-8"))]
    )
    await page.wait_for_selector("[data-kpi=rows] .kpi-value:text-is('3')")
    assert await page.text_content("[data-kpi=created] .kpi-value") == "2"
    assert await page.text_content("[data-kpi=errors] .kpi-value") == "1"
    # the bad row is named by its line in the file (the header is line 1)
    [bad] = await page.locator("tr[data-row]").all()
    assert await bad.get_attribute("data-row") == "3"
    assert "JD002" in (await bad.text_content() or "")
    assert sorted(await ExternalOrder.all().values_list("order_no", flat=True)) == [
        "DY003",
        "TM001",
    ]


async def test_template_and_pack_issued_to_members(
    console: Console, member_headers: MemberLogin
) -> None:
    from mall.members.models import Member

    await member_headers("erin")
    await member_headers("frank")
    ids = sorted(await Member.all().values_list("id", flat=True))
    page = console.page
    await console.sign_in("ops", "coupons")
    await page.click("button[data-action=new-template]")
    form = page.locator("form[data-form=coupon-template]")
    await form.locator("#f-name").fill("满100减20")
    await form.locator("#f-kind").select_option("threshold")
    await form.locator("#f-face_value").fill("20")
    await form.locator("#f-threshold").fill("100")
    assert await form.locator("#f-discount_percent").is_hidden()
    await form.locator("button[data-action=save]").click()
    await page.wait_for_selector("[data-role=templates] td:has-text('满100减20')")

    await page.click("button[data-action=new-pack]")
    pack_form = page.locator("form[data-form=gift-pack]")
    await pack_form.locator("#f-name").fill("老客回馈")
    await pack_form.locator("#f-quantity").fill("2")
    await pack_form.locator("button[data-action=save]").click()
    await page.wait_for_selector("[data-role=packs] td:has-text('老客回馈')")

    await page.click("[data-role=packs] button[data-action=issue]")
    issue = page.locator("form[data-form=issue-pack]")
    await issue.locator("#f-target").select_option("members")
    await issue.locator("#f-member_ids").fill(", ".join(str(i) for i in ids) + ", 999999")
    await issue.locator("button[data-action=issue]").click()
    await page.wait_for_selector("[data-role=issue-result] .notice")
    # two members got the pack (2 coupons each); the unknown id is listed with its reason
    assert "2 / 3" in (await page.text_content("[data-role=issue-result] .notice") or "")
    assert "MEMBER_NOT_FOUND" in (await page.text_content("[data-role=issue-result]") or "")
    assert await Coupon.filter(member_id__in=ids).count() == 4
    # a second click sends the same Idempotency-Key: nothing is given twice
    await issue.locator("button[data-action=issue]").click()
    await page.wait_for_timeout(500)
    assert await Coupon.all().count() == 4
