"""Segments in the console: rules built in the page, the live count, a gift-pack campaign
and its counts (one member over the monthly touch cap)."""

from __future__ import annotations

import re
from pathlib import Path

from mall.coupons import service as coupons_service
from mall.coupons.models import Coupon
from mall.members.models import Member
from mall.segments.models import Segment
from mall.touch.service import try_touch
from tests.console.conftest import Console


async def _member_ids(page: object, scope: str) -> set[int]:
    cells = await page.locator(f"{scope} tr[data-member]").all()  # type: ignore[attr-defined]
    return {int(await c.get_attribute("data-member")) for c in cells}


async def test_segment_rules_preview_and_gift_pack_campaign(
    console: Console, artifacts: Path
) -> None:
    a = await Member.create(openid="o_seg_a", nickname="seg_a", level=3, tags=["vip"])
    b = await Member.create(openid="o_seg_b", nickname="seg_b", level=2)
    await Member.create(openid="o_seg_c", nickname="seg_c", level=1, tags=["vip"])
    await Member.create(openid="o_seg_d", nickname="seg_d", level=0)
    template = await coupons_service.create_template(
        {"name": "无门槛5元", "kind": "cash", "face_value_fen": 500}
    )
    pack = await coupons_service.create_pack(
        {"name": "会员日礼包", "items": [{"template_id": template.id, "quantity": 1}]}
    )
    # b has had this month's two touches already (e.g. coupon reminders)
    assert await try_touch(b.id, "coupon_reminder") and await try_touch(b.id, "coupon_reminder")

    page = console.page
    await console.sign_in("ops", "segments")
    await page.click("[data-action=new]")
    await page.fill("#f-name", "高等级会员")
    # no rules yet: every member
    await page.wait_for_selector("[data-role=preview-count][data-count='4']")

    await page.click("[data-action=add-rule]")
    level = page.locator("[data-role=predicate]").last
    await level.locator("#f-pred_field").select_option("level")
    await level.locator("#f-gte").fill("2")
    await page.wait_for_selector("[data-role=preview-count][data-count='2']")
    assert await _member_ids(page, "[data-role=preview-sample]") == {a.id, b.id}

    await page.click("[data-action=add-rule]")
    tags = page.locator("[data-role=predicate]").last
    await tags.locator("#f-pred_field").select_option("tags")
    await tags.locator("#f-tags_any").fill("vip")
    await page.wait_for_selector("[data-role=preview-count][data-count='1']")
    assert await _member_ids(page, "[data-role=preview-sample]") == {a.id}
    # a rule the API refuses is explained in place, and the count is not guessed
    await tags.locator("#f-tags_any").fill("")
    await page.wait_for_selector("[data-role=preview-error]:not(:empty)")
    assert await page.get_attribute("[data-role=preview-count]", "data-count") is None
    await tags.locator("[data-action=remove-rule]").click()
    await page.wait_for_selector("[data-role=preview-count][data-count='2']")

    # the JSON view shows the same document the builder made
    await page.click("[data-action=toggle-json]")
    assert '"gte": 2' in await page.input_value("#f-rules_json")
    await page.click("[data-action=toggle-json]")

    await page.screenshot(path=str(artifacts / "console-segment-editor.png"), full_page=True)
    await page.click("form[data-form=segment] [data-action=save]")
    await page.wait_for_url(re.compile(r".*#/segments/\d+$"))
    segment = await Segment.get(id=int(page.url.rsplit("/", 1)[1]))
    assert segment.rules == {"all": [{"field": "level", "gte": 2}]}
    await page.wait_for_selector("[data-role=segment-count]:text-is('2')")
    await page.wait_for_selector("[data-role=members] tr[data-member]")
    assert await _member_ids(page, "[data-role=members]") == {a.id, b.id}

    campaign = page.locator("form[data-form=campaign]")
    await campaign.locator("#f-campaign_kind").select_option("gift_pack")
    await campaign.locator("#f-gift_pack_id").select_option(str(pack.id))
    await campaign.locator("[data-action=send]").click()
    await page.locator("dialog .actions .btn-primary").click()
    row = page.locator("[data-role=campaigns] tr[data-campaign]")
    await row.locator("[data-count=sent]:text-is('1')").wait_for()
    counts = {
        k: await row.locator(f"[data-count={k}]").text_content()
        for k in ("members", "sent", "skipped_by_cap", "no_grant", "refused", "failed")
    }
    assert counts == {
        "members": "2",
        "sent": "1",
        "skipped_by_cap": "1",
        "no_grant": "0",
        "refused": "0",
        "failed": "0",
    }
    await page.screenshot(path=str(artifacts / "console-segment.png"), full_page=True)
    assert await Coupon.filter(member_id=a.id).count() == 1
    assert await Coupon.filter(member_id=b.id).count() == 0

    # the list names the segment with its last count
    await console.go("segments")
    await page.wait_for_selector(f"[data-role=segments] tr[data-id='{segment.id}']")
    await page.screenshot(path=str(artifacts / "console-segments.png"), full_page=True)
