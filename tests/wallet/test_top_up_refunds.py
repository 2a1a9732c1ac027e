"""Top-up refunds (ops): principal only, only what is unspent, bonus forfeited in
proportion, through WeChat Pay; a refund WeChat refuses or closes puts the money back."""

from __future__ import annotations

from datetime import timedelta

import httpx

from mall.config import Settings
from mall.kit import clock
from mall.wallet import service, tasks
from mall.wallet.models import TopUp, TopUpRefund
from tests.conftest import MemberLogin
from tests.wallet.fake_pay import FakePay
from tests.wallet.helpers import assert_ledger_clean, member_id, paid_top_up, staff_token


async def _refund(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    top_up_id: int,
    principal_fen: int | None = None,
    key: str | None = None,
) -> httpx.Response:
    body: dict[str, object] = {"reason": "member moved away"}
    if principal_fen is not None:
        body["principal_fen"] = principal_fen
    headers = {**admin, "Idempotency-Key": key} if key else admin
    return await client.post(
        f"/api/admin/v1/wallet/top-ups/{top_up_id}/refund", json=body, headers=headers
    )


async def test_refund_unspent_principal_and_forfeit_bonus_in_proportion(
    client: httpx.AsyncClient,
    fake_pay: FakePay,
    member_headers: MemberLogin,
) -> None:
    alice = await member_headers("alice")
    member = await member_id(client, alice)
    top_up = (await paid_top_up(client, fake_pay, alice, 100000, 10000))["top_up"]
    await service.pay(member, 30000, idempotency_key="order-1", reference="O1")  # principal first
    admin = await staff_token()
    seen = (await client.get(f"/api/admin/v1/wallet/top-ups/{top_up['id']}", headers=admin)).json()
    assert seen["refundable_fen"] == 70000

    too_much = await _refund(client, admin, top_up["id"], 70001)
    assert too_much.status_code == 409
    assert too_much.json()["error"]["code"] == "WALLET_TOPUP_REFUND_TOO_LARGE"
    r = await _refund(client, admin, top_up["id"], 35000, key="refund-1")
    assert r.status_code == 201, r.text
    first = r.json()
    assert (first["principal_fen"], first["bonus_fen"], first["cash_fen"]) == (35000, 3500, 35000)
    assert first["status"] == "processing"
    replay = await _refund(client, admin, top_up["id"], 35000, key="refund-1")
    assert replay.json() == first
    assert fake_pay.calls["refund"] == 1
    sent = fake_pay.refunds[first["out_refund_no"]]
    assert (sent.refund, sent.total, sent.out_trade_no) == (35000, 100000, top_up["out_trade_no"])

    # the rest: everything refundable now; the cumulative bonus forfeit is exactly 7000
    rest = (await _refund(client, admin, top_up["id"])).json()
    assert (rest["principal_fen"], rest["bonus_fen"], rest["cash_fen"]) == (35000, 3500, 35000)
    balance = await service.get_balance(member)
    assert (balance.principal_fen, balance.bonus_fen) == (0, 3000)  # bonus of spent part stays
    again = await _refund(client, admin, top_up["id"])
    assert again.json()["error"]["code"] == "WALLET_TOPUP_REFUND_TOO_LARGE"

    # WeChat settles them; duplicates change nothing
    for no in (first["out_refund_no"], rest["out_refund_no"]):
        headers, body = fake_pay.refund_notification(no)
        for _ in range(2):
            r = await client.post("/api/v1/wechat/pay-notify", headers=headers, content=body)
            assert r.status_code == 204, r.text
    assert await TopUpRefund.filter(status="succeeded").count() == 2
    owed = (await client.get("/api/admin/v1/wallet/liability", headers=admin)).json()
    assert (owed["principal_fen"], owed["bonus_fen"], owed["refunds_in_flight_fen"]) == (0, 3000, 0)
    await assert_ledger_clean()


async def test_bonus_already_spent_is_kept_back_from_the_cash(
    client: httpx.AsyncClient,
    fake_pay: FakePay,
    member_headers: MemberLogin,
    settings: Settings,
) -> None:
    alice = await member_headers("alice")
    member = await member_id(client, alice)
    top_up = (await paid_top_up(client, fake_pay, alice, 100000, 10000))["top_up"]
    settings.wallet_spend_order = "bonus_first"
    try:
        await service.pay(member, 10000, idempotency_key="order-1", reference="O1")
    finally:
        settings.wallet_spend_order = "principal_first"
    r = await _refund(client, await staff_token(), top_up["id"])
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["principal_fen"], body["bonus_fen"], body["clawback_fen"], body["cash_fen"]) == (
        100000,
        0,
        10000,
        90000,
    )
    assert fake_pay.refunds[body["out_refund_no"]].refund == 90000
    assert (await service.get_balance(member)).total_fen == 0
    await assert_ledger_clean()


async def test_a_refused_or_closed_refund_puts_the_money_back(
    client: httpx.AsyncClient,
    fake_pay: FakePay,
    member_headers: MemberLogin,
) -> None:
    alice = await member_headers("alice")
    member = await member_id(client, alice)
    top_up = (await paid_top_up(client, fake_pay, alice, 50000, 5000))["top_up"]
    admin = await staff_token()
    fake_pay.fail("refund", 403, "NOT_ENOUGH")
    r = await _refund(client, admin, top_up["id"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "PAY_NOT_ENOUGH"
    assert (await service.get_balance(member)).total_fen == 55000
    assert (await TopUp.get(id=top_up["id"])).refunded_principal_fen == 0
    assert (await TopUpRefund.get()).status == "failed"

    r = await _refund(client, admin, top_up["id"])
    assert r.status_code == 201 and r.json()["status"] == "processing"
    assert (await service.get_balance(member)).total_fen == 0
    headers, body = fake_pay.refund_notification(r.json()["out_refund_no"], "CLOSED")
    assert (
        await client.post("/api/v1/wechat/pay-notify", headers=headers, content=body)
    ).status_code == 204
    balance = await service.get_balance(member)
    assert (balance.principal_fen, balance.bonus_fen) == (50000, 5000)
    kinds = [e.kind for e in (await service.entries_page(member, None, 10))[0]]
    assert kinds == [
        "topup_refund_return",
        "topup_refund",
        "topup_refund_return",
        "topup_refund",
        "topup",
    ]
    await assert_ledger_clean()


async def test_a_refund_wechat_did_not_take_is_sent_again_by_the_job(
    client: httpx.AsyncClient,
    fake_pay: FakePay,
    member_headers: MemberLogin,
) -> None:
    alice = await member_headers("alice")
    top_up = (await paid_top_up(client, fake_pay, alice, 20000))["top_up"]
    fake_pay.fail("refund", 500, "SYSTEM_ERROR")
    r = await _refund(client, await staff_token(), top_up["id"])
    assert r.status_code == 201 and r.json()["status"] == "pending"
    assert r.json()["error_code"] == "PAY_BUSY"
    clock.advance(timedelta(minutes=3))
    await tasks.settle_payments()
    row = await TopUpRefund.get()
    assert row.status == "processing" and fake_pay.refunds[row.out_refund_no].refund == 20000
    fake_pay.settle_refund(row.out_refund_no)  # no notification: the job queries it
    clock.advance(timedelta(minutes=3))
    await tasks.settle_payments()
    assert (await TopUpRefund.get()).status == "succeeded"
    await assert_ledger_clean()


async def test_only_paid_top_ups_are_refundable(
    client: httpx.AsyncClient,
    fake_pay: FakePay,
    member_headers: MemberLogin,
) -> None:
    from tests.wallet.helpers import plan, start_top_up

    alice = await member_headers("alice")
    p = await plan(10000)
    started = await start_top_up(client, alice, p.id)
    r = await _refund(client, await staff_token(), started["top_up"]["id"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "WALLET_TOPUP_NOT_REFUNDABLE"
