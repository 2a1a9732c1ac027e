"""Shortcuts for tests that need money in a wallet (the orders tests use these too)."""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from mall.wallet import service as wallet_service
from mall.wallet.models import TopUpPlan
from tests.wallet.fake_pay import FakePay


async def member_id(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    r = await client.get("/api/v1/me", headers=headers)
    assert r.status_code == 200, r.text
    return int(r.json()["id"])


async def fund(member: int, principal_fen: int, bonus_fen: int = 0) -> None:
    """Put money in a wallet directly (a system adjustment; no WeChat Pay involved)."""
    await wallet_service.adjust(
        member,
        principal_fen=principal_fen,
        bonus_fen=bonus_fen,
        reason="test funding",
        staff=None,
        idempotency_key=None,
    )


async def plan(amount_fen: int, bonus_fen: int = 0, **extra: Any) -> TopUpPlan:
    return await TopUpPlan.create(
        name=f"Top up {amount_fen // 100} get {bonus_fen // 100}",
        amount_fen=amount_fen,
        bonus_fen=bonus_fen,
        **extra,
    )


async def start_top_up(
    client: httpx.AsyncClient, headers: dict[str, str], plan_id: int, key: str | None = None
) -> dict[str, Any]:
    extra = {"Idempotency-Key": key} if key else {}
    r = await client.post(
        "/api/v1/wallet/top-ups", json={"plan_id": plan_id}, headers={**headers, **extra}
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def paid_top_up(
    client: httpx.AsyncClient,
    fake_pay: FakePay,
    headers: dict[str, str],
    amount_fen: int,
    bonus_fen: int = 0,
) -> dict[str, Any]:
    """A top-up made the real way: plan, POST /wallet/top-ups, the member pays, WeChat
    notifies. Returns the top-up as created."""
    p = await plan(amount_fen, bonus_fen)
    started = await start_top_up(client, headers, p.id)
    resource = fake_pay.pay(started["top_up"]["out_trade_no"])
    r = await fake_pay.deliver(client, resource)
    assert r.status_code == 204, r.text
    return started


async def assert_ledger_clean() -> None:
    problems = await wallet_service.check_ledger()
    assert problems == [], problems


async def staff_token(role: str = "admin") -> dict[str, str]:
    """Headers of a fresh staff account, without the password hashing of a real login
    (the login itself is tested in tests/members)."""
    from mall.members import service as members_service
    from mall.members.models import Staff

    staff = await Staff.create(
        username=f"{role}_{secrets.token_hex(3)}", password_hash="!", role=role
    )
    tokens = await members_service.staff_tokens(staff)
    return {"Authorization": f"Bearer {tokens.token}"}
