"""The audit log in the console (admin): actions by name in Chinese and English, what
changed as a field-by-field table, and the filters (action, staff, time)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

from mall.audit import service as audit_service
from mall.kit import clock
from mall.points import service as points_service
from mall.points.schemas import Rules
from tests.console.conftest import Console


async def test_actions_by_name_and_a_readable_diff(console: Console, artifacts: Path) -> None:
    amy = SimpleNamespace(id=9001, username="amy")
    rules = Rules()
    rules.levels[1].discount_percent = 90
    rules.sign_in.daily_points = [10, 20]
    await points_service.save_rules(rules, staff=amy, base_version=0)
    await audit_service.record(
        amy, "wallet.plan.update", "topup_plan:3",
        before={"active": True, "bonus_fen": 1000}, after={"active": False},
    )  # fmt: skip
    clock.advance(timedelta(days=-3))  # an older entry, by another staff
    await audit_service.record(
        SimpleNamespace(id=9002, username="bob"), "order.ship", "order:42", carrier="SF",
        tracking_no="SF1234567890",
    )  # fmt: skip
    clock.reset()

    page = console.page
    await console.sign_in("admin", "audit")
    rules_row = "[data-role=audit] tr[data-code='points.rules.update']"
    await page.wait_for_selector(rules_row)
    assert await page.text_content(f"{rules_row} [data-role=action-name]") == "修改积分规则"
    diff = f"{rules_row} [data-role=diff]"
    level = f"{diff} tr[data-field='levels.1.discount_percent'] td"
    assert [await c.text_content() for c in await page.locator(level).all()] == [
        "等级 1 · 会员价（%）", "98", "90",
    ]  # fmt: skip
    days = f"{diff} tr[data-field='sign_in.daily_points'] td"
    assert [await c.text_content() for c in await page.locator(days).all()] == [
        "签到奖励", "5, 5, 5, 5, 5, 5, 25", "10, 20",
    ]  # fmt: skip
    # only what changed is listed
    assert await page.locator(f"{diff} tr[data-field]").count() == 2
    plan_row = "[data-role=audit] tr[data-code='wallet.plan.update']"
    assert await page.text_content(f"{plan_row} [data-role=action-name]") == "修改充值方案"
    cells = await page.locator(f"{plan_row} tr[data-field] td").all()
    plan = [await c.text_content() for c in cells]
    assert plan == ["启用", "是", "否"]  # bonus_fen was not part of the change
    ship_row = "[data-role=audit] tr[data-code='order.ship']"
    facts = f"{ship_row} [data-role=facts] tr[data-field='tracking_no'] td"
    assert [await c.text_content() for c in await page.locator(facts).all()] == [
        "运单号", "SF1234567890",
    ]  # fmt: skip
    # a target with a page of its own links to it
    assert await page.get_attribute(f"{ship_row} a[href]", "href") == "#/orders/42"
    await page.screenshot(path=str(artifacts / "console-audit.png"), full_page=True)

    # filters: by action, by staff, by time
    await page.select_option("#f-audit_action", "order.ship")
    await page.wait_for_selector(f"{rules_row}", state="detached")
    assert await page.locator("[data-role=audit] tr[data-code]").count() == 1
    await page.select_option("#f-audit_action", "")
    await page.wait_for_selector(rules_row)
    await page.fill("#f-audit_staff", "bob")
    await page.press("#f-audit_staff", "Enter")
    await page.wait_for_selector(f"{rules_row}", state="detached")
    assert await page.locator("[data-role=audit] tr[data-code]").count() == 1
    await page.fill("#f-audit_staff", "")
    await page.press("#f-audit_staff", "Enter")
    await page.wait_for_selector(rules_row)
    since = (clock.now() - timedelta(days=1)).astimezone(clock.SHANGHAI)
    await page.fill("#f-audit_since", since.strftime("%Y-%m-%dT%H:%M"))
    await page.click("form[data-form=audit-filters] [data-action=search]")
    await page.wait_for_selector(ship_row, state="detached")
    assert await page.locator("[data-role=audit] tr[data-code]").count() == 2

    # the rules page links to the rules' history: the log filtered to that action
    await console.go("rules")
    await page.click("[data-action=history]")
    await page.wait_for_selector(rules_row)
    assert await page.input_value("#f-audit_action") == "points.rules.update"
    assert await page.locator("[data-role=audit] tr[data-code]").count() == 1

    await page.click("button[data-lang=en]")
    english = "[data-role=action-name]:text-is('Points rules changed')"
    await page.wait_for_selector(f"{rules_row} {english}")
    assert [await c.text_content() for c in await page.locator(level).all()] == [
        "Level 1 · Member price (%)", "98", "90",
    ]  # fmt: skip
