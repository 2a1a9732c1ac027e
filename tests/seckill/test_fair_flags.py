"""The flags list pages on: each flag carries its id, the `before_id` of the next page
(the console's "load more" on the fair-sales page)."""

from __future__ import annotations

import httpx

from mall.seckill import fair
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
