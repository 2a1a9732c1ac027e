"""The points rules as a form (admin): a level's price, points as cash and the member day
edited in the page change what GET /api/v1/points tells a member; a field the API refuses
shows the API's message next to it (Chinese and English); the obvious mistakes are caught
in the page before anything is sent; the JSON view still saves."""

from __future__ import annotations

from pathlib import Path

import httpx

from mall.audit.models import AuditLog
from mall.points.models import PointsRulesVersion
from tests.conftest import MemberLogin
from tests.console.conftest import Console

FIELD = "form[data-form=rules] [data-path='{}']"
ERROR = "form[data-form=rules] [data-error-for='{}']"


async def test_rules_form_changes_what_members_see(
    console: Console, client: httpx.AsyncClient, member_headers: MemberLogin, artifacts: Path
) -> None:
    member = await member_headers("rules_form")
    before = (await client.get("/api/v1/points", headers=member)).json()
    assert (before["level"], before["discount_percent"], before["points_per_yuan"]) == (0, 100, 100)
    page = console.page
    await console.sign_in("admin", "rules")
    await page.wait_for_selector(FIELD.format("levels.0.discount_percent"))
    # the form shows the rules in force
    assert await page.input_value(FIELD.format("levels.1.discount_percent")) == "98"
    assert await page.input_value(FIELD.format("earn.fen_per_point")) == "10.00"
    assert await page.locator("[data-role=sign-in-days] input").count() == 7

    await page.fill(FIELD.format("levels.0.discount_percent"), "97")
    await page.fill(FIELD.format("pricing.points_per_yuan"), "50")
    await page.fill(FIELD.format("pricing.member_day_of_month"), "8")
    await page.click("[data-action=add-day]")  # day 8 starts as day 7's reward
    await page.fill(FIELD.format("sign_in.daily_points.7"), "40")
    await page.click("form[data-form=rules] [data-action=save]")
    await page.wait_for_selector("[data-role=rules-version]:has-text('版本 1')")

    after = (await client.get("/api/v1/points", headers=member)).json()
    assert (after["discount_percent"], after["points_per_yuan"]) == (97, 50)
    assert after["member_day"]["day_of_month"] == 8
    [saved] = await PointsRulesVersion.all()
    assert saved.document["sign_in"]["daily_points"] == [5, 5, 5, 5, 5, 5, 25, 40]
    assert saved.document["levels"][1]["discount_percent"] == 98  # untouched fields kept
    [entry] = await AuditLog.filter(action="points.rules.update")
    assert entry.detail["after"]["levels"][0]["discount_percent"] == 97

    # the API refuses a price of 0%: its message, next to the field
    await page.fill(FIELD.format("levels.1.discount_percent"), "0")
    await page.click("form[data-form=rules] [data-action=save]")
    await page.wait_for_selector(ERROR.format("levels.1.discount_percent") + ":not(:empty)")
    message = await page.text_content(ERROR.format("levels.1.discount_percent"))
    assert message == "应大于或等于 1"
    assert await page.get_attribute(FIELD.format("levels.1.discount_percent"), "aria-invalid")
    assert await PointsRulesVersion.all().count() == 1
    await page.screenshot(path=str(artifacts / "console-rules.png"), full_page=True)

    # in English the page is drawn again and the API answers in English
    await page.click("button[data-lang=en]")
    await page.wait_for_selector("h2:text-is('Levels and member prices')")
    await page.fill(FIELD.format("pricing.points_max_share_percent"), "101")
    await page.click("form[data-form=rules] [data-action=save]")
    error = ERROR.format("pricing.points_max_share_percent")
    await page.wait_for_selector(error + ":not(:empty)")
    assert await page.text_content(error) == "Input should be less than or equal to 100"
    assert await PointsRulesVersion.all().count() == 1


async def test_obvious_mistakes_are_caught_in_the_page(console: Console) -> None:
    page = console.page
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "PUT" else None)
    await console.sign_in("admin", "rules")
    await page.wait_for_selector(FIELD.format("levels.2.threshold"))
    await page.fill(FIELD.format("levels.2.threshold"), "100")  # below level 1's 500
    await page.fill(FIELD.format("sign_in.daily_points.0"), "1.5")
    await page.fill(FIELD.format("levels.1.name"), "")
    await page.click("form[data-form=rules] [data-action=save]")
    await page.wait_for_selector(ERROR.format("levels.2.threshold") + ":not(:empty)")
    assert await page.text_content(ERROR.format("levels.2.threshold")) == "门槛须高于上一级（500）"
    assert await page.text_content(ERROR.format("sign_in.daily_points.0")) == "请输入整数"
    assert await page.text_content(ERROR.format("levels.1.name")) == "必填"
    assert "3 处" in (await page.text_content("[data-error-for=rules]") or "")
    assert sent == []
    assert await PointsRulesVersion.all().count() == 0
    # typing in a field clears its message
    await page.fill(FIELD.format("levels.1.name"), "银卡")
    assert await page.text_content(ERROR.format("levels.1.name")) == ""


async def test_advanced_json_still_saves(console: Console) -> None:
    page = console.page
    await console.sign_in("admin", "rules")
    await page.wait_for_selector("[data-role=advanced]")
    await page.click("[data-role=advanced] summary")
    text = await page.input_value("[data-role=advanced] textarea")
    edited = text.replace('"repeat": true', '"repeat": false')
    await page.fill("[data-role=advanced] textarea", edited)
    await page.click("[data-action=save-json]")
    await page.wait_for_selector("[data-role=rules-version]:has-text('版本 1')")
    [saved] = await PointsRulesVersion.all()
    assert saved.document["sign_in"]["repeat"] is False
    assert not await page.is_checked(FIELD.format("sign_in.repeat"))
