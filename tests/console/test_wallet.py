"""Stored value in the console: the liability (principal and bonus apart), a top-up plan
created and switched off, in Chinese and English."""

from __future__ import annotations

from pathlib import Path

from mall.members.models import Member
from mall.wallet import service as wallet_service
from mall.wallet.models import TopUpPlan
from tests.console.conftest import Console


async def test_liability_and_plans(console: Console, artifacts: Path) -> None:
    member = await Member.create(openid="o_wallet_page")
    await wallet_service.adjust(
        member.id, principal_fen=30_000, bonus_fen=1_500, reason="seed", staff=None,
        idempotency_key="seed",
    )  # fmt: skip
    page = console.page
    await console.sign_in("ops", "wallet")
    await page.wait_for_selector("[data-role=liability] [data-role=principal]")
    assert await page.text_content("[data-role=liability] [data-role=principal]") == "¥300.00"
    assert await page.text_content("[data-role=liability] [data-role=bonus]") == "¥15.00"
    assert await page.text_content("[data-role=liability] [data-role=wallets]") == "1"

    form = page.locator("form[data-form=plan]")
    await form.locator("#f-plan_name").fill("充1000送100")
    await form.locator("#f-plan_amount").fill("1000")
    await form.locator("#f-plan_bonus").fill("100")
    await form.locator("[data-action=save-plan]").click()
    await page.wait_for_selector("[data-role=plans] td:text-is('充1000送100')")
    [plan] = await TopUpPlan.all()
    assert (plan.amount_fen, plan.bonus_fen, plan.per_member_limit, plan.active) == (
        100_000, 10_000, None, True,
    )  # fmt: skip
    await page.click(f"tr[data-plan='{plan.id}'] [data-action=toggle]")
    await page.wait_for_selector(f"tr[data-plan='{plan.id}'] [data-action=toggle]:text-is('启用')")
    await plan.refresh_from_db()
    assert plan.active is False
    await page.screenshot(path=str(artifacts / "console-wallet.png"), full_page=True)

    await page.click("button[data-lang=en]")
    await page.wait_for_selector("h2:text-is('Top-up plans')")
    await page.wait_for_selector("[data-role=top-ups] td.empty")
