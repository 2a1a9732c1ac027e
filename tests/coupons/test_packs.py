"""Gift packs: the new-member pack once per member, ops issuing packs (audited)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from mall.audit.models import AuditLog
from mall.coupons import service
from mall.coupons.models import Coupon, GiftPack, GiftPackIssue
from mall.coupons.tasks import check_coupons
from mall.kit.bulk import insert_rows
from mall.members.models import Member
from tests.conftest import MemberLogin, StaffLogin
from tests.factories import make_members, make_template


async def _new_member_pack() -> tuple[GiftPack, int, int]:
    cash = await make_template(
        name="无门槛5元", kind="cash", face_value_fen=500, threshold_fen=0, claimable=False,
        total_quantity=None,
    )  # fmt: skip
    gift = await make_template(
        name="满59送小样", kind="gift", face_value_fen=0, threshold_fen=5900, gift_sku_id=77,
        claimable=False, total_quantity=None,
    )  # fmt: skip
    pack = await service.create_pack(
        {
            "name": "新人礼包",
            "items": [{"template_id": cash.id, "quantity": 1}, {"template_id": gift.id}],
            "for_new_members": True,
        }
    )
    return pack, cash.id, gift.id


async def test_new_member_pack_once_even_with_concurrent_first_logins(
    client: httpx.AsyncClient,
) -> None:
    _pack, cash_id, gift_id = await _new_member_pack()
    replies = await asyncio.gather(
        *(client.post("/api/v1/auth/wechat-login", json={"code": "dev:newbie"}) for _ in range(10))
    )
    assert all(r.status_code == 200 for r in replies)
    assert sum(r.json()["is_new"] for r in replies) == 1
    member = await Member.get(openid="dev_newbie")
    # the hook raced by hand too: still one pack
    await asyncio.gather(*(service.issue_new_member_packs(member) for _ in range(5)))
    coupons = await Coupon.filter(member_id=member.id).order_by("template_id")
    assert [c.template_id for c in coupons] == [cash_id, gift_id]
    assert {c.source for c in coupons} == {"new_member"}
    assert await GiftPackIssue.filter(member_id=member.id).count() == 1
    assert (await check_coupons()).ok


async def test_sold_out_template_is_skipped_and_noted() -> None:
    scarce = await make_template(total_quantity=1, claimable=False)
    plenty = await make_template(total_quantity=None, claimable=False)
    pack = await service.create_pack(
        {"name": "p", "items": [{"template_id": scarce.id}, {"template_id": plenty.id}]}
    )
    a, b = await make_members(2)
    first = await service.issue_pack(pack, a.id, "k:a", source="pack")
    second = await service.issue_pack(pack, b.id, "k:b", source="pack")
    assert first is not None and len(first.coupon_ids) == 2
    assert second is not None and second.skipped == [
        {"template_id": scarce.id, "reason": "sold_out"}
    ]
    assert len(second.coupon_ids) == 1
    assert await service.issue_pack(pack, b.id, "k:b", source="pack") is None
    assert (await check_coupons()).ok


async def test_ops_issue_pack_to_members_is_idempotent_and_audited(
    client: httpx.AsyncClient, staff_headers: StaffLogin, member_headers: MemberLogin
) -> None:
    staff = await staff_headers(role="ops")
    r = await client.post(
        "/api/admin/v1/coupon-templates",
        json={"name": "9折券", "kind": "discount", "discount_percent": 90, "discount_cap_fen": 3000,
              "claimable": False},
        headers=staff,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    template_id = r.json()["id"]
    assert r.json()["valid_months"] == 3
    pack = await client.post(
        "/api/admin/v1/gift-packs",
        json={"name": "回馈礼包", "items": [{"template_id": template_id, "quantity": 2}]},
        headers=staff,
    )
    assert pack.status_code == 201, pack.text
    await member_headers("x")
    await member_headers("y")
    ids = list(await Member.all().order_by("id").values_list("id", flat=True))
    body = {"member_ids": [*ids, 99999]}
    headers = {**staff, "Idempotency-Key": "issue-1"}
    url = f"/api/admin/v1/gift-packs/{pack.json()['id']}/issue"
    first = await client.post(url, json=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["issued"] == 2
    reasons = {r["member_id"]: r["reason"] for r in first.json()["results"]}
    assert reasons[99999] == "MEMBER_NOT_FOUND"
    again = await client.post(url, json=body, headers=headers)
    assert again.json() == first.json()
    assert await Coupon.filter(template_id=template_id).count() == 4
    # a new request (new key) gives the pack again; ops meant it
    await client.post(url, json={"member_ids": ids[:1]}, headers={**staff, "Idempotency-Key": "2"})
    assert await Coupon.filter(template_id=template_id).count() == 6
    assert await AuditLog.filter(action="gift_pack.issue").count() == 2
    listed = await client.get("/api/admin/v1/coupon-templates", headers=staff)
    assert listed.json()[0]["issued"] == 6
    # a shopper token never opens it
    shopper = await member_headers("x")
    assert (await client.post(url, json=body, headers=shopper)).status_code == 401


async def test_template_validation_and_immutable_terms(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    staff = await staff_headers()
    bad = [
        {"name": "a", "kind": "threshold", "face_value_fen": 3000, "threshold_fen": 2000},
        {"name": "a", "kind": "cash", "face_value_fen": 0},
        {"name": "a", "kind": "discount", "discount_percent": 100},
        {"name": "a", "kind": "gift", "threshold_fen": 100},
        {"name": "a", "kind": "exchange", "scope": "all"},
        {"name": "a", "kind": "cash", "face_value_fen": 5, "scope": "categories"},
        {"name": "a", "kind": "cash", "face_value_fen": 5, "validity": "fixed"},
    ]
    for body in bad:
        r = await client.post("/api/admin/v1/coupon-templates", json=body, headers=staff)
        assert r.status_code == 422, body
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    ok = await client.post(
        "/api/admin/v1/coupon-templates",
        json={"name": "5元", "kind": "cash", "face_value_fen": 500, "total_quantity": 10},
        headers=staff,
    )
    template_id = ok.json()["id"]
    face = await client.patch(
        f"/api/admin/v1/coupon-templates/{template_id}", json={"face_value_fen": 1}, headers=staff
    )
    assert face.status_code == 422  # money terms never change
    more = await client.patch(
        f"/api/admin/v1/coupon-templates/{template_id}",
        json={"total_quantity": None, "per_member_limit": 3},
        headers=staff,
    )
    assert more.json()["total_quantity"] is None and more.json()["per_member_limit"] == 3
    unknown = await client.post(
        "/api/admin/v1/gift-packs",
        json={"name": "p", "items": [{"template_id": 999}]},
        headers=staff,
    )
    assert unknown.status_code == 422
    assert unknown.json()["error"]["code"] == "GIFT_PACK_TEMPLATE_UNKNOWN"


async def test_ops_issue_pack_to_a_tag_among_more_members_than_one_statement_takes() -> None:
    # a segment is the whole member table filtered: 40,000 members are more ids than one
    # statement's parameters (PostgreSQL: 32,767)
    pack, _cash_id, _gift_id = await _new_member_pack()
    await insert_rows(Member, [{"openid": f"crowd{n}"} for n in range(40_000)])
    await insert_rows(Member, [{"openid": "vip", "tags": ["vip"]}])
    vip = await Member.get(openid="vip")
    _pack, results = await service.issue_pack_to_members(
        pack.id, member_ids=[], tag="vip", min_level=None, request_key="crowd", staff_id=None
    )
    assert [(r["member_id"], r["issued"]) for r in results] == [(vip.id, True)]


async def test_ops_pack_to_more_members_than_one_request_gives_is_refused_whole(
    client: httpx.AsyncClient, staff_headers: StaffLogin, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a segment the size of the member table would be issued member by member inside the
    # request and outlast it half given: over the bound nothing is given and ops are sent
    # to a campaign (queued, run by its job)
    from mall.config import get_settings

    monkeypatch.setattr(get_settings(), "gift_pack_issue_max", 3)
    pack, cash_id, _gift_id = await _new_member_pack()
    members = await make_members(4)
    await Member.filter(id__in=[m.id for m in members]).update(level=2)
    staff = await staff_headers(role="ops")
    url = f"/api/admin/v1/gift-packs/{pack.id}/issue"
    over = await client.post(
        url,
        json={"min_level": 1},
        headers={**staff, "Idempotency-Key": "all", "Accept-Language": "zh-CN"},
    )
    assert over.status_code == 422, over.text
    assert over.json()["error"]["code"] == "GIFT_PACK_TOO_MANY_MEMBERS"
    assert "4" in over.json()["error"]["message"] and "3" in over.json()["error"]["message"]
    assert "营销活动" in over.json()["error"]["message"]
    assert await Coupon.filter(template_id=cash_id).count() == 0
    assert await GiftPackIssue.all().count() == 0
    # ids given and a segment count together; at the bound it is given
    ids = list(await Member.all().order_by("id").values_list("id", flat=True))
    at = await client.post(
        url, json={"member_ids": ids[:3]}, headers={**staff, "Idempotency-Key": "three"}
    )
    assert at.status_code == 200, at.text
    assert at.json()["issued"] == 3


async def test_template_figures_add_up_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # the templates list is not paged, so its figures are read in chunks of ids
    monkeypatch.setattr(service, "_FIGURES_CHUNK", 2)
    templates = [await make_template(name=f"t{n}", per_member_limit=5) for n in range(5)]
    (member,) = await make_members(1)
    for n, t in enumerate(templates):
        for i in range(n):
            await service.grant(member.id, t.id, grant_key=f"f:{t.id}:{i}", source="ops")
    used = await Coupon.filter(template_id=templates[4].id).first()
    assert used is not None
    await Coupon.filter(id=used.id).update(status="used")
    figures = await service.template_figures([t.id for t in templates])
    assert [figures.get(t.id, (0, 0)) for t in templates] == [
        (0, 0),
        (1, 0),
        (2, 0),
        (3, 0),
        (4, 1),
    ]
