"""The wallet service as orders use it: pay, refund in proportion, concurrency, and the
ledger check."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from tortoise.transactions import in_transaction

from mall.config import Settings
from mall.errors import MallError
from mall.members.models import Member
from mall.wallet import service, tasks
from mall.wallet.models import Wallet, WalletEntry
from tests.wallet.helpers import assert_ledger_clean, fund, staff_token


async def _member(name: str = "alice") -> int:
    member = await Member.create(openid=f"dev_{name}", nickname=name)
    return int(member.id)


async def test_fifty_concurrent_payments_never_go_below_zero() -> None:
    member = await _member()
    await fund(member, 1500, 500)  # enough for exactly 20 payments of 100

    async def attempt(i: int) -> str:
        try:
            await service.pay(member, 100, idempotency_key=f"order-{i}", reference=f"O{i}")
        except MallError as exc:
            return exc.code
        return "paid"

    results = await asyncio.gather(*(attempt(i) for i in range(50)))
    assert results.count("paid") == 20
    assert results.count("WALLET_INSUFFICIENT") == 30
    balance = await service.get_balance(member)
    assert (balance.principal_fen, balance.bonus_fen) == (0, 0)
    assert await WalletEntry.filter(kind="pay").count() == 20
    await assert_ledger_clean()


async def test_spending_order_is_configurable(settings: Settings) -> None:
    member = await _member()
    await fund(member, 1000, 300)
    first = await service.pay(member, 1100, idempotency_key="a", reference="O1")
    assert (first.principal_fen, first.bonus_fen) == (1000, 100)  # principal first (default)
    settings.wallet_spend_order = "bonus_first"
    try:
        await fund(member, 1000, 0)
        second = await service.pay(member, 500, idempotency_key="b", reference="O2")
        assert (second.principal_fen, second.bonus_fen) == (300, 200)
    finally:
        settings.wallet_spend_order = "principal_first"
    with pytest.raises(MallError) as caught:
        await service.pay(member, 701, idempotency_key="c", reference="O3")
    assert caught.value.code == "WALLET_INSUFFICIENT"
    assert caught.value.params == {"balance": "¥7.00", "amount": "¥7.01"}
    await assert_ledger_clean()


async def test_pay_is_idempotent_and_checks_its_input() -> None:
    member = await _member()
    await fund(member, 1000)
    one = await service.pay(member, 300, idempotency_key="k", reference="O1")
    two = await service.pay(member, 300, idempotency_key="k", reference="O1")
    assert one == two
    assert (await service.get_balance(member)).total_fen == 700
    with pytest.raises(MallError) as caught:
        await service.pay(member, 200, idempotency_key="k", reference="O1")
    assert caught.value.code == "IDEMPOTENCY_KEY_REUSED"
    for bad in (0, -5):
        with pytest.raises(MallError) as caught:
            await service.pay(member, bad, idempotency_key="z", reference="O")
        assert caught.value.code == "WALLET_AMOUNT_INVALID"
    with pytest.raises(MallError) as caught:
        await service.pay(999999, 1, idempotency_key="nobody", reference="O")
    assert caught.value.code == "MEMBER_NOT_FOUND"
    assert await service.paid_from_wallet("k") == one
    assert await service.paid_from_wallet("nope") is None


async def test_pay_joins_the_callers_transaction() -> None:
    member = await _member()
    await fund(member, 1000)
    with pytest.raises(RuntimeError):
        async with in_transaction():
            await service.pay(member, 400, idempotency_key="rolled", reference="O1")
            raise RuntimeError("the order failed after paying")
    assert (await service.get_balance(member)).total_fen == 1000
    assert not await WalletEntry.filter(kind="pay").exists()
    await assert_ledger_clean()


async def test_refunds_return_in_the_payments_proportion() -> None:
    member = await _member()
    await fund(member, 700, 1000)
    paid = await service.pay(member, 1000, idempotency_key="order-1", reference="O1")
    assert (paid.principal_fen, paid.bonus_fen) == (700, 300)
    parts = [
        await service.refund("order-1", amount, idempotency_key=f"r{i}", reason="returned")
        for i, amount in enumerate((333, 333, 334))
    ]
    assert [(p.principal_fen, p.bonus_fen) for p in parts] == [(234, 99), (233, 100), (233, 101)]
    assert sum(p.principal_fen for p in parts) == 700
    assert sum(p.bonus_fen for p in parts) == 300
    again = await service.refund("order-1", 333, idempotency_key="r0", reason="returned")
    assert again == parts[0]
    with pytest.raises(MallError) as caught:
        await service.refund("order-1", 1, idempotency_key="r9", reason="too much")
    assert caught.value.code == "WALLET_REFUND_TOO_LARGE"
    with pytest.raises(MallError) as caught:
        await service.refund("order-404", 1, idempotency_key="r10", reason="?")
    assert caught.value.code == "WALLET_PAYMENT_NOT_FOUND"
    balance = await service.get_balance(member)
    assert (balance.principal_fen, balance.bonus_fen) == (700, 1000)
    entries = await WalletEntry.filter(kind="refund").values_list("reference", flat=True)
    assert set(entries) == {"O1"}
    await assert_ledger_clean()


async def test_the_check_finds_a_mismatch_in_principal_or_bonus() -> None:
    member = await _member()
    await fund(member, 1000, 100)
    assert (await tasks.check_wallet()).ok
    # a balance moved without its entry (what a read-modify-write bug would do)
    await Wallet.filter(member_id=member).update(bonus_fen=150)
    report = await tasks.check_wallet()
    assert not report.ok
    assert any("bonus entries 100 != balance 150" in line for line in report.lines)
    await Wallet.filter(member_id=member).update(bonus_fen=100, principal_fen=999)
    report = await tasks.check_wallet()
    assert any("principal entries 1000 != balance 999" in line for line in report.lines)


async def test_admin_adjust_liability_and_entries(client: httpx.AsyncClient) -> None:
    admin = await staff_token()
    ops = await staff_token("ops")
    member = await _member()
    url = f"/api/admin/v1/members/{member}/wallet/adjustments"
    body = {"principal_fen": 5000, "bonus_fen": 800, "reason": "compensation for a late parcel"}
    r = await client.post(url, json=body, headers=ops)
    assert r.status_code == 403  # money adjustments are admin-only
    keyed = {**admin, "Idempotency-Key": "adj-1"}
    first = await client.post(url, json=body, headers=keyed)
    second = await client.post(url, json=body, headers=keyed)
    assert first.status_code == 201, first.text
    assert first.json() == second.json()
    assert first.json()["balance"] == {"principal_fen": 5000, "bonus_fen": 800, "total_fen": 5800}
    r = await client.post(url, json={"principal_fen": -6000, "reason": "too much"}, headers=admin)
    assert r.status_code == 409 and r.json()["error"]["code"] == "WALLET_ADJUST_BELOW_ZERO"
    r = await client.post(url, json={"reason": "nothing"}, headers=admin)
    assert r.status_code == 422 and r.json()["error"]["code"] == "WALLET_ADJUST_INVALID"
    from mall.audit.models import AuditLog

    audits = await AuditLog.filter(action="wallet.adjust")
    assert len(audits) == 1 and audits[0].detail["reason"] == "compensation for a late parcel"

    owed = (await client.get("/api/admin/v1/wallet/liability", headers=ops)).json()
    assert (owed["principal_fen"], owed["bonus_fen"], owed["total_fen"]) == (5000, 800, 5800)
    assert owed["wallets_with_balance"] == 1
    entries = (await client.get(f"/api/admin/v1/members/{member}/wallet", headers=ops)).json()
    assert [e["kind"] for e in entries["entries"]] == ["adjust"]
    assert entries["entries"][0]["reason"] == "compensation for a late parcel"
    await assert_ledger_clean()


async def test_admin_plan_crud(client: httpx.AsyncClient) -> None:
    ops = await staff_token("ops")
    r = await client.post(
        "/api/admin/v1/wallet/plans",
        json={"name": "充500送30", "amount_fen": 50000, "bonus_fen": 3000, "per_member_limit": 2},
        headers=ops,
    )
    assert r.status_code == 201, r.text
    plan_id = r.json()["id"]
    r = await client.patch(
        f"/api/admin/v1/wallet/plans/{plan_id}",
        json={"bonus_fen": 5000, "per_member_limit": None, "active": False},
        headers=ops,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["bonus_fen"], r.json()["per_member_limit"], r.json()["active"]) == (
        5000,
        None,
        False,
    )
    r = await client.post(
        "/api/admin/v1/wallet/plans", json={"name": "bad", "amount_fen": 0}, headers=ops
    )
    assert r.status_code == 422
    listed = (await client.get("/api/admin/v1/wallet/plans", headers=ops)).json()
    assert [p["id"] for p in listed] == [plan_id]
    assert (
        await client.delete(f"/api/admin/v1/wallet/plans/{plan_id}", headers=ops)
    ).status_code == 204
    r = await client.get(f"/api/admin/v1/wallet/plans/{plan_id}", headers=ops)
    assert r.status_code == 404 and r.json()["error"]["code"] == "WALLET_PLAN_NOT_FOUND"
