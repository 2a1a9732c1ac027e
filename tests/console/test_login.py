"""Logging in, role-aware menus and the language switch, in a real browser."""

from __future__ import annotations

from tests.console.conftest import Console

OPS_MENU = [
    "dashboard", "products", "points-mall", "seckill", "blind-boxes", "coupons", "import",
    "segments", "referral",
]  # fmt: skip
ADMIN_ONLY = ["staff", "rules", "audit"]


async def menu(console: Console) -> list[str]:
    return await console.page.eval_on_selector_all(
        "nav.sidebar a[data-menu]", "links => links.map(a => a.dataset.menu)"
    )


async def test_wrong_password_is_shown_and_nothing_is_stored(console: Console) -> None:
    from mall.members import service as members_service

    await members_service.create_staff("ops_wrong", "correct-horse-battery", "ops")
    await console.open()
    await console.page.fill("#f-username", "ops_wrong")
    await console.page.fill("#f-password", "not-the-password")
    await console.page.click("form.login-card button[type=submit]")
    error = console.page.locator(".form-error")
    await error.wait_for()
    await console.page.wait_for_function(
        "document.querySelector('.form-error').textContent.length > 0"
    )
    assert await console.page.evaluate("sessionStorage.getItem('mall.console.token')") is None
    assert await console.page.locator("nav.sidebar").count() == 0


async def test_ops_sees_no_staff_or_rules(console: Console) -> None:
    name = await console.login("ops")
    assert await menu(console) == OPS_MENU
    assert await console.page.text_content("[data-role=staff-name]") == name
    assert await console.page.text_content("[data-role=staff-role]") == "运营"
    # the token lives in sessionStorage only
    assert await console.page.evaluate("sessionStorage.getItem('mall.console.token')")
    assert await console.page.evaluate("localStorage.getItem('mall.console.token')") is None
    # typing the address of an admin page does not open it either
    await console.go("staff")
    await console.page.wait_for_selector(".content .notice")
    assert "无权" in (await console.page.text_content(".content .notice") or "")


async def test_admin_sees_staff_and_rules_and_can_create_staff(console: Console) -> None:
    await console.sign_in("admin")
    assert await menu(console) == OPS_MENU + ADMIN_ONLY
    await console.page.click("a[data-menu=staff]")
    await console.page.fill("#f-new_username", "new_ops_1")
    await console.page.fill("#f-new_password", "a-long-password")
    await console.page.click("form[data-form=staff] button[type=submit]")
    await console.page.wait_for_selector("td:text-is('new_ops_1')")
    from mall.members.models import Staff

    created = await Staff.get(username="new_ops_1")
    assert created.role == "ops"


async def test_language_switch_is_remembered(console: Console) -> None:
    await console.sign_in("ops")
    assert await console.page.text_content("a[data-menu=dashboard]") == "数据看板"
    assert await console.page.get_attribute("html", "lang") == "zh-CN"
    await console.page.click("button[data-lang=en]")
    await console.page.wait_for_selector("a[data-menu=dashboard]:text-is('Dashboard')")
    assert await console.page.evaluate("localStorage.getItem('mall.console.lang')") == "en"
    await console.page.reload()
    await console.page.wait_for_selector("a[data-menu=dashboard]:text-is('Dashboard')")
    assert await console.page.get_attribute("html", "lang") == "en"
    # logging out forgets the token, not the language
    await console.page.click("button[data-action=logout]")
    await console.page.wait_for_selector("form.login-card")
    assert await console.page.text_content("form.login-card button[type=submit]") == "Log in"
    assert await console.page.evaluate("sessionStorage.getItem('mall.console.token')") is None
