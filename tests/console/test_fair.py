"""Fair sales in the console: a flash sale's eligibility set in its form (and edited on its
live page, with its bookings listed), and the fair-sales page: members flagged from a
suspicious list, unflagged from the flags list with a reason, errors in the page's
language."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import httpx

from mall.audit.models import AuditLog
from mall.kit import clock
from mall.members import service as members_service
from mall.members.models import Staff
from mall.seckill import service as seckill_service
from mall.seckill.models import MemberFlag, SeckillBooking, SeckillSession
from tests.console.conftest import Console
from tests.factories import make_member


def shanghai_local(minutes_from_now: int) -> str:
    moment = (clock.now() + timedelta(minutes=minutes_from_now)).astimezone(clock.SHANGHAI)
    return moment.strftime("%Y-%m-%dT%H:%M")


def as_instant(local: str) -> datetime:
    return datetime.fromisoformat(local).replace(tzinfo=clock.SHANGHAI)


async def _toast(console: Console, text: str) -> None:
    await console.page.wait_for_selector(f".toast-error:has-text('{text}')")


async def test_session_form_sets_eligibility_and_the_live_page_shows_rules_and_bookings(
    console: Console, client: httpx.AsyncClient, artifacts: Path
) -> None:
    seckill_service.forget_local_state()
    page = console.page
    await console.sign_in("ops", "seckill")
    await page.click("button[data-action=new]")
    form = page.locator("form[data-form=seckill-session]")
    await form.locator("#f-name").fill("周五 20:00 预约秒杀")
    await form.locator("#f-ends_at").fill(shanghai_local(90))
    await form.locator("#f-item_title").fill("限量礼盒")
    await form.locator("#f-item_stock").fill("5")
    # flags bite by default: a new sale turns flagged members away unless ops say not
    assert await form.locator("#f-exclude_flagged").is_checked()
    joined = shanghai_local(10)
    await form.locator("#f-require_phone").check()
    await form.locator("#f-joined_before").fill(joined)
    await form.locator("#f-require_booking").check()

    # a booked-members-only sale that has started could never be booked: refused here
    await form.locator("#f-starts_at").fill(shanghai_local(-1))
    await form.locator("#f-min_level").fill("3")
    await form.locator("button[data-action=save]").click()
    await _toast(console, "仅限预约的场次须在未来开始")
    # a level out of range is refused like the form's other numbers (nothing is sent)
    await form.locator("#f-starts_at").fill(shanghai_local(30))
    await form.locator("#f-min_level").fill("101")
    await form.locator("button[data-action=save]").click()
    assert await form.locator("#f-min_level:invalid").count() == 1
    assert await SeckillSession.all().count() == 0

    await form.locator("#f-min_level").fill("3")
    await form.locator("button[data-action=save]").click()
    await page.wait_for_url("**/admin#/seckill/*")
    session_id = int(page.url.rsplit("/", 1)[1])
    session = await SeckillSession.get(id=session_id)
    assert session.name == "周五 20:00 预约秒杀"
    assert session.require_phone and session.exclude_flagged and session.require_booking
    assert session.min_level == 3
    assert session.joined_before == as_instant(joined)
    audit = await AuditLog.get(action="seckill.session.create")
    assert audit.detail["rules"]["min_level"] == 3

    # the live page shows the rules
    assert await page.text_content("[data-rule=min_level]") == "Lv3 及以上"
    assert await page.text_content("[data-rule=require_booking]") == "是"
    assert await page.text_content("[data-rule=require_phone]") == "是"

    # bookings: one member books through the shopper API; 50 more make a second page
    member = await make_member("booker", phone="13800001234", level=3)
    token = (await members_service.tokens_for(member)).token
    r = await client.post(
        f"/api/v1/seckill/sessions/{session_id}/booking",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    for i in range(50):
        await SeckillBooking.create(session_id=session_id, member_id=900_000 + i)
    await page.click("[data-action=refresh-bookings]")
    rows = page.locator("[data-role=bookings] tr[data-booking]")
    await page.wait_for_function(
        "() => document.querySelectorAll('[data-role=bookings] tr[data-booking]').length === 50"
    )
    # newest first: the member's booking is on the second page
    assert await page.locator(f"[data-role=bookings] a[data-member='{member.id}']").count() == 0
    await page.click("[data-role=bookings] [data-action=more]")
    await page.wait_for_selector(f"[data-role=bookings] a[data-member='{member.id}']")
    assert await rows.count() == 51
    # who booked: nickname and masked phone next to the id; ids of no account stay bare
    booked = page.locator(
        "[data-role=bookings] tr[data-booking]", has=page.locator(f"a[data-member='{member.id}']")
    )
    assert await booked.locator("[data-role=member-name]").text_content() == "booker · 138****1234"
    assert await page.locator("[data-role=bookings] [data-role=member-name]").count() == 1
    assert "13800001234" not in (await page.text_content("[data-role=bookings]") or "")
    assert await page.locator("[data-role=bookings] [data-action=more]").is_hidden()
    await page.screenshot(path=str(artifacts / "console-seckill-rules.png"), full_page=True)

    # edit the rules on the live page
    await page.click("[data-action=edit-rules]")
    rules = page.locator("form[data-form=seckill-rules]")
    assert await rules.locator("#f-min_level").input_value() == "3"
    assert await rules.locator("#f-joined_before").input_value() == joined
    await rules.locator("#f-require_booking").uncheck()
    await rules.locator("#f-min_level").fill("0")
    await rules.locator("#f-joined_before").fill("")
    await rules.locator("button[data-action=save-rules]").click()
    await page.wait_for_selector("[data-rule=min_level]:text-is('不限')")
    session = await SeckillSession.get(id=session_id)
    assert not session.require_booking and session.min_level == 0
    assert session.joined_before is None
    assert session.require_phone and session.exclude_flagged
    assert await page.text_content("[data-rule=require_booking]") == "否"

    # the sessions list sums the rules up
    await console.go("seckill")
    row = page.locator(f"tr[data-id='{session_id}']")
    await row.wait_for()
    assert "排除标记" in (await row.text_content() or "")

    # and in English
    await page.click("button[data-lang=en]")
    await page.click("button[data-action=new]")
    booking = page.locator("#f-require_booking")
    label = page.locator("form[data-form=seckill-session] label.check", has=booking)
    assert (await label.text_content() or "").strip() == "Booked members only"


async def test_flag_from_a_suspicious_list_and_unflag_from_the_flags_list(
    console: Console, artifacts: Path
) -> None:
    farm = [await make_member(f"farm{i}", phone="13900001111") for i in range(3)]
    await make_member("alone", phone="13600003333")
    page = console.page
    staff_id = await console.sign_in("ops", "fair-sales/phones")
    staff = await Staff.get(id=staff_id)
    # the page is in the ops role's menu
    await page.wait_for_selector("nav [data-menu=fair-sales].is-active:text-is('防刷')")

    group = page.locator("[data-role=shared-phones] tr[data-group]")
    await group.first.wait_for()
    assert await group.count() == 1
    assert "139****1111" in (await group.text_content() or "")
    # each account's nickname by its id (the phone is the group's, not repeated)
    chip = page.locator(f"[data-chip='{farm[1].id}']")
    assert await chip.locator("[data-role=member-name]").text_content() == "farm1"
    assert await chip.locator(f"a[href='#/members/{farm[1].id}']").text_content() == (
        f"#{farm[1].id}"
    )
    await page.click(f"[data-chip='{farm[1].id}'] [data-action=flag]")
    dialog = page.locator("form[data-form=flag]")
    # the reason is filled in from the group (and may be changed)
    reason = "共用手机号 139****1111（3 个账号）"
    assert await dialog.locator("#f-fair_reason").input_value() == reason
    await dialog.locator("button[data-action=confirm-flag]").click()
    await page.wait_for_selector(f"[data-chip='{farm[1].id}'] [data-role=flagged]")
    flag = await MemberFlag.get(member_id=farm[1].id)
    assert (flag.reason, flag.flagged_by) == (reason, staff.username)
    assert await MemberFlag.all().count() == 1
    # two left in the group: flag them all at once
    await page.click("[data-role=shared-phones] [data-action=flag-all]:text-is('全部标记（2）')")
    await page.click("dialog .btn-primary:text-is('确定')")
    await page.locator("form[data-form=flag] button[data-action=confirm-flag]").click()
    for member in (farm[0], farm[2]):
        await page.wait_for_selector(f"[data-chip='{member.id}'] [data-role=flagged]")
    assert sorted(await MemberFlag.all().values_list("member_id", flat=True)) == sorted(
        m.id for m in farm
    )
    assert await page.locator("[data-role=shared-phones] [data-action=flag-all]").count() == 0
    assert await AuditLog.filter(action="seckill.member.flag").count() == 3
    await page.screenshot(path=str(artifacts / "console-fair-phones.png"), full_page=True)

    # the flags list: newest first; unflag asks for a reason
    await page.click("[data-tab=main]")
    await page.wait_for_selector(f"[data-role=flags] tr[data-flag='{farm[1].id}']")
    assert await page.locator("[data-role=flags] tr[data-flag]").count() == 3
    flagged_row = page.locator(f"[data-role=flags] tr[data-flag='{farm[1].id}']")
    assert await flagged_row.locator("[data-role=member-name]").text_content() == (
        "farm1 · 139****1111"
    )
    assert "13900001111" not in (await page.text_content("[data-role=flags]") or "")
    await page.click(f"tr[data-flag='{farm[1].id}'] [data-action=unflag]")
    unflag = page.locator("form[data-form=unflag]")
    await unflag.locator("button[data-action=confirm-unflag]").click()  # no reason yet
    assert await unflag.locator("#f-fair_reason:invalid").count() == 1
    assert await MemberFlag.filter(member_id=farm[1].id).exists()
    await unflag.locator("#f-fair_reason").fill("核实为一家人")
    await unflag.locator("button[data-action=confirm-unflag]").click()
    await page.wait_for_function(
        "(id) => !document.querySelector(`[data-role=flags] tr[data-flag='${id}']`)"
        " && document.querySelectorAll('[data-role=flags] tr[data-flag]').length === 2",
        arg=farm[1].id,
    )
    assert not await MemberFlag.filter(member_id=farm[1].id).exists()
    lifted = await AuditLog.get(action="seckill.member.unflag")
    assert (lifted.target, lifted.detail["reason"]) == (f"member:{farm[1].id}", "核实为一家人")

    # the flag form: an unknown member is the API's message, in the page's language
    await page.fill("#f-flag_member_id", "999999999")
    await page.fill("#f-flag_reason", "同一设备批量注册")
    await page.click("[data-action=flag]")
    await _toast(console, "会员不存在")
    await page.fill("#f-flag_member_id", str(farm[1].id))
    await page.click("[data-action=flag]")
    await page.wait_for_selector(f"[data-role=flags] tr[data-flag='{farm[1].id}']")
    assert (await MemberFlag.get(member_id=farm[1].id)).reason == "同一设备批量注册"
    await page.screenshot(path=str(artifacts / "console-fair-flags.png"), full_page=True)

    # English: the tabs, and the API's messages
    await page.click("button[data-lang=en]")
    await page.wait_for_selector("nav [data-menu=fair-sales]:text-is('Fair sales')")
    await page.wait_for_selector("[data-tab=logins]:text-is('Shared logins')")
    await page.fill("#f-flag_member_id", "999999999")
    await page.fill("#f-flag_reason", "bot")
    await page.click("[data-action=flag]")
    await _toast(console, "Member not found")


async def test_shared_logins_and_addresses_lists(console: Console) -> None:
    from mall.addresses import service as addresses_service
    from mall.addresses.schemas import AddressIn

    office = [await make_member(f"office{i}") for i in range(2)]
    for member in office:
        await members_service.tokens_for(member, ip="203.0.113.7")
    shippers = [await make_member(f"ship{i}") for i in range(2)]
    address = AddressIn(
        name="张三", phone="13800138000", region="上海市浦东新区", detail="世纪大道100号"
    )
    for member in shippers:
        await addresses_service.create_address(member.id, address)
    page = console.page
    await console.sign_in("admin", "fair-sales/logins")
    group = page.locator("[data-role=shared-logins] tr[data-group='203.0.113.7']")
    await group.wait_for()
    for member in office:
        assert await group.locator(f"[data-chip='{member.id}'] [data-action=flag]").count() == 1
        name = group.locator(f"[data-chip='{member.id}'] [data-role=member-name]")
        assert await name.text_content() == member.nickname
    # a narrower search finds nothing
    await page.fill("#f-min_members", "3")
    await page.click("[data-action=find]")
    await page.wait_for_selector("[data-role=shared-logins] td.empty")

    await page.click("[data-tab=addresses]")
    rows = page.locator("[data-role=shared-addresses] tr[data-group]")
    await rows.first.wait_for()
    assert await rows.count() == 1
    await page.click(f"[data-chip='{shippers[0].id}'] [data-action=flag]")
    reason = await page.locator("#f-fair_reason").input_value()
    assert reason.startswith("共用收货地址 ") and reason.endswith("（2 个账号）")
    await page.click("button[data-action=confirm-flag]")
    await page.wait_for_selector(f"[data-chip='{shippers[0].id}'] [data-role=flagged]")
    assert await MemberFlag.filter(member_id=shippers[0].id).exists()
