"""Logging in, role-aware menus and the language switch, in a real browser."""

from __future__ import annotations

from datetime import timedelta

import httpx

from mall.kit import clock
from tests.console.conftest import Console

OPS_MENU = [
    "dashboard", "orders", "members", "wallet", "pay-reconciliation", "products", "points-mall",
    "seckill", "fair-sales",
    "blind-boxes", "coupons", "import", "segments", "referral",
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
    # (a selector, not a string predicate: the console's CSP forbids eval)
    await console.page.wait_for_selector(".form-error:not(:empty)")
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


async def test_an_expired_token_is_renewed_and_logout_ends_the_session(
    console: Console, client: httpx.AsyncClient
) -> None:
    await console.login("ops")
    storage = "(k) => sessionStorage.getItem(k)"
    first = await console.page.evaluate(storage, "mall.console.refresh")
    assert first
    clock.advance(timedelta(minutes=16))  # the access token has expired
    # the page's requests find it expired, renew it once together and go on
    await console.go("products")
    await console.page.wait_for_function(
        "(first) => sessionStorage.getItem('mall.console.refresh') !== first", arg=first
    )
    await console.go("dashboard")
    await console.page.wait_for_selector("nav.sidebar")
    assert await console.page.locator("form.login-card").count() == 0
    token = await console.page.evaluate(storage, "mall.console.token")
    r = await client.get("/api/admin/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200  # renewed once: a second use would have ended the session
    # logging out ends the session on the server, not only in the tab
    await console.page.click("button[data-action=logout]")
    await console.page.wait_for_selector("form.login-card")
    r = await client.get("/api/admin/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "SESSION_REVOKED"
    assert await console.page.evaluate(storage, "mall.console.refresh") is None
