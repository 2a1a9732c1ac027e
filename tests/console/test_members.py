"""Members in the console: found by nickname, phone start and id (phones masked, shown in
full to an admin who asks, audited); a member's page with points granted by ops and the
wallet adjusted by an admin, both in the ledgers and the audit log."""

from __future__ import annotations

from pathlib import Path

from mall.audit.models import AuditLog
from mall.members.models import Member
from mall.points import service as points_service
from mall.wallet import service as wallet_service
from tests.console.conftest import Console


async def _members() -> tuple[Member, Member]:
    amy = await Member.create(openid="o_amy_openid", nickname="小艾", phone="13812345678")
    bob = await Member.create(openid="o_bob_openid", nickname="Bob", phone="13998765432")
    return amy, bob


async def test_search_and_grant_points(console: Console, artifacts: Path) -> None:
    amy, bob = await _members()
    page = console.page
    await console.sign_in("ops", "members")
    await page.wait_for_selector(f"[data-role=members] tr[data-id='{bob.id}']")
    for q, found in (("小艾", amy), ("1399876", bob), (str(amy.id), amy), ("o_bob_openid", bob)):
        await page.fill("#f-member_q", q)
        await page.click("[data-action=search]")
        await page.wait_for_function(
            "(id) => { const rows = document.querySelectorAll('[data-role=members] tr[data-id]');"
            " return rows.length === 1 && rows[0].dataset.id === String(id) }",
            arg=found.id,
        )
    # ops see masked phones and are not offered the reveal
    assert await page.text_content("[data-role=members] [data-role=phone]") == "139****5432"
    assert await page.locator("[data-action=reveal]").count() == 0

    await console.go(f"members/{amy.id}")
    await page.wait_for_selector("form[data-form=grant-points]")
    assert await page.text_content("[data-role=phone]") == "138****5678"
    # ops may not adjust the wallet
    assert await page.locator("form[data-form=adjust-wallet]").count() == 0
    await page.fill("#f-grant_points", "300")
    await page.fill("#f-grant_reason", "客诉补偿")
    await page.click("[data-action=grant]")
    await page.wait_for_selector("[data-role=points-ledger] tr[data-entry]")
    assert await points_service.get_balance(amy.id) == 300
    assert "客诉补偿" in (await page.text_content("[data-role=points-ledger]") or "")
    assert await AuditLog.filter(target__contains=str(amy.id)).count() >= 1
    await page.screenshot(path=str(artifacts / "console-member.png"), full_page=True)


async def test_admin_adjusts_wallet_and_reveals_phone(console: Console) -> None:
    amy, _bob = await _members()
    page = console.page
    await console.sign_in("admin", f"members/{amy.id}")
    await page.wait_for_selector("form[data-form=adjust-wallet]")
    await page.fill("#f-adjust_principal", "12.50")
    await page.fill("#f-adjust_bonus", "2")
    await page.fill("#f-adjust_reason", "线下充值补录")
    await page.click("[data-action=adjust]")
    await page.wait_for_selector("[data-role=wallet-ledger] tr[data-entry]")
    balance = await wallet_service.get_balance(amy.id)
    assert (balance.principal_fen, balance.bonus_fen) == (1250, 200)
    await page.wait_for_selector("[data-role=principal]:text-is('¥12.50')")
    assert await AuditLog.filter(action="wallet.adjust").count() == 1

    await page.click("[data-action=reveal]")
    await page.wait_for_selector("[data-role=phone]:text-is('13812345678')")
    assert await AuditLog.filter(action="phone.reveal").count() == 1

    await page.click("button[data-lang=en]")
    await page.wait_for_selector("h2:text-is('Stored-value ledger')")
