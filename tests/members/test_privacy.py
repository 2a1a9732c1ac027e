"""Privacy (PIPL): a member deletes the account (personal data gone, ledgers kept, tokens
dead) or exports their data; ops see phones masked, admins may reveal one (audited)."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from tortoise import Tortoise

from mall.addresses.models import Address
from mall.audit.models import AuditLog
from mall.config import get_settings
from mall.kit import clock, masking
from mall.members import privacy
from mall.members import service as members_service
from mall.members.models import Member
from mall.members.privacy import privacy_modules
from mall.orders.models import Order
from mall.points import service as points_service
from mall.points.models import ExternalOrder, PointsEntry
from mall.pointsmall import persist
from mall.pointsmall.models import PointsMallRedemption
from mall.redis import get_redis
from mall.referral import service as referral_service
from mall.referral.models import Promoter
from mall.segments import service as segments_service
from mall.segments.schemas import Rules
from mall.touch import service as touch_service
from mall.touch.models import SubscribeGrant
from mall.wallet import service as wallet_service
from mall.wallet.models import Wallet, WalletEntry
from tests.conftest import StaffLogin
from tests.orders.helpers import NOT_MEMBER_DAY, assert_books_clean, make_shop

PHONE = "13800138000"
MASKED = "138****8000"


async def _login(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    r = await client.post("/api/v1/auth/wechat-login", json={"code": f"dev:{name}"})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _bearer(login: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {login['token']}"}


async def _address(client: httpx.AsyncClient, headers: dict[str, str], phone: str = PHONE) -> int:
    r = await client.post(
        "/api/v1/addresses",
        json={"name": "张三", "phone": phone, "region": "上海市 徐汇区", "detail": "漕溪北路 1 号"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    address_id: int = r.json()["id"]
    return address_id


async def _profile(client: httpx.AsyncClient, headers: dict[str, str], nickname: str) -> None:
    r = await client.patch(
        "/api/v1/me",
        json={
            "nickname": nickname,
            "avatar_url": "https://img.example/a.png",
            "birthday": "1990-05-06",
        },
        headers=headers,
    )
    assert r.status_code == 200, r.text


# --- deletion ---------------------------------------------------------------------------


async def test_deletion_anonymises_keeps_ledgers_and_ends_every_token(
    client: httpx.AsyncClient,
) -> None:
    login = await _login(client, "alice")
    headers, member_id = _bearer(login), login["member"]["id"]
    await _profile(client, headers, "Alice")
    await Member.filter(id=member_id).update(phone=PHONE, unionid="u-alice", tags=["vip"])
    await _address(client, headers)
    await points_service.earn(member_id, 300, idempotency_key="t:earn", reason="test")
    await wallet_service.adjust(
        member_id, principal_fen=0, bonus_fen=500, reason="gift", staff=None, idempotency_key="t"
    )
    await touch_service.record_grants(member_id, ["tmpl-1"])
    await ExternalOrder.create(
        platform="tmall", order_no="TM1", phone=PHONE, paid_fen=100, status="completed",
        member_id=member_id, imported_at=clock.now(), updated_at=clock.now(),
    )  # fmt: skip
    await referral_service.promoter_for_member(member_id)

    check = await client.get("/api/v1/me/deletion", headers=headers)
    assert check.status_code == 200, check.text
    assert check.json()["can_delete"] is True and check.json()["blockers"] == []
    assert check.json()["forfeits"] == {"points": 300, "wallet_bonus_fen": 500, "usable_coupons": 0}

    unconfirmed = await client.post("/api/v1/me/deletion", json={}, headers=headers)
    assert unconfirmed.status_code == 422
    assert unconfirmed.json()["error"]["code"] == "VALIDATION_ERROR"
    assert (await Member.get(id=member_id)).deleted_at is None

    r = await client.post(
        "/api/v1/me/deletion", json={"confirm": True, "reason": "too many ads"}, headers=headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["member_id"] == member_id and r.json()["already_deleted"] is False

    # every token of the account is dead: access, refresh, on every kind of route
    for path in ("/api/v1/me", "/api/v1/addresses", "/api/v1/points", "/api/v1/me/export"):
        dead = await client.get(path, headers=headers)
        assert dead.status_code == 401, path
        assert dead.json()["error"]["code"] == "TOKEN_INVALID"
    refresh = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": login["refresh_token"]}
    )
    assert refresh.status_code == 401

    # personal data gone
    row = await Member.get(id=member_id)
    assert row.deleted_at is not None
    assert (row.openid, row.unionid, row.nickname, row.avatar_url) == (
        f"deleted:{member_id}",
        None,
        "",
        "",
    )
    assert (row.phone, row.birthday, row.tags) == (None, None, [])
    assert await Address.filter(member_id=member_id).count() == 0
    assert await SubscribeGrant.filter(member_id=member_id).count() == 0
    assert (await ExternalOrder.get(order_no="TM1")).phone == MASKED
    assert (await Promoter.get(member_id=member_id)).active is False

    # ledgers kept; the balances left are forfeited by one entry each
    entries = await PointsEntry.filter(member_id=member_id).order_by("id")
    assert [(e.kind, e.delta) for e in entries] == [("earn", 300), ("adjust", -300)]
    assert entries[-1].reason == "account deleted" and row.points_balance == 0
    wallet = await Wallet.get(member_id=member_id)
    assert (wallet.principal_fen, wallet.bonus_fen) == (0, 0)
    assert [
        e.bonus_delta for e in await WalletEntry.filter(member_id=member_id).order_by("id")
    ] == [
        500,
        -500,
    ]
    assert await wallet_service.check_ledger() == []
    await assert_books_clean()

    # recorded: by the member, with what was erased
    (audit,) = await AuditLog.filter(action="member.delete")
    assert audit.target == f"member:{member_id}" and audit.staff_id is None
    assert audit.detail["by"] == "member" and audit.detail["reason"] == "too many ads"
    assert audit.detail["points_forfeited"] == 300
    assert audit.detail["wallet_bonus_forfeited_fen"] == 500
    assert audit.detail["addresses_deleted"] == 1

    # no longer profiled or targeted
    assert member_id not in await segments_service.evaluate(Rules())
    assert all(m != member_id for m, _t in await segments_service.desired_auto_tags())

    # the same WeChat account comes back as a brand-new member
    again = await _login(client, "alice")
    assert again["is_new"] is True and again["member"]["id"] != member_id
    assert again["member"]["points_balance"] == 0 and again["member"]["phone"] is None


async def test_deletion_waits_for_stored_value_refund_and_unfinished_orders(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    shop = await make_shop()
    login = await _login(client, "bob")
    headers, member_id = _bearer(login), login["member"]["id"]
    await _profile(client, headers, "Bob")
    address_id = await _address(client, headers)
    await wallet_service.adjust(
        member_id, principal_fen=20_000, bonus_fen=0, reason="t", staff=None, idempotency_key="t"
    )
    r = await client.post(
        "/api/v1/orders",
        json={
            "items": [{"sku_id": shop.soap.id, "quantity": 1}],
            "use_wallet": True,
            "delivery": "express",
            "address_id": address_id,
        },
        headers={**headers, "Idempotency-Key": "o1"},
    )
    assert r.status_code == 201, r.text
    order_id = r.json()["id"]
    assert r.json()["status"] == "paid"
    principal = (await wallet_service.get_balance(member_id)).principal_fen
    assert principal > 0

    check = (await client.get("/api/v1/me/deletion", headers=headers)).json()
    assert check["can_delete"] is False
    assert [b["code"] for b in check["blockers"]] == [
        "WALLET_BALANCE_NOT_REFUNDED",
        "UNFINISHED_ORDERS",
    ]
    refused = await client.post(
        "/api/v1/me/deletion", json={"confirm": True}, headers={**headers, "Accept-Language": "en"}
    )
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "WALLET_BALANCE_NOT_REFUNDED"
    assert error["details"]["principal_fen"] == principal
    assert f"{principal // 100}.{principal % 100:02d} yuan must be refunded" in error["message"]
    zh = await client.post("/api/v1/me/deletion", json={"confirm": True}, headers=headers)
    assert "需先退款" in zh.json()["error"]["message"]
    # refused means nothing changed
    assert (await Member.get(id=member_id)).deleted_at is None
    assert (await Member.get(id=member_id)).nickname == "Bob"
    assert await Address.filter(member_id=member_id).count() == 1
    assert await AuditLog.filter(action="member.delete").count() == 0

    # customer service refunds the stored value: now only the order in flight blocks
    await wallet_service.adjust(
        member_id, principal_fen=-principal, bonus_fen=0, reason="refund", staff=None,
        idempotency_key="refund",
    )  # fmt: skip
    refused = await client.post("/api/v1/me/deletion", json={"confirm": True}, headers=headers)
    assert refused.status_code == 409
    assert refused.json()["error"] | {"message": ""} == {
        "code": "UNFINISHED_ORDERS",
        "message": "",
        "details": {"count": 1},
    }

    admin = await staff_headers()
    ship = await client.post(
        f"/api/admin/v1/orders/{order_id}/ship",
        json={"shipping_company": "顺丰速运", "tracking_no": "SF1"},
        headers=admin,
    )
    assert ship.status_code == 200, ship.text
    done = await client.post(f"/api/admin/v1/orders/{order_id}/complete", headers=admin)
    assert done.status_code == 200, done.text
    r = await client.post("/api/v1/me/deletion", json={"confirm": True}, headers=headers)
    assert r.status_code == 200, r.text

    # the order stays for the accounts; its address snapshot lost the person
    order = await Order.get(id=order_id)
    assert order.status == "completed" and order.member_id == member_id
    assert order.address == {"name": "", "phone": "", "region": "上海市 徐汇区", "detail": ""}
    await assert_books_clean()
    assert await wallet_service.check_ledger() == []


async def test_customer_service_deletion_is_admin_only_audited_and_idempotent(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    login = await _login(client, "carol")
    member_id = login["member"]["id"]
    await _profile(client, _bearer(login), "Carol")
    ops, admin = await staff_headers(role="ops"), await staff_headers()
    body = {"reason": "asked by phone, ticket 42"}
    url = f"/api/admin/v1/members/{member_id}/deletion"
    r = await client.post(url, json=body, headers=ops)
    assert r.status_code == 403
    assert (await Member.get(id=member_id)).deleted_at is None
    assert (await client.post(url, json={}, headers=admin)).status_code == 422

    first = await client.post(url, json=body, headers=admin)
    assert first.status_code == 200, first.text
    assert first.json()["already_deleted"] is False
    assert first.json()["erased"]["points_forfeited"] == 0
    again = await client.post(url, json=body, headers=admin)
    assert again.status_code == 200
    assert again.json()["already_deleted"] is True
    assert again.json()["deleted_at"] == first.json()["deleted_at"]
    (audit,) = await AuditLog.filter(action="member.delete")
    assert audit.staff_id is not None and audit.detail["by"] == "staff"
    assert audit.detail["reason"] == body["reason"]

    view = await client.get(f"/api/admin/v1/members/{member_id}", headers=admin)
    assert view.status_code == 200
    assert view.json()["nickname"] == "" and view.json()["deleted_at"] is not None
    missing = await client.post("/api/admin/v1/members/99999999/deletion", json=body, headers=admin)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "MEMBER_NOT_FOUND"
    huge = await client.get(f"/api/admin/v1/members/{10**20}", headers=admin)
    assert huge.status_code == 422 and huge.json()["error"]["code"] == "VALIDATION_ERROR"
    r = await client.get("/api/v1/me", headers=_bearer(login))
    assert r.status_code == 401


async def test_two_deletions_at_once_delete_once(client: httpx.AsyncClient) -> None:
    login = await _login(client, "gina")
    member_id = login["member"]["id"]
    await points_service.earn(member_id, 50, idempotency_key="t:earn", reason="test")
    results = await asyncio.gather(
        privacy.delete_account(member_id), privacy.delete_account(member_id, reason="again")
    )
    assert sorted(r.already_deleted for r in results) == [False, True]
    assert await AuditLog.filter(action="member.delete").count() == 1
    assert await PointsEntry.filter(member_id=member_id, kind="adjust").count() == 1
    assert (await Member.get(id=member_id)).points_balance == 0


# --- export -----------------------------------------------------------------------------


async def test_export_holds_the_members_data_and_nobody_elses(client: httpx.AsyncClient) -> None:
    dave = await _login(client, "dave")
    erin = await _login(client, "erin")
    dave_id, erin_id = dave["member"]["id"], erin["member"]["id"]
    await _profile(client, _bearer(dave), "Dave")
    await _profile(client, _bearer(erin), "Erin")
    await Member.filter(id=dave_id).update(phone="13900001111")
    await Member.filter(id=erin_id).update(phone="13700002222")
    await _address(client, _bearer(dave), phone="13900001111")
    await _address(client, _bearer(erin), phone="13700002222")
    for member_id, points in ((dave_id, 120), (erin_id, 77)):
        await points_service.earn(member_id, points, idempotency_key=f"e{member_id}", reason="t")
    await wallet_service.adjust(
        dave_id, principal_fen=0, bonus_fen=300, reason="gift", staff=None, idempotency_key="d"
    )

    r = await client.get("/api/v1/me/export", headers=_bearer(dave))
    assert r.status_code == 200, r.text
    assert "attachment" in r.headers["content-disposition"]
    assert r.headers["cache-control"] == "no-store"
    data = r.json()
    assert data["member_id"] == dave_id and data["truncated"] == []
    sections = data["sections"]
    (profile,) = sections["profile"]
    assert (profile["id"], profile["nickname"], profile["phone"]) == (
        dave_id,
        "Dave",
        "13900001111",
    )
    assert profile["birthday"] == "1990-05-06"
    assert [a["phone"] for a in sections["addresses"]] == ["13900001111"]
    assert [e["delta"] for e in sections["points_entries"]] == [120]
    assert [e["bonus_delta"] for e in sections["wallet_entries"]] == [300]
    for name in ("coupons", "orders", "order_lines", "referral_binding", "points_lots"):
        assert name in sections
    assert len(sections["points_lots"]) == 1
    # nothing of erin's, and no internal keys
    text = r.text
    assert "Erin" not in text and "13700002222" not in text and "idempotency_key" not in text
    every_member_id = {
        row[field]
        for rows in sections.values()
        for row in rows
        for field in ("member_id", "customer_id")
        if field in row
    }
    assert every_member_id <= {dave_id}

    for _ in range(4):
        assert (await client.get("/api/v1/me/export", headers=_bearer(dave))).status_code == 200
    limited = await client.get("/api/v1/me/export", headers=_bearer(dave))
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "RATE_LIMITED"
    assert (await client.get("/api/v1/me/export", headers=_bearer(erin))).status_code == 200


async def test_every_member_linked_model_is_exported_or_says_why_not() -> None:
    """A new model holding member data must join the export (a `Section` in its domain's
    privacy.py) or say why not (`NOT_EXPORTED`)."""
    covered: set[str] = set()
    for module in privacy_modules():
        covered |= {s.model.__name__ for s in getattr(module, "SECTIONS", [])}
        covered |= set(getattr(module, "NOT_EXPORTED", {}))
    linked = set()
    for model in Tortoise.apps["models"].values():
        meta = model._meta
        to_member = any(
            getattr(meta.fields_map[f], "related_model", None) is Member for f in meta.fk_fields
        ) or any(
            getattr(meta.fields_map[f], "related_model", None) is Member for f in meta.o2o_fields
        )
        if to_member or {"member_id", "customer_id"} & set(meta.fields_db_projection):
            linked.add(model.__name__)
    linked.add("Member")
    assert {"Order", "PointsEntry", "Address", "Coupon", "WalletEntry", "TouchLog"} <= linked
    assert linked - covered == set()


# --- phones in the console ---------------------------------------------------------------


async def test_ops_see_masked_phones_admins_reveal_with_an_audit(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    clock.set_now(NOT_MEMBER_DAY)
    shop = await make_shop()
    login = await _login(client, "frank")
    headers, member_id = _bearer(login), login["member"]["id"]
    await Member.filter(id=member_id).update(phone=PHONE, birthday=date(1990, 1, 2))
    await points_service.earn(member_id, 100, idempotency_key="t:earn", reason="test")
    address_id = await _address(client, headers)
    await wallet_service.adjust(
        member_id, principal_fen=20_000, bonus_fen=0, reason="t", staff=None, idempotency_key="t"
    )
    order = await client.post(
        "/api/v1/orders",
        json={
            "items": [{"sku_id": shop.soap.id, "quantity": 1}],
            "use_wallet": True,
            "address_id": address_id,
        },
        headers={**headers, "Idempotency-Key": "o1"},
    )
    assert order.status_code == 201, order.text
    order_id = order.json()["id"]
    assert order.json()["address"]["phone"] == PHONE  # the member sees their own number
    ops, admin = await staff_headers(role="ops"), await staff_headers()
    item = await client.post(
        "/api/admin/v1/points-mall/items",
        json={
            "name": "Mug",
            "kind": "gift",
            "points_price": 10,
            "total_stock": 5,
            "on_shelf": True,
        },
        headers=admin,
    )
    assert item.status_code == 201, item.text
    redeemed = await client.post(
        f"/api/v1/points-mall/items/{item.json()['id']}/redeem",
        json={"quantity": 1, "address_id": address_id},
        headers={**headers, "Idempotency-Key": "r1"},
    )
    assert redeemed.status_code == 202, redeemed.text
    await persist.drain()
    redemption = await PointsMallRedemption.get(member_id=member_id)

    member_url = f"/api/admin/v1/members/{member_id}"
    order_url = f"/api/admin/v1/orders/{order_id}"
    redemption_url = f"/api/admin/v1/points-mall/redemptions/{redemption.id}"
    csv_url = "/api/admin/v1/points-mall/redemptions/export"
    for staff in (ops, admin):
        assert (await client.get(member_url, headers=staff)).json()["phone"] == MASKED
        assert (await client.get(order_url, headers=staff)).json()["address"]["phone"] == MASKED
        listed = (await client.get("/api/admin/v1/orders", headers=staff)).json()["items"]
        assert PHONE not in str(listed)
        got = (await client.get(redemption_url, headers=staff)).json()
        assert got["address"]["phone"] == MASKED
        page = await client.get("/api/admin/v1/points-mall/redemptions", headers=staff)
        assert page.json()["items"][0]["address"]["phone"] == MASKED
        rows = list(csv.DictReader(io.StringIO((await client.get(csv_url, headers=staff)).text)))
        assert [row["phone"] for row in rows] == [MASKED]
    assert await AuditLog.filter(action="phone.reveal").count() == 0

    # ops may never reveal
    for url in (member_url, order_url, redemption_url, csv_url):
        r = await client.get(url, params={"reveal": "phone"}, headers=ops)
        assert r.status_code == 403, url
        assert r.json()["error"]["code"] == "PHONE_REVEAL_FORBIDDEN"
    assert (
        await client.get(member_url, params={"reveal": "all"}, headers=admin)
    ).status_code == 422

    # an admin may, and each reveal is audited
    r = await client.get(member_url, params={"reveal": "phone"}, headers=admin)
    assert r.json()["phone"] == PHONE
    r = await client.get(order_url, params={"reveal": "phone"}, headers=admin)
    assert r.json()["address"]["phone"] == PHONE
    r = await client.get(redemption_url, params={"reveal": "phone"}, headers=admin)
    assert r.json()["address"]["phone"] == PHONE
    r = await client.get(csv_url, params={"reveal": "phone"}, headers=admin)
    assert [row["phone"] for row in csv.DictReader(io.StringIO(r.text))] == [PHONE]
    audits = await AuditLog.filter(action="phone.reveal").order_by("id")
    assert [a.target for a in audits] == [member_url, order_url, redemption_url, csv_url]
    assert all(a.staff_id is not None and a.detail["query"] == "reveal=phone" for a in audits)

    # one reveal does not stick: the next answer is masked again; members are unaffected
    assert (await client.get(member_url, headers=admin)).json()["phone"] == MASKED
    assert masking.masking() is False
    assert (await client.get("/api/v1/me", headers=headers)).json()["phone"] == PHONE
    stored = await Order.get(id=order_id)
    assert stored.address is not None and stored.address["phone"] == PHONE


@pytest.mark.nodb
def test_mask_phone_shapes() -> None:
    assert masking.mask_phone(PHONE) == MASKED
    assert masking.mask_phone("+8613800138000") == "+86****8000"
    assert masking.mask_phone("12345") == "***45"
    assert masking.mask_phone("123") == "***"
    assert masking.mask_text("call 13800138000 or +86 13912345678, order 2013800138000") == (
        "call 138****8000 or +86 139****5678, order 2013800138000"
    )


@pytest.mark.nodb
def test_logs_never_carry_a_full_phone(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("mall.test.privacy")
    with caplog.at_level(logging.INFO, logger="mall.test.privacy"):
        log.info("bound phone %s for member %d", PHONE, 7)
        try:
            raise ValueError(f"no order for phone {PHONE}")
        except ValueError:
            log.exception("binding failed")
    assert PHONE not in caplog.text
    assert "bound phone 138****8000 for member 7" in caplog.text
    assert "no order for phone 138****8000" in caplog.text


@pytest.mark.clock
async def test_a_deleted_accounts_token_is_refused_on_the_routes_that_load_no_member(
    client: httpx.AsyncClient,
) -> None:
    login, other = await _login(client, "dora"), await _login(client, "eve")
    headers, member_id = _bearer(login), login["member"]["id"]
    # the hot routes (their fast paths) and a route that needs the member's id only:
    # an unknown item, series or reservation answers 404 to a live token
    routes = [
        ("POST", "/api/v1/seckill/items/999999/attempt", None),
        ("POST", "/api/v1/points-mall/items/999999/redeem", {}),
        ("POST", "/api/v1/blind-boxes/999999/draw", None),
        ("GET", "/api/v1/seckill/reservations/r-unknown", None),
    ]

    async def answers(h: dict[str, str]) -> list[tuple[int, str]]:
        found = []
        for method, path, body in routes:
            r = await client.request(method, path, json=body, headers=h)
            found.append((r.status_code, r.json()["error"]["code"]))
        return found

    live = await answers(headers)
    assert [status for status, _code in live] == [404, 404, 404, 404], live
    r = await client.post("/api/v1/me/deletion", json={"confirm": True}, headers=headers)
    assert r.status_code == 200, r.text
    assert await answers(headers) == [(401, "TOKEN_INVALID")] * len(routes)
    # another process reads the deletion from Redis (here: this one's copy forgotten)
    members_service.forget_deleted()
    assert await answers(headers) == [(401, "TOKEN_INVALID")] * len(routes)
    # the other member is not touched
    assert [status for status, _c in await answers(_bearer(other))] == [404, 404, 404, 404]
    # kept for as long as an access token lives, then dropped by the next deletion
    ttl = get_settings().access_token_ttl_seconds
    redis = get_redis()
    assert await redis.zscore(members_service.DELETED_KEY, str(member_id)) is not None
    clock.advance(timedelta(seconds=ttl + 1))
    await members_service.mark_deleted(other["member"]["id"])
    assert await redis.zscore(members_service.DELETED_KEY, str(member_id)) is None
    assert await redis.zscore(members_service.DELETED_KEY, str(other["member"]["id"])) is not None
