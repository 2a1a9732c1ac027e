"""Helpers for points mall tests: items through the ops API, members with points."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from mall.members import service as members_service
from mall.members.models import Staff
from mall.points import service as points_service
from mall.pointsmall import persist
from mall.pointsmall import service as pm_service
from mall.pointsmall.models import PointsMallRedemption

MakeItem = Callable[..., Awaitable[dict[str, Any]]]
NewMember = Callable[..., Awaitable[tuple[int, dict[str, str]]]]


@pytest.fixture
async def ops() -> dict[str, str]:
    """An ops login without the password round trip (argon2 is slow on purpose)."""
    staff = await Staff.create(
        username=f"ops_{secrets.token_hex(3)}", password_hash="-", role="ops"
    )
    tokens = await members_service.staff_tokens(staff)
    return {"Authorization": f"Bearer {tokens.token}"}


@pytest.fixture(autouse=True)
def _fresh_terms() -> None:
    """Each test's items are new: no item terms cached by an earlier test."""
    pm_service.forget_terms()


@pytest.fixture
def make_item(client: httpx.AsyncClient, ops: dict[str, str]) -> MakeItem:
    async def make(**fields: Any) -> dict[str, Any]:
        body = {
            "name": "Mug",
            "kind": "voucher",
            "points_price": 100,
            "total_stock": 10,
            "on_shelf": True,
            **fields,
        }
        r = await client.post("/api/admin/v1/points-mall/items", json=body, headers=ops)
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        return data

    return make


@pytest.fixture
def new_member() -> NewMember:
    """`await new_member(points=1000)` -> (member id, Authorization headers)."""

    async def make(points: int = 0, name: str | None = None) -> tuple[int, dict[str, str]]:
        member, _new = await members_service.login_with_wechat(
            f"dev:{name or 'm' + secrets.token_hex(4)}"
        )
        if points:
            await points_service.earn(
                member.id, points, idempotency_key=f"test-grant:{member.id}", reason="test"
            )
        token = (await members_service.tokens_for(member)).token
        return member.id, {"Authorization": f"Bearer {token}"}

    return make


async def add_address(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    r = await client.post(
        "/api/v1/addresses",
        json={"name": "张三", "phone": "13800138000", "region": "上海市 徐汇区", "detail": "1号"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    address_id: int = r.json()["id"]
    return address_id


async def redis_stock(item_id: int) -> int | None:
    return (await pm_service.redis_stock([item_id])).get(item_id)


async def db_stock(item_id: int) -> int:
    return (await pm_service.get_item(item_id)).stock


def key() -> dict[str, str]:
    return {"Idempotency-Key": secrets.token_hex(8)}


async def drain() -> int:
    """Run the redemption consumer until every item's stream is empty."""
    return await persist.drain()


async def settled(
    client: httpx.AsyncClient, answer: httpx.Response, headers: dict[str, str]
) -> httpx.Response:
    """What a redeem answer came to once the consumer ran: GET of the written redemption
    (200), or of the reservation when the database released it (200, `released`); an
    error answer as it came."""
    if answer.status_code != 202:
        return answer
    assert answer.json()["status"] == "pending", answer.text
    await drain()
    rid = answer.json()["reservation_id"]
    r = await client.get(f"/api/v1/points-mall/reservations/{rid}", headers=headers)
    assert r.status_code == 200, r.text
    if r.json()["status"] == "released":
        return r
    redemption_id = r.json()["redemption_id"]
    return await client.get(f"/api/v1/points-mall/redemptions/{redemption_id}", headers=headers)


async def redeem(
    client: httpx.AsyncClient,
    item_id: int,
    headers: dict[str, str],
    idem: dict[str, str] | None = None,
    **body: Any,
) -> httpx.Response:
    """POST a redemption (a fresh Idempotency-Key unless `idem` is given) and settle it."""
    answer = await client.post(
        f"/api/v1/points-mall/items/{item_id}/redeem",
        json=body,
        headers={**headers, **(idem if idem is not None else key())},
    )
    return await settled(client, answer, headers)


async def redeem_as(
    member_id: int, item_id: int, quantity: int = 1, key: str | None = None
) -> PointsMallRedemption:
    """The service without HTTP: decide, drain, and the written (or released) row."""
    answer = await pm_service.redeem(member_id, item_id, quantity, None, key)
    await drain()
    return await PointsMallRedemption.get(reservation_id=answer.reservation_id)


def written(r: httpx.Response) -> bool:
    """A settled redeem that was written (not refused, not released)."""
    return r.status_code == 200 and r.json()["status"] not in ("released", "pending")
