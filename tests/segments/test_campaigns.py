"""Campaigns to a segment: the touch cap (shared with coupon reminders), grants,
refusals, counts, and retries that never send twice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from mall.config import Settings
from mall.coupons import service as coupons_service
from mall.coupons.models import Coupon
from mall.kit import clock
from mall.members.models import Member
from mall.redis import get_redis
from mall.segments import service
from mall.segments.models import CampaignRecipient
from mall.segments.schemas import CampaignIn, Rules
from mall.touch import service as touch_service
from mall.touch.models import TouchLog
from tests.conftest import StaffLogin
from tests.wechat.fake import FakeWeChat

CAMPAIGN_TEMPLATE = "tmpl-member-day"
REMINDER_TEMPLATE = "tmpl-coupon-expiry"
# 20 Mar 2025, 10:00 Shanghai
NOW = datetime(2025, 3, 20, 2, tzinfo=UTC)
MESSAGE = {"thing1": "会员日活动", "date2": "2025年3月18日"}


@pytest.fixture
def reminders_on(settings: Settings) -> Iterator[None]:
    saved = settings.coupon_expiry_template_id
    settings.coupon_expiry_template_id = REMINDER_TEMPLATE
    yield
    settings.coupon_expiry_template_id = saved


async def _members(fake: FakeWeChat, *names: str, tag: str = "target") -> list[Member]:
    out = []
    for name in names:
        fake.add_user(f"o_{name}")
        out.append(await Member.create(openid=f"o_{name}", nickname=name, tags=[tag]))
    return out


async def _segment(tag: str = "target") -> int:
    segment, _count = await service.create_segment(
        name=tag,
        description="",
        rules=Rules.model_validate({"all": [{"field": "tags", "any": [tag]}]}),
        staff=None,
    )
    return segment.id


def _message() -> CampaignIn:
    return CampaignIn(kind="subscribe_message", template_id=CAMPAIGN_TEMPLATE, data=MESSAGE)


@pytest.mark.clock
async def test_touch_cap_is_shared_by_campaigns_and_coupon_reminders(
    fake_wechat: FakeWeChat, reminders_on: None
) -> None:
    clock.set_now(NOW)
    fake_wechat.add_template(CAMPAIGN_TEMPLATE, "thing1", "date2")
    fake_wechat.add_template(REMINDER_TEMPLATE, "thing1", "date2", "thing3")
    mia, ned = await _members(fake_wechat, "mia", "ned")
    for m in (mia, ned):
        await touch_service.record_grants(m.id, [CAMPAIGN_TEMPLATE, REMINDER_TEMPLATE])
    await touch_service.record_grants(ned.id, [CAMPAIGN_TEMPLATE])  # ned allows two messages
    template = await coupons_service.create_template(
        {"name": "5元券", "kind": "cash", "face_value_fen": 500, "per_member_limit": 5}
    )
    for m in (mia, ned):
        coupon = await coupons_service.claim(m.id, template.id)
        await Coupon.filter(id=coupon.id).update(expires_at=clock.now() + timedelta(days=3))
    segment_id = await _segment()

    # touch 1 for both
    first = await service.start_campaign(segment_id, _message(), staff=None, request_key="c1")
    assert (first.status, first.members, first.sent, first.skipped_by_cap) == ("done", 2, 2, 0)
    # mia's reminder is her touch 2; ned's campaign 2 is his touch 2 ...
    await service.start_campaign(
        segment_id, _message(), staff=None, request_key="c2"
    )  # mia: no grant left for the campaign template, so untouched; ned: sent
    report = await coupons_service.send_expiry_reminders()
    # ... so ned's reminder is capped, and mia's went out
    assert (report.sent, report.capped) == (1, 1)
    third = await service.start_campaign(segment_id, _message(), staff=None, request_key="c3")
    await touch_service.record_grants(mia.id, [CAMPAIGN_TEMPLATE])
    fourth = await service.start_campaign(segment_id, _message(), staff=None, request_key="c4")
    # mia has a grant again but both March touches are used: skipped by the cap
    assert (fourth.sent, fourth.skipped_by_cap) == (0, 1)
    assert third.sent == 0

    sent = [(m["touser"], m["template_id"]) for m in fake_wechat.sent]
    assert sorted(sent) == sorted(
        [
            ("o_mia", CAMPAIGN_TEMPLATE),
            ("o_ned", CAMPAIGN_TEMPLATE),
            ("o_ned", CAMPAIGN_TEMPLATE),
            ("o_mia", REMINDER_TEMPLATE),
        ]
    )
    for m in (mia, ned):
        assert await touch_service.grants_of(m.id)  # grants were kept where nothing went out
        assert await TouchLog.filter(member_id=m.id, month="202503").count() == 2
    # a capped member's grant is not used up
    mia_grant = next(
        g for g in await touch_service.grants_of(mia.id) if g.template_id == CAMPAIGN_TEMPLATE
    )
    assert mia_grant.remaining == 1
    # April: a new month, a new cap
    clock.set_now(datetime(2025, 3, 31, 16, 30, tzinfo=UTC))
    april = await service.start_campaign(segment_id, _message(), staff=None, request_key="c5")
    assert april.sent == 1  # mia (ned has no grant left)


async def test_counts_grants_refusals_and_failures(
    fake_wechat: FakeWeChat, settings: Settings
) -> None:
    clock.set_now(NOW)
    saved = settings.segments_campaign_concurrency
    settings.segments_campaign_concurrency = 1  # one at a time: the first send fails
    fake_wechat.add_template(CAMPAIGN_TEMPLATE, "thing1", "date2")
    ok, nogrant, refuses, capped, flaky = await _members(
        fake_wechat, "ok", "nogrant", "refuses", "capped", "flaky"
    )
    for m in (ok, refuses, capped, flaky):
        await touch_service.record_grants(m.id, [CAMPAIGN_TEMPLATE])
    fake_wechat.refuse("o_refuses", CAMPAIGN_TEMPLATE)
    assert await clock_touch(capped.id) and await clock_touch(capped.id)
    segment_id = await _segment()

    fake_wechat.fail("subscribe_send", -1)  # ok's send (ids ascending)
    try:
        campaign = await service.start_campaign(
            segment_id, _message(), staff=None, request_key=None
        )
    finally:
        settings.segments_campaign_concurrency = saved
    counts = (
        campaign.members,
        campaign.sent,
        campaign.no_grant,
        campaign.refused,
        campaign.skipped_by_cap,
        campaign.failed,
    )
    assert counts == (5, 1, 1, 1, 1, 1)
    statuses = dict(
        await CampaignRecipient.filter(campaign_id=campaign.id).values_list("member_id", "status")
    )
    assert statuses == {
        ok.id: "failed",
        nogrant.id: "no_grant",
        refuses.id: "refused",
        capped.id: "skipped_by_cap",
        flaky.id: "sent",
    }
    assert [m["touser"] for m in fake_wechat.sent] == ["o_flaky"]
    # a failure gives the grant and the touch back; a refusal zeroes the grant
    grants = {g.member_id: g.remaining for g in await _grants()}
    assert (grants[ok.id], grants[refuses.id], grants[flaky.id]) == (1, 0, 0)
    assert await clock_touch(ok.id) and await clock_touch(ok.id)
    assert await clock_touch(refuses.id) and await clock_touch(refuses.id)


async def clock_touch(member_id: int) -> bool:
    from mall.kit.touch import try_touch

    return await try_touch(member_id, "test")


async def _grants() -> list[Any]:
    from mall.touch.models import SubscribeGrant

    return await SubscribeGrant.all()


async def test_route_retries_never_send_twice(
    client: httpx.AsyncClient, staff_headers: StaffLogin, fake_wechat: FakeWeChat
) -> None:
    clock.set_now(NOW)
    members = await _members(fake_wechat, "p", "q", "r")
    for m in members:
        await touch_service.record_grants(m.id, [CAMPAIGN_TEMPLATE, CAMPAIGN_TEMPLATE])
    segment_id = await _segment()
    ops = await staff_headers("ops")
    body = {"kind": "subscribe_message", "template_id": CAMPAIGN_TEMPLATE, "data": MESSAGE}
    url = f"/api/admin/v1/segments/{segment_id}/campaigns"
    keyed = {**ops, "Idempotency-Key": "camp-1"}
    r = await client.post(url, json=body, headers=keyed)
    assert r.status_code == 201, r.text
    first = r.json()
    assert (first["status"], first["sent"]) == ("done", 3)
    again = await client.post(url, json=body, headers=keyed)
    assert again.json()["id"] == first["id"]
    # even after the Redis answer is gone, the database key finds the same campaign
    await get_redis().delete(f"idem:segments:campaign:{segment_id}:camp-1")
    again = await client.post(url, json=body, headers=keyed)
    assert again.status_code == 201 and again.json()["id"] == first["id"]
    assert len(fake_wechat.sent) == 3
    # a run of a finished campaign sends nothing
    assert await service.run_campaign(first["id"])
    assert len(fake_wechat.sent) == 3
    # the same key with another body is refused
    other = {**body, "data": {"thing1": "别的"}}
    r = await client.post(url, json=other, headers=keyed)
    assert r.status_code == 422 and r.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    r = await client.get(f"{url}/{first['id']}/recipients?status=sent", headers=ops)
    assert len(r.json()["items"]) == 3
    r = await client.get(url, headers=ops)
    assert [c["id"] for c in r.json()] == [first["id"]]
    # audited
    from mall.audit.models import AuditLog

    assert await AuditLog.filter(action="segment.campaign").count() == 1


async def test_big_campaign_is_queued_and_run_by_the_job_once(
    client: httpx.AsyncClient,
    staff_headers: StaffLogin,
    fake_wechat: FakeWeChat,
    settings: Settings,
) -> None:
    clock.set_now(NOW)
    members = await _members(fake_wechat, *[f"big{i}" for i in range(30)])
    for m in members:
        await touch_service.record_grants(m.id, [CAMPAIGN_TEMPLATE])
    segment_id = await _segment()
    ops = await staff_headers("ops")
    body = {"kind": "subscribe_message", "template_id": CAMPAIGN_TEMPLATE, "data": MESSAGE}
    saved = settings.segments_inline_campaign_max
    settings.segments_inline_campaign_max = 10
    try:
        r = await client.post(
            f"/api/admin/v1/segments/{segment_id}/campaigns", json=body, headers=ops
        )
    finally:
        settings.segments_inline_campaign_max = saved
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued" and r.json()["members"] == 30
    # two runners at once: the lease lets one work, and the recipient claims keep it single
    import asyncio

    results = await asyncio.gather(service.run_queued_campaigns(), service.run_queued_campaigns())
    assert sorted(results) in ([0, 1], [1, 1])
    await service.run_queued_campaigns()
    campaign = await service.get_campaign(r.json()["id"])
    assert (campaign.status, campaign.sent) == ("done", 30)
    assert len(fake_wechat.sent) == 30
    assert len({m["touser"] for m in fake_wechat.sent}) == 30
    from mall.segments.tasks import check_campaigns

    assert (await check_campaigns()).ok
    await CampaignRecipient.filter(campaign_id=campaign.id).limit(1).update(status="failed")
    assert not (await check_campaigns()).ok


async def test_gift_pack_campaign_within_the_cap(fake_wechat: FakeWeChat) -> None:
    clock.set_now(NOW)
    template = await coupons_service.create_template(
        {"name": "10元券", "kind": "cash", "face_value_fen": 1000, "per_member_limit": 1}
    )
    pack = await coupons_service.create_pack(
        {"name": "回购礼包", "items": [{"template_id": template.id, "quantity": 2}]}
    )
    fresh, busy = await _members(fake_wechat, "fresh", "busy")
    assert await clock_touch(busy.id) and await clock_touch(busy.id)
    segment_id = await _segment()
    body = CampaignIn(kind="gift_pack", gift_pack_id=pack.id)
    campaign = await service.start_campaign(segment_id, body, staff=None, request_key="g1")
    assert (campaign.sent, campaign.skipped_by_cap) == (1, 1)
    assert await Coupon.filter(member_id=fresh.id, source="campaign").count() == 2
    assert await Coupon.filter(member_id=busy.id).count() == 0
    again = await service.start_campaign(segment_id, body, staff=None, request_key="g1")
    assert again.id == campaign.id
    assert await Coupon.filter(member_id=fresh.id).count() == 2

    await coupons_service.update_pack(pack.id, {"active": False})
    from mall.errors import MallError

    with pytest.raises(MallError) as raised:
        await service.start_campaign(segment_id, body, staff=None, request_key="g2")
    assert raised.value.code == "CAMPAIGN_PACK_INACTIVE"
    await coupons_service.update_pack(pack.id, {"active": True})
    with pytest.raises(MallError) as raised:
        await service.start_campaign(await _segment("nobody"), body, staff=None, request_key="g3")
    assert raised.value.code == "SEGMENT_EMPTY"
