"""Share codes, first binding wins, no self-binding, the binding window, and the
commission ledger: granted once on completion, reversed on refund."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import timedelta
from typing import Any

import httpx
import pytest

from mall.errors import MallError
from mall.kit import clock
from mall.members.models import Member
from mall.referral import service
from mall.referral.models import CommissionEntry, ReferralBinding
from mall.referral.schemas import PromoterLevel, ReferralRules
from tests.conftest import MemberLogin, StaffLogin
from tests.factories import make_member


async def _code(member: Member) -> str:
    return (await service.promoter_for_member(member.id)).code


async def _koc(member: Member) -> None:
    promoter = await service.promoter_for_member(member.id)
    await service.update_promoter(promoter.id, level="koc", active=None, actor=None)


async def test_first_binding_wins_and_self_binding_is_refused() -> None:
    alice, bob, carol, dave = [await make_member(n) for n in ("alice", "bob", "carol", "dave")]
    code_a, code_c = await _code(alice), await _code(carol)
    assert await _code(alice) == code_a  # stable

    binding = await service.bind(bob, code_a.lower())  # codes are read case-insensitively
    assert binding.promoter_id == (await service.promoter_for_member(alice.id)).id
    with pytest.raises(MallError) as raised:
        await service.bind(bob, code_c)
    assert raised.value.code == "REFERRAL_ALREADY_BOUND"
    assert (await service.bind(bob, code_a)).id == binding.id  # the same code again: same
    with pytest.raises(MallError) as raised:
        await service.bind(alice, code_a)
    assert raised.value.code == "REFERRAL_SELF"
    with pytest.raises(MallError) as raised:
        await service.bind(dave, "NOSUCH99")
    assert raised.value.code == "REFERRAL_CODE_UNKNOWN"

    # two binds at once to different promoters: exactly one wins
    results = await asyncio.gather(
        service.bind(dave, code_a), service.bind(dave, code_c), return_exceptions=True
    )
    won = [r for r in results if isinstance(r, ReferralBinding)]
    lost = [r for r in results if isinstance(r, MallError)]
    assert len(won) == 1 and [e.code for e in lost] == ["REFERRAL_ALREADY_BOUND"]
    assert await ReferralBinding.filter(customer_id=dave.id).count() == 1


@pytest.mark.clock
async def test_binding_only_within_the_window_after_joining() -> None:
    alice, late = await make_member("alice"), await make_member("late")
    code = await _code(alice)
    clock.advance(timedelta(days=7, hours=1))
    with pytest.raises(MallError) as raised:
        await service.bind(late, code)
    assert raised.value.code == "REFERRAL_WINDOW_CLOSED"
    assert raised.value.params == {"days": 7}
    # an inactive promoter's code binds nobody
    fresh = await make_member("fresh")
    promoter = await service.promoter_for_member(alice.id)
    await service.update_promoter(promoter.id, level=None, active=False, actor=None)
    with pytest.raises(MallError) as raised:
        await service.bind(fresh, code)
    assert raised.value.code == "REFERRAL_PROMOTER_INACTIVE"


async def test_commission_granted_once_and_reversed_on_refund() -> None:
    koc, buyer, stranger = (
        await make_member("koc"),
        await make_member("buyer"),
        await make_member("x"),
    )
    await _koc(koc)  # 5%
    await service.bind(buyer, await _code(koc))

    first = await service.on_order_completed(1, buyer.id, 10_000)
    assert first is not None and (first.amount_fen, first.rate_bp) == (500, 500)
    again = await service.on_order_completed(1, buyer.id, 10_000)
    assert again is not None and again.id == first.id
    assert await CommissionEntry.filter(order_id=1).count() == 1
    # not bound: nothing
    assert await service.on_order_completed(2, stranger.id, 10_000) is None

    r1 = await service.on_order_refunded(1, buyer.id, 4_000, refund_ref=11)
    assert r1 is not None and (r1.amount_fen, r1.base_fen) == (-200, -4_000)
    assert (await service.on_order_refunded(1, buyer.id, 4_000, refund_ref=11)).id == r1.id  # type: ignore[union-attr]
    r2 = await service.on_order_refunded(1, buyer.id, 6_000, refund_ref=12)
    assert r2 is not None and r2.amount_fen == -300
    # more refunds than were paid never push the order below zero
    r3 = await service.on_order_refunded(1, buyer.id, 5_000, refund_ref=13)
    assert r3 is not None and r3.amount_fen == 0
    entries = await CommissionEntry.filter(order_id=1)
    assert sum(e.amount_fen for e in entries) == 0
    assert len(entries) == 4  # append-only: the grant is still there

    # rounding: 5% of 9.99 yuan is 49 fen (down); two partial refunds take exactly 49 back
    assert (await service.on_order_completed(3, buyer.id, 999)).amount_fen == 49  # type: ignore[union-attr]
    a = await service.on_order_refunded(3, buyer.id, 500, refund_ref="a")
    b = await service.on_order_refunded(3, buyer.id, 499, refund_ref="b")
    assert a is not None and b is not None
    assert 49 + a.amount_fen + b.amount_fen == 0
    # a refund of an order that earned nothing writes nothing
    assert await service.on_order_refunded(2, stranger.id, 100, refund_ref=1) is None

    # concurrent refunds of one order never reverse more than was granted
    await service.on_order_completed(4, buyer.id, 20_000)  # 1000
    await asyncio.gather(
        *(service.on_order_refunded(4, buyer.id, 8_000, refund_ref=i) for i in range(4))
    )
    assert sum(e.amount_fen for e in await CommissionEntry.filter(order_id=4)) == 0

    # the rate is the one in force at completion; later rule changes leave entries alone
    rules = ReferralRules(
        levels=[
            PromoterLevel(code="member", name="会员", rate_bp=0),
            PromoterLevel(code="koc", name="KOC", rate_bp=1000),
            PromoterLevel(code="salesperson", name="导购", rate_bp=300),
        ]
    )
    await service.save_rules(rules, staff=None, base_version=0)
    assert (await service.on_order_completed(5, buyer.id, 10_000)).amount_fen == 1000  # type: ignore[union-attr]
    assert (await CommissionEntry.get(id=first.id)).amount_fen == 500

    from mall.referral.tasks import check_referral

    report = await check_referral()
    assert report.ok, report.lines
    # a reversal without its grant is reported
    await CommissionEntry.filter(order_id=4, event="completed").delete()
    assert not (await check_referral()).ok


async def test_plain_member_codes_bind_but_earn_nothing_by_default() -> None:
    sharer, friend = await make_member("sharer"), await make_member("friend")
    await service.bind(friend, await _code(sharer))
    assert await service.on_order_completed(1, friend.id, 10_000) is None  # member level: 0%
    assert (await service.figures([(await service.promoter_for_member(sharer.id)).id])) == {
        (await service.promoter_for_member(sharer.id)).id: (1, 0)
    }


async def test_shopper_routes(client: httpx.AsyncClient, member_headers: MemberLogin) -> None:
    alice = await member_headers("alice")
    me = (await client.get("/api/v1/referral/me", headers=alice)).json()
    assert len(me["code"]) == 8 and me["customers"] == 0 and me["bound_to"] is None

    # a new member opening the mini-program from alice's share
    r = await client.post(
        "/api/v1/referral/wechat-login", json={"code": "dev:bob", "share_code": me["code"]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["is_new"] is True and r.json()["referral"] == {"bound": True, "error": None}
    bob = {"Authorization": f"Bearer {r.json()['token']}"}
    assert (await client.get("/api/v1/referral/me", headers=bob)).json()["bound_to"] == me["code"]
    assert (await client.get("/api/v1/referral/me", headers=alice)).json()["customers"] == 1

    # a bad share code never fails the login
    r = await client.post(
        "/api/v1/referral/wechat-login", json={"code": "dev:carol", "share_code": "ZZZZZZZZ"}
    )
    assert r.status_code == 200
    assert r.json()["referral"] == {"bound": False, "error": "REFERRAL_CODE_UNKNOWN"}

    r = await client.post("/api/v1/referral/bind", json={"code": me["code"]}, headers=alice)
    assert r.status_code == 409 and r.json()["error"]["code"] == "REFERRAL_SELF"
    assert r.json()["error"]["message"] == "不能绑定自己的分享码"
    r = await client.post(
        "/api/v1/referral/bind",
        json={"code": me["code"]},
        headers={**alice, "Accept-Language": "en"},
    )
    assert r.json()["error"]["message"] == "You cannot bind to your own share code"
    r = await client.get("/api/v1/referral/commissions", headers=alice)
    assert r.status_code == 200 and r.json()["items"] == []


async def test_ops_routes(
    client: httpx.AsyncClient, staff_headers: StaffLogin, member_headers: MemberLogin
) -> None:
    ops = await staff_headers("ops")
    admin = await staff_headers("admin", username="boss")
    koc, buyer = await make_member("koc"), await make_member("buyer")

    r = await client.post(
        "/api/admin/v1/referral/promoters", json={"member_id": koc.id, "level": "koc"}, headers=ops
    )
    assert r.status_code == 201, r.text
    promoter = r.json()
    assert (promoter["kind"], promoter["rate_bp"], promoter["name"]) == ("member", 500, "koc")
    await service.bind(buyer, promoter["code"])
    await service.on_order_completed(7, buyer.id, 20_000)
    await service.on_order_refunded(7, buyer.id, 20_000, refund_ref=1)
    await service.on_order_completed(8, buyer.id, 10_000)

    r = await client.get("/api/admin/v1/referral/promoters", headers=ops)
    row = r.json()["items"][0]
    assert (row["customers"], row["commission_fen"]) == (1, 500)
    r = await client.get(f"/api/admin/v1/referral/promoters/{row['id']}/customers", headers=ops)
    assert r.json()["items"][0]["customer_id"] == buyer.id
    assert r.json()["items"][0]["commission_fen"] == 500
    r = await client.get(f"/api/admin/v1/referral/bindings/{buyer.id}", headers=ops)
    assert r.json()["promoter_id"] == row["id"]
    r = await client.get(f"/api/admin/v1/referral/commissions?promoter_id={row['id']}", headers=ops)
    assert [e["amount_fen"] for e in r.json()["items"]] == [500, -1000, 1000]

    r = await client.get("/api/admin/v1/referral/commissions.csv", headers=ops)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text.lstrip("\ufeff"))))
    assert [(x["order_id"], x["event"], x["amount_fen"]) for x in rows] == [
        ("8", "completed", "500"),
        ("7", "refunded", "-1000"),
        ("7", "completed", "1000"),
    ]
    assert rows[0]["promoter_code"] == promoter["code"]

    # staff promoters and the rules are for admins
    from mall.members.models import Staff

    boss = await Staff.get(username="boss")
    r = await client.post(
        "/api/admin/v1/referral/promoters", json={"staff_id": boss.id}, headers=ops
    )
    assert r.status_code == 403
    r = await client.post(
        "/api/admin/v1/referral/promoters", json={"staff_id": boss.id}, headers=admin
    )
    assert r.status_code == 201 and r.json()["level"] == "salesperson"
    assert r.json()["rate_bp"] == 300
    mine = await client.get("/api/admin/v1/referral/me", headers=admin)
    assert mine.json()["code"] == r.json()["code"]

    rules = (await client.get("/api/admin/v1/referral/rules", headers=ops)).json()
    assert rules["version"] == 0
    without_koc = {
        "rules": {
            **rules["rules"],
            "levels": [lv for lv in rules["rules"]["levels"] if lv["code"] != "koc"],
        },
        "base_version": 0,
    }
    assert (
        await client.put("/api/admin/v1/referral/rules", json=without_koc, headers=ops)
    ).status_code == 403
    r = await client.put("/api/admin/v1/referral/rules", json=without_koc, headers=admin)
    assert r.status_code == 409 and r.json()["error"]["code"] == "REFERRAL_LEVEL_IN_USE"
    raised: dict[str, Any] = {"rules": {**rules["rules"]}, "base_version": 0}
    raised["rules"]["levels"] = [
        {**lv, "rate_bp": 800} if lv["code"] == "koc" else lv for lv in rules["rules"]["levels"]
    ]
    r = await client.put("/api/admin/v1/referral/rules", json=raised, headers=admin)
    assert r.status_code == 200 and r.json()["version"] == 1
    r = await client.put("/api/admin/v1/referral/rules", json=raised, headers=admin)
    assert r.status_code == 409 and r.json()["error"]["code"] == "REFERRAL_RULES_CONFLICT"
