"""Expiry reminders: one message per member, only with a grant, within the touch cap."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from mall.config import Settings
from mall.coupons import service
from mall.coupons.models import Coupon, CouponTemplate
from mall.kit import clock
from mall.members.models import Member
from mall.redis import get_redis
from mall.touch import service as touch_service
from mall.touch.models import SubscribeGrant, TouchLog
from mall.touch.service import try_touch
from tests.conftest import MemberLogin
from tests.factories import make_member
from tests.wechat.fake import FakeWeChat

pytestmark = pytest.mark.clock

TEMPLATE = "tmpl-coupon-expiry"
# 28 Mar 2025, 10:00 Shanghai
NOW = datetime(2025, 3, 28, 2, tzinfo=UTC)


@pytest.fixture
def reminder_template(settings: Settings) -> Iterator[str]:
    saved = settings.coupon_expiry_template_id
    settings.coupon_expiry_template_id = TEMPLATE
    yield TEMPLATE
    settings.coupon_expiry_template_id = saved


async def _member(name: str, fake: FakeWeChat) -> Member:
    fake.add_user(f"o_{name}")
    return await make_member(name)


async def _coupon(member: Member, template: CouponTemplate, expires_in: timedelta) -> Coupon:
    coupon = await service.claim(member.id, template.id)
    await Coupon.filter(id=coupon.id).update(expires_at=clock.now() + expires_in)
    return coupon


async def _template(name: str) -> CouponTemplate:
    return await service.create_template(
        {"name": name, "kind": "cash", "face_value_fen": 500, "per_member_limit": 5}
    )


async def test_selection_grants_and_one_message_per_member(
    fake_wechat: FakeWeChat, reminder_template: str
) -> None:
    clock.set_now(NOW)
    fake_wechat.add_template(TEMPLATE, "thing1", "date2", "thing3")
    five, ten = await _template("5元券"), await _template("10元券")
    alice, bob, carol, dave = [await _member(n, fake_wechat) for n in ("a", "b", "c", "d")]
    await _coupon(alice, five, timedelta(days=2))
    await _coupon(alice, ten, timedelta(days=6))
    await _coupon(bob, five, timedelta(days=3))  # no grant
    await _coupon(carol, five, timedelta(days=20))  # not due yet
    await _coupon(dave, five, timedelta(days=1))  # refuses at WeChat
    for m in (alice, carol, dave):
        await touch_service.record_grants(m.id, [TEMPLATE])
    fake_wechat.refuse("o_d", TEMPLATE)

    report = await service.send_expiry_reminders()
    assert (report.sent, report.no_grant, report.refused) == (1, 1, 1)
    sent = fake_wechat.sent
    assert [m["touser"] for m in sent] == ["o_a"]
    assert sent[0]["data"]["thing1"]["value"] == "5元券"  # the first to expire
    assert sent[0]["data"]["thing3"]["value"] == "您有2张优惠券即将过期"
    assert sent[0]["data"]["date2"]["value"] == "2025年3月30日"
    # 43101: dave's grant is gone and his touch given back
    assert (await SubscribeGrant.get(member_id=dave.id)).remaining == 0
    assert await try_touch(dave.id, "test") and await try_touch(dave.id, "test")
    # nothing twice
    again = await service.send_expiry_reminders()
    assert again.sent == 0 and len(fake_wechat.sent) == 1
    assert (await SubscribeGrant.get(member_id=alice.id)).remaining == 0


async def test_touch_cap_with_a_moved_clock(
    fake_wechat: FakeWeChat, reminder_template: str
) -> None:
    clock.set_now(NOW)
    template = await _template("5元券")
    member = await _member("e", fake_wechat)
    await _coupon(member, template, timedelta(days=6))  # expires 3 Apr
    await touch_service.record_grants(member.id, [TEMPLATE])
    assert await try_touch(member.id, "birthday")
    assert await try_touch(member.id, "seckill")  # the two March touches are used
    report = await service.send_expiry_reminders()
    assert report.capped == 1 and fake_wechat.sent == []
    assert (await SubscribeGrant.get(member_id=member.id)).remaining == 1  # grant kept
    # April: a new month, a new cap
    clock.set_now(datetime(2025, 3, 31, 16, 0, tzinfo=UTC))  # 1 Apr 00:00 Shanghai
    report = await service.send_expiry_reminders()
    assert report.sent == 1 and len(fake_wechat.sent) == 1
    kinds = await TouchLog.filter(member_id=member.id).order_by("id").values_list("month", "kind")
    assert kinds == [("202503", "birthday"), ("202503", "seckill"), ("202504", "coupon_expiry")]


async def test_failed_send_gives_grant_and_touch_back(
    fake_wechat: FakeWeChat, reminder_template: str
) -> None:
    clock.set_now(NOW)
    template = await _template("5元券")
    member = await _member("f", fake_wechat)
    await _coupon(member, template, timedelta(days=2))
    await touch_service.record_grants(member.id, [TEMPLATE])
    fake_wechat.fail("subscribe_send", -1)
    report = await service.send_expiry_reminders()
    assert report.failed == 1
    assert (await SubscribeGrant.get(member_id=member.id)).remaining == 1
    report = await service.send_expiry_reminders()
    assert report.sent == 1
    assert len(fake_wechat.sent) == 1


async def test_daily_job_runs_once_a_day_after_the_hour(
    fake_wechat: FakeWeChat, reminder_template: str
) -> None:
    clock.set_now(datetime(2025, 3, 28, 1, tzinfo=UTC))  # 09:00 Shanghai: too early
    assert await service.daily_expiry_reminders() is None
    clock.set_now(NOW)
    assert await service.daily_expiry_reminders() is not None
    assert await service.daily_expiry_reminders() is None  # once per day


async def test_touch_cap_survives_a_redis_loss() -> None:
    clock.set_now(NOW)
    assert await try_touch(1, "a") and await try_touch(1, "b")
    assert not await try_touch(1, "c")
    await get_redis().flushdb()
    assert not await try_touch(1, "c")  # re-seeded from the touch log
    assert await try_touch(2, "a")  # another member has his own cap


async def test_subscriptions_route(client: httpx.AsyncClient, member_headers: MemberLogin) -> None:
    headers = await member_headers("sub")
    body = {"template_ids": [TEMPLATE, "other"]}
    r = await client.post("/api/v1/subscriptions", json=body, headers=headers)
    assert r.status_code == 200, r.text
    key = {**headers, "Idempotency-Key": "s-1"}
    await client.post("/api/v1/subscriptions", json={"template_ids": [TEMPLATE]}, headers=key)
    await client.post("/api/v1/subscriptions", json={"template_ids": [TEMPLATE]}, headers=key)
    mine = (await client.get("/api/v1/subscriptions", headers=headers)).json()
    assert {g["template_id"]: g["remaining"] for g in mine} == {TEMPLATE: 2, "other": 1}
