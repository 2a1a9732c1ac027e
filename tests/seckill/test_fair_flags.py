"""The flags list pages on: each flag carries its id, the `before_id` of the next page
(the console's "load more" on the fair-sales page)."""

from __future__ import annotations

import httpx

from mall.kit import clock
from mall.members.models import Member
from mall.seckill import fair
from mall.seckill.models import MemberFlag
from tests.conftest import StaffLogin
from tests.factories import make_member


async def test_flags_page_on_by_their_ids(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    ops = await staff_headers(role="ops")
    members = [await make_member(f"scalper{i}") for i in range(5)]
    for member in members:
        await fair.flag(member.id, f"farm {member.id}", None)
    url = "/api/admin/v1/seckill/flags"
    page = (await client.get(url, params={"limit": 2}, headers=ops)).json()
    assert [f["member_id"] for f in page] == [members[4].id, members[3].id]
    flags = list(page)
    while page:
        before = page[-1]["id"]
        page = (await client.get(url, params={"limit": 2, "before_id": before}, headers=ops)).json()
        assert all(f["id"] < before for f in page)
        flags += page
    assert [f["member_id"] for f in flags] == [m.id for m in reversed(members)]

    # changing a flag's reason keeps its place (and id)
    again = await client.post(
        f"/api/admin/v1/seckill/members/{members[0].id}/flag", json={"reason": "x"}, headers=ops
    )
    assert again.status_code == 200
    assert again.json()["id"] == flags[-1]["id"] and again.json()["reason"] == "x"


async def test_flags_say_who_each_member_is(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    ops = await staff_headers(role="ops")
    named = await make_member("黄牛甲", phone="13912345678")
    no_phone = await make_member("scalper_b")
    deleted = await make_member("gone", phone="13700001111")
    for member in (named, no_phone, deleted):
        await fair.flag(member.id, "farm", None)
    # an account deleted on request, and a flag whose member row is gone altogether
    await Member.filter(id=deleted.id).update(deleted_at=clock.now(), nickname="", phone=None)
    vanished = await MemberFlag.create(
        member_id=deleted.id + 1000, reason="old", flagged_by="x", flagged_at=clock.now()
    )

    listed = (await client.get("/api/admin/v1/seckill/flags", headers=ops)).json()
    who = {f["member_id"]: (f["member_nickname"], f["member_phone"]) for f in listed}
    assert who == {
        named.id: ("黄牛甲", "139****5678"),  # masked, never the full number
        no_phone.id: ("scalper_b", None),
        deleted.id: (None, None),
        vanished.member_id: (None, None),
    }
    flagged = await client.post(
        f"/api/admin/v1/seckill/members/{named.id}/flag", json={"reason": "again"}, headers=ops
    )
    assert flagged.status_code == 200, flagged.text
    assert (flagged.json()["member_nickname"], flagged.json()["member_phone"]) == (
        "黄牛甲",
        "139****5678",
    )


async def test_flags_among_more_ids_than_one_statement_takes() -> None:
    # the largest suspicious page (200 groups of 200 accounts) asks about 40,000 ids:
    # more than one statement's parameters on SQLite (32,766) and PostgreSQL (32,767)
    flagged = [await make_member(f"farm{i}") for i in range(2)]
    for member in flagged:
        await fair.flag(member.id, "farm", None)
    ids = [*range(10_000_000, 10_040_000), *(m.id for m in flagged)]
    assert await fair.flagged_among(ids) == {m.id for m in flagged}
