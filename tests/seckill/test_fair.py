"""Fair sales: eligibility rules decided in the attempt (token claims and Redis sets, no
database read), flags that bite on the next attempt, bookings with one reminder each
under the touch cap, booking-required sales, and the suspicious-pattern reads."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from tortoise import connections

from mall.addresses import service as addresses_service
from mall.addresses.schemas import AddressIn
from mall.audit.models import AuditLog
from mall.config import Settings
from mall.kit import clock
from mall.kit.security import issue_token
from mall.members import service as members_service
from mall.members.models import Member
from mall.seckill import fair, service
from mall.seckill.models import BookingReminder, SeckillBooking
from mall.touch import service as touch_service
from mall.touch.models import TouchLog
from tests.conftest import MemberLogin, StaffLogin
from tests.factories import make_member
from tests.wechat.fake import FakeWeChat

TEMPLATE = "tmpl-seckill-booking"
# Friday 28 Mar 2025, 19:50 Shanghai; the sale starts at 20:00
NOW = datetime(2025, 3, 28, 11, 50, tzinfo=UTC)


async def _sale(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    *,
    starts_in: int = -60,
    limit: int = 1,
    stock: int = 10,
    **rules: Any,
) -> tuple[int, int]:
    """A session with one item and `rules`: (session id, item id)."""
    start = clock.now() + timedelta(seconds=starts_in)
    body = {
        "name": "Friday 20:00",
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(hours=1)).isoformat(),
        "rules": rules,
        "items": [{"title": "Tea gift box", "stock": stock, "per_member_limit": limit}],
    }
    r = await client.post("/api/admin/v1/seckill/sessions", json=body, headers=admin)
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["items"][0]["id"]


async def _attempt(
    client: httpx.AsyncClient, item_id: int, headers: dict[str, str], lang: str = "zh"
) -> httpx.Response:
    return await client.post(
        f"/api/v1/seckill/items/{item_id}/attempt", headers={**headers, "Accept-Language": lang}
    )


def _code(r: httpx.Response) -> str:
    assert r.status_code == 403, r.text
    return str(r.json()["error"]["code"])


def _won(r: httpx.Response) -> bool:
    assert r.status_code == 200, r.text
    return r.json()["result"] == "won"


async def test_phone_rule_reads_the_token_claim(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    admin = await staff_headers()
    session_id, item_id = await _sale(client, admin, require_phone=True)
    alice = await member_headers("alice")
    r = await _attempt(client, item_id, alice)
    assert _code(r) == "SECKILL_PHONE_REQUIRED"
    assert r.json()["error"]["message"] == "绑定手机号后才能参加本场秒杀"
    en = await _attempt(client, item_id, alice, "en")
    assert en.json()["error"]["message"].startswith("Bind your phone number")
    await Member.filter(openid="dev_alice").update(phone="13800138000")
    # the old token still says no phone (claims are as old as the token) ...
    assert _code(await _attempt(client, item_id, alice)) == "SECKILL_PHONE_REQUIRED"
    # ... a new one (login or refresh) carries it
    assert _won(await _attempt(client, item_id, await member_headers("alice")))
    sessions = (await client.get("/api/v1/seckill/sessions")).json()
    assert [s["rules"]["require_phone"] for s in sessions if s["id"] == session_id] == [True]


async def test_joined_before_rule(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    admin = await staff_headers()
    cutoff = clock.now() - timedelta(days=1)
    _session_id, item_id = await _sale(client, admin, joined_before=cutoff.isoformat())
    newcomer = await member_headers("newcomer")
    r = await _attempt(client, item_id, newcomer)
    assert _code(r) == "SECKILL_JOINED_TOO_LATE"
    day = cutoff.astimezone(clock.SHANGHAI).date().isoformat()
    assert r.json()["error"]["message"] == f"本场秒杀仅限 {day} 之前注册的会员参加"
    await member_headers("veteran")
    await Member.filter(openid="dev_veteran").update(created_at=cutoff - timedelta(days=30))
    assert _won(await _attempt(client, item_id, await member_headers("veteran")))


async def test_min_level_rule(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    admin = await staff_headers()
    _session_id, item_id = await _sale(client, admin, min_level=2)
    low = await member_headers("low")
    r = await _attempt(client, item_id, low, "en")
    assert _code(r) == "SECKILL_LEVEL_TOO_LOW"
    assert r.json()["error"]["message"] == "This flash sale is for members of level 2 and above"
    await member_headers("high")
    await Member.filter(openid="dev_high").update(level=2)
    assert _won(await _attempt(client, item_id, await member_headers("high")))


async def test_no_rules_no_questions_and_old_tokens(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    admin = await staff_headers()
    _open_id, open_item = await _sale(client, admin)
    _ruled_id, ruled_item = await _sale(client, admin, min_level=1)
    await member_headers("old")
    member = await Member.get(openid="dev_old")
    await Member.filter(id=member.id).update(level=5)
    # a token issued before the claims existed: fine where no rule needs them; a sale
    # with rules asks the client to refresh it (401), never a wrong answer
    bare = {"Authorization": f"Bearer {issue_token(member.id, 'member', 900, sid=1)}"}
    assert _won(await _attempt(client, open_item, bare))
    stale = await _attempt(client, ruled_item, bare)
    assert stale.status_code == 401 and stale.json()["error"]["code"] == "TOKEN_EXPIRED"


async def test_flag_bites_on_the_next_attempt_without_login(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    ops = await staff_headers(role="ops")
    _session_id, item_id = await _sale(client, ops, limit=5, exclude_flagged=True)
    _other_session, lenient_item = await _sale(client, ops, limit=5)
    alice = await member_headers("alice")
    member = await Member.get(openid="dev_alice")
    assert _won(await _attempt(client, item_id, alice))
    assert _won(await _attempt(client, lenient_item, alice))  # warm: the flag reaches it too

    flagged = await client.post(
        f"/api/admin/v1/seckill/members/{member.id}/flag",
        json={"reason": "12 accounts on one address"},
        headers=ops,
    )
    assert flagged.status_code == 200, flagged.text
    assert flagged.json()["reason"] == "12 accounts on one address"
    r = await _attempt(client, item_id, alice)
    assert _code(r) == "SECKILL_MEMBER_FLAGGED"
    # a sale that does not exclude flagged members still lets them in
    assert _won(await _attempt(client, lenient_item, alice))
    listed = (await client.get("/api/admin/v1/seckill/flags", headers=ops)).json()
    assert [f["member_id"] for f in listed] == [member.id]

    lifted = await client.post(
        f"/api/admin/v1/seckill/members/{member.id}/unflag",
        json={"reason": "one family, checked by phone"},
        headers=ops,
    )
    assert lifted.status_code == 204
    assert _won(await _attempt(client, item_id, alice))
    actions = await AuditLog.filter(target=f"member:{member.id}").order_by("id")
    assert [(a.action, a.detail["reason"]) for a in actions] == [
        ("seckill.member.flag", "12 accounts on one address"),
        ("seckill.member.unflag", "one family, checked by phone"),
    ]
    missing = await client.post(
        "/api/admin/v1/seckill/members/999999/flag", json={"reason": "x"}, headers=ops
    )
    assert missing.status_code == 404
    blank = await client.post(
        f"/api/admin/v1/seckill/members/{member.id}/flag", json={"reason": ""}, headers=ops
    )
    assert blank.status_code == 422


async def test_a_flag_set_before_the_item_warms_is_loaded_with_it(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    ops = await staff_headers(role="ops")
    bob = await member_headers("bob")
    member = await Member.get(openid="dev_bob")
    await fair.flag(member.id, "bot pattern", None)
    # created after the flag, warmed lazily by the first attempt
    _session_id, item_id = await _sale(client, ops, exclude_flagged=True)
    assert _code(await _attempt(client, item_id, bob)) == "SECKILL_MEMBER_FLAGGED"
    # and after Redis forgot the item (dropped / retired), it comes back with it
    await service.stock.drop(item_id)
    assert _code(await _attempt(client, item_id, bob)) == "SECKILL_MEMBER_FLAGGED"
    # with the rule off (rewarmed on update), the same member may try
    patch = await client.patch(
        f"/api/admin/v1/seckill/sessions/{_session_id}",
        json={"rules": {"exclude_flagged": False}},
        headers=ops,
    )
    assert patch.status_code == 200 and patch.json()["rules"]["exclude_flagged"] is False
    assert _won(await _attempt(client, item_id, bob))


@pytest.mark.clock
async def test_booking_required_sale(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    clock.set_now(NOW)
    ops = await staff_headers(role="ops")
    session_id, item_id = await _sale(client, ops, starts_in=600, require_booking=True)
    alice, bob, carol, dave, erin = [
        await member_headers(n) for n in ("alice", "bob", "carol", "dave", "erin")
    ]
    url = f"/api/v1/seckill/sessions/{session_id}/booking"
    booked = await client.post(url, headers=alice)
    assert booked.status_code == 200, booked.text
    assert booked.json()["session_id"] == session_id and booked.json()["reminder"] == "due"
    assert (await client.post(url, headers=alice)).status_code == 200  # again: harmless
    for member in (carol, erin):
        assert (await client.post(url, headers=member)).status_code == 200
    assert (await client.delete(url, headers=carol)).status_code == 204
    gone = await client.delete(url, headers=carol)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "SECKILL_BOOKING_NOT_FOUND"
    mine = (await client.get("/api/v1/seckill/bookings", headers=alice)).json()
    assert [b["session_id"] for b in mine] == [session_id]
    assert (await client.get("/api/v1/seckill/bookings", headers=carol)).json() == []

    # the first attempt warms the item (with the bookings made so far) ...
    early = await _attempt(client, item_id, alice)
    assert early.status_code == 200 and early.json()["result"] == "not_started"
    # ... and bookings made or cancelled while it is warm reach its Redis set
    assert (await client.post(url, headers=dave)).status_code == 200
    assert (await client.delete(url, headers=erin)).status_code == 204
    clock.set_now(NOW + timedelta(minutes=11))
    assert _won(await _attempt(client, item_id, alice))
    assert _won(await _attempt(client, item_id, dave))
    r = await _attempt(client, item_id, bob, "en")
    assert _code(r) == "SECKILL_BOOKING_REQUIRED"
    assert r.json()["error"]["message"] == "This flash sale is only for members who booked it"
    assert _code(await _attempt(client, item_id, carol)) == "SECKILL_BOOKING_REQUIRED"
    assert _code(await _attempt(client, item_id, erin)) == "SECKILL_BOOKING_REQUIRED"
    late = await client.post(url, headers=bob)
    assert late.status_code == 409 and late.json()["error"]["code"] == "SECKILL_BOOKING_CLOSED"
    assert (await client.delete(url, headers=alice)).status_code == 409
    # ops see who booked: nickname and masked phone; an account gone shows its id only
    await Member.filter(openid="dev_alice").update(nickname="爱丽丝", phone="13800138000")
    await Member.filter(openid="dev_dave").update(deleted_at=clock.now(), nickname="")
    listing = await client.get(f"/api/admin/v1/seckill/sessions/{session_id}/bookings", headers=ops)
    rows = listing.json()["items"]
    assert len(rows) == 4 and sum(1 for b in rows if b["cancelled_at"]) == 2
    alice_id = (await Member.get(openid="dev_alice")).id
    dave_id = (await Member.get(openid="dev_dave")).id
    who = {b["member_id"]: (b["member_nickname"], b["member_phone"]) for b in rows}
    assert who[alice_id] == ("爱丽丝", "138****8000")
    assert who[dave_id] == (None, None)


@pytest.mark.clock
async def test_booking_checks_the_rules_from_the_member_row(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    clock.set_now(NOW)
    ops = await staff_headers(role="ops")
    session_id, _item = await _sale(client, ops, starts_in=600, min_level=3)
    alice = await member_headers("alice")
    url = f"/api/v1/seckill/sessions/{session_id}/booking"
    r = await client.post(url, headers=alice)
    assert _code(r) == "SECKILL_LEVEL_TOO_LOW"
    await Member.filter(openid="dev_alice").update(level=3)
    # booking reads the database: no new token needed
    assert (await client.post(url, headers=alice)).status_code == 200
    missing = await client.post("/api/v1/seckill/sessions/999999/booking", headers=alice)
    assert missing.status_code == 404


async def _login(name: str) -> dict[str, str]:
    """A member and a fresh access token (dev login is off while the fake WeChat runs)."""
    member = await make_member(name)
    token = (await members_service.tokens_for(member)).token
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def booking_template(settings: Settings) -> Iterator[str]:
    saved = settings.seckill_booking_template_id
    settings.seckill_booking_template_id = TEMPLATE
    yield TEMPLATE
    settings.seckill_booking_template_id = saved


@pytest.mark.clock
async def test_reminder_once_per_booking_under_the_touch_cap(
    client: httpx.AsyncClient,
    staff_headers: StaffLogin,
    fake_wechat: FakeWeChat,
    booking_template: str,
    settings: Settings,
) -> None:
    clock.set_now(NOW)
    fake_wechat.add_template(TEMPLATE, "thing1", "time2", "thing3")
    ops = await staff_headers(role="ops")
    session_id, _item = await _sale(client, ops, starts_in=600)
    names = ("alice", "bob", "carol", "dave", "erin")
    heads = {n: await _login(n) for n in names}
    ids = {n: (await Member.get(openid=f"o_{n}")).id for n in names}
    for n in names:
        fake_wechat.add_user(f"o_{n}")
        r = await client.post(f"/api/v1/seckill/sessions/{session_id}/booking", headers=heads[n])
        assert r.status_code == 200, r.text
    for n in ("alice", "carol", "dave", "erin"):
        await touch_service.record_grants(ids[n], [TEMPLATE])
    # carol has had this month's touches already; erin refuses at WeChat; dave cancels
    for _ in range(settings.touch_cap_per_month):
        assert await touch_service.try_touch(ids["carol"], "test")
    fake_wechat.refuse("o_erin", TEMPLATE)
    await client.delete(f"/api/v1/seckill/sessions/{session_id}/booking", headers=heads["dave"])

    # 10 minutes before the start: not due yet (5 minutes ahead)
    assert (await fair.send_booking_reminders()).due == 0
    clock.set_now(NOW + timedelta(minutes=6))
    report = await fair.send_booking_reminders()
    assert (report.due, report.sent, report.no_grant, report.capped, report.refused) == (
        4,
        1,
        1,
        1,
        1,
    )
    sent = fake_wechat.sent
    assert [m["touser"] for m in sent] == ["o_alice"]
    assert sent[0]["data"]["thing1"]["value"] == "Friday 20:00"
    assert sent[0]["data"]["time2"]["value"] == "2025-03-28 20:00"
    assert sent[0]["data"]["thing3"]["value"] == "您预约的秒杀即将开始"
    states = {b.member_id: b.reminder for b in await SeckillBooking.filter(session_id=session_id)}
    assert states == {
        ids["alice"]: BookingReminder.SENT,
        ids["bob"]: BookingReminder.NO_GRANT,
        ids["carol"]: BookingReminder.CAPPED,
        ids["dave"]: BookingReminder.CANCELLED,
        ids["erin"]: BookingReminder.REFUSED,
    }
    # the touch counted for alice only (erin's was given back)
    touches = await TouchLog.filter(kind=fair.REMINDER_KIND).values_list("member_id", "delta")
    assert sum(d for m, d in touches if m == ids["alice"]) == 1
    assert sum(d for m, d in touches if m == ids["erin"]) == 0

    # exactly once: later runs, a new grant, or cancelling and booking again send nothing
    # more; dave's cancelled booking, booked again, is due once more
    url = f"/api/v1/seckill/sessions/{session_id}/booking"
    assert (await client.delete(url, headers=heads["alice"])).status_code == 204
    assert (await client.post(url, headers=heads["alice"])).status_code == 200
    assert (await client.post(url, headers=heads["dave"])).json()["reminder"] == "due"
    await touch_service.record_grants(ids["alice"], [TEMPLATE])
    await touch_service.record_grants(ids["bob"], [TEMPLATE])
    clock.set_now(NOW + timedelta(minutes=8))
    again = await fair.send_booking_reminders()
    assert again.sent == 1 and [m["touser"] for m in fake_wechat.sent] == ["o_alice", "o_dave"]
    # after the start nothing is due any more
    clock.set_now(NOW + timedelta(minutes=11))
    assert (await fair.send_booking_reminders()).due == 0


@pytest.mark.clock
async def test_a_failed_send_is_retried_and_still_sent_once(
    client: httpx.AsyncClient,
    staff_headers: StaffLogin,
    fake_wechat: FakeWeChat,
    booking_template: str,
) -> None:
    clock.set_now(NOW)
    ops = await staff_headers(role="ops")
    session_id, _item = await _sale(client, ops, starts_in=240)
    alice = await _login("alice")
    member = await Member.get(openid="o_alice")
    fake_wechat.add_user("o_alice")
    await client.post(f"/api/v1/seckill/sessions/{session_id}/booking", headers=alice)
    await touch_service.record_grants(member.id, [TEMPLATE])
    # the template is unknown at WeChat: a failure, grant and touch handed back
    fake_wechat.add_template("another-template", "thing1")
    first = await fair.send_booking_reminders()
    assert (first.sent, first.failed) == (0, 1)
    assert (await SeckillBooking.get(member_id=member.id)).reminder == BookingReminder.DUE
    fake_wechat.add_template(TEMPLATE, "thing1", "time2", "thing3")
    second = await fair.send_booking_reminders()
    third = await fair.send_booking_reminders()
    assert (second.sent, third.sent, len(fake_wechat.sent)) == (1, 0, 1)
    touches = await TouchLog.filter(member_id=member.id).values_list("delta", flat=True)
    assert sum(touches) == 1


async def test_suspicious_patterns(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    ops = await staff_headers(role="ops")
    phone_farm = [await make_member(f"p{i}", phone="13900001111") for i in range(3)]
    await make_member("pair1", phone="13700002222")
    await make_member("pair2", phone="13700002222")
    await make_member("alone", phone="13600003333")
    await fair.flag(phone_farm[0].id, "farm", None)
    r = await client.get(
        "/api/admin/v1/seckill/suspicious/phones", params={"min_members": 3}, headers=ops
    )
    assert r.status_code == 200, r.text
    assert r.json() == [
        {
            "value": "139****1111",
            "member_count": 3,
            "member_ids": [m.id for m in phone_farm],
            "flagged_ids": [phone_farm[0].id],
            # who each account is, phones masked like the group's
            "members": [
                {"id": m.id, "nickname": f"p{i}", "phone": "139****1111"}
                for i, m in enumerate(phone_farm)
            ],
        }
    ]
    two = (await client.get("/api/admin/v1/seckill/suspicious/phones", headers=ops)).json()
    assert [g["member_count"] for g in two] == [3, 2]

    # one address typed three ways (spaces, full-width digits, punctuation), one other
    spellings = [
        ("上海市 浦东新区", "世纪大道 100 号 5 楼"),
        ("上海市浦东新区", "世纪大道１００号5楼"),
        ("上海市, 浦东新区", "世纪大道100号-5楼"),
    ]
    shippers = [await make_member(f"a{i}") for i in range(4)]
    for member, (region, detail) in zip(shippers, spellings, strict=False):
        await addresses_service.create_address(
            member.id, AddressIn(name="张三", phone="13800138000", region=region, detail=detail)
        )
    await addresses_service.create_address(
        shippers[3].id,
        AddressIn(name="李四", phone="13800138001", region="上海市浦东新区", detail="世纪大道1号"),
    )
    r = await client.get("/api/admin/v1/seckill/suspicious/addresses", headers=ops)
    assert r.status_code == 200, r.text
    found = r.json()
    assert len(found) == 1 and found[0]["member_ids"] == [m.id for m in shippers[:3]]
    assert [(m["id"], m["nickname"], m["phone"]) for m in found[0]["members"]] == [
        (m.id, f"a{i}", None) for i, m in enumerate(shippers[:3])
    ]
    assert found[0]["value"].startswith("上海市 浦东新区")

    # logins: two members from this test client's one address
    await member_headers("alice")
    await member_headers("bob")
    logins = (await client.get("/api/admin/v1/seckill/suspicious/logins", headers=ops)).json()
    assert len(logins) == 1 and logins[0]["member_count"] == 2

    bad = await client.get(
        "/api/admin/v1/seckill/suspicious/phones", params={"min_members": 1}, headers=ops
    )
    assert bad.status_code == 422
    member = await member_headers("carol")
    forbidden = await client.get("/api/admin/v1/seckill/suspicious/phones", headers=member)
    assert forbidden.status_code in (401, 403)


@pytest.mark.clock
async def test_the_attempt_reads_no_database_with_every_rule_on(
    client: httpx.AsyncClient,
    member_headers: MemberLogin,
    staff_headers: StaffLogin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock.set_now(NOW)
    ops = await staff_headers(role="ops")
    cutoff = clock.now() + timedelta(days=1)
    session_id, item_id = await _sale(
        client,
        ops,
        starts_in=60,
        require_phone=True,
        joined_before=cutoff.isoformat(),
        min_level=1,
        exclude_flagged=True,
        require_booking=True,
    )
    await member_headers("alice")
    await member_headers("bob")
    await Member.filter(openid__in=["dev_alice", "dev_bob"]).update(phone="13800138000", level=1)
    alice, bob = await member_headers("alice"), await member_headers("bob")
    for member in (alice, bob):
        booked = await client.post(f"/api/v1/seckill/sessions/{session_id}/booking", headers=member)
        assert booked.status_code == 200, booked.text
    await service.warm_session(session_id)
    await fair.flag((await Member.get(openid="dev_bob")).id, "scalper", None)
    clock.set_now(NOW + timedelta(minutes=2))

    connection = connections.get("default")

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the attempt read the database")

    names = ("execute_query", "execute_query_dict", "execute_select", "execute_insert")
    patched = [n for n in names if hasattr(type(connection), n)]
    assert "execute_query" in patched
    for name in patched:
        monkeypatch.setattr(type(connection), name, refuse)
    with pytest.raises(AssertionError):  # the guard holds
        await Member.get(openid="dev_alice")
    assert _won(await _attempt(client, item_id, alice))
    assert _code(await _attempt(client, item_id, bob)) == "SECKILL_MEMBER_FLAGGED"


@pytest.mark.clock
async def test_two_reminder_runs_at_once_send_each_booking_once(
    client: httpx.AsyncClient,
    staff_headers: StaffLogin,
    fake_wechat: FakeWeChat,
    booking_template: str,
) -> None:
    clock.set_now(NOW)
    ops = await staff_headers(role="ops")
    session_id, _item = await _sale(client, ops, starts_in=120)
    for name in ("r0", "r1", "r2", "r3"):
        heads = await _login(name)
        fake_wechat.add_user(f"o_{name}")
        member = await Member.get(openid=f"o_{name}")
        for _ in range(2):  # grants for two messages: only the claim keeps it to one
            await touch_service.record_grants(member.id, [TEMPLATE])
        r = await client.post(f"/api/v1/seckill/sessions/{session_id}/booking", headers=heads)
        assert r.status_code == 200, r.text
    one, two = await asyncio.gather(fair.send_booking_reminders(), fair.send_booking_reminders())
    assert one.sent + two.sent == 4
    assert sorted(m["touser"] for m in fake_wechat.sent) == ["o_r0", "o_r1", "o_r2", "o_r3"]
