"""Changing level thresholds re-levels members by growth value, up and down, once per
rules version (the leased `points.relevel` job)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from mall.kit import clock
from mall.members.models import Member
from mall.points import service
from mall.points.models import LevelChange
from mall.points.tasks import JOBS
from tests.conftest import MemberLogin, StaffLogin
from tests.points.helpers import assert_ledger_ok, new_member

NOON = datetime(2024, 2, 29, 4, tzinfo=UTC)


async def _grow(member: Member, growth: int) -> None:
    await service.earn(member.id, growth, idempotency_key=f"g:{member.id}", reason="t")


async def test_new_thresholds_move_members_up_and_down_once(
    client: httpx.AsyncClient, staff_headers: StaffLogin, member_headers: MemberLogin
) -> None:
    clock.set_now(NOON)
    admin = await staff_headers("admin")
    headers = await member_headers("riser")
    riser = await Member.get(openid="dev_riser")
    newcomer, faller, diamond, gone = [await new_member() for _ in range(4)]
    await _grow(riser, 450)
    await _grow(faller, 2500)
    await _grow(diamond, 6000)
    await _grow(gone, 2500)
    await Member.filter(id=gone.id).update(deleted_at=NOON)
    levels = {m.id: m.level for m in await Member.all()}
    assert [levels[m.id] for m in (newcomer, riser, faller, diamond)] == [0, 0, 2, 3]
    job = next(j for j in JOBS if j.name == "points.relevel")
    assert await job.run() == 0  # the defaults: everyone is where growth puts them
    assert await job.run() is None  # done for this version

    current = (await client.get("/api/admin/v1/rules", headers=admin)).json()
    rules: dict[str, Any] = current["rules"]
    for level, threshold in zip(rules["levels"], [0, 400, 2600, 5500], strict=True):
        level["threshold"] = threshold
    r = await client.put(
        "/api/admin/v1/rules",
        json={"rules": rules, "base_version": current["version"]},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    version = r.json()["version"]

    assert await job.run() == 2
    levels = {m.id: m.level for m in await Member.all()}
    assert [levels[m.id] for m in (newcomer, riser, faller, diamond)] == [0, 1, 1, 3]
    assert levels[gone.id] == 2  # deleted accounts are left as they are
    changes = await LevelChange.filter(reason="rules").order_by("member_id")
    assert [(c.member_id, c.from_level, c.to_level, c.rules_version) for c in changes] == [
        (riser.id, 0, 1, version),
        (faller.id, 2, 1, version),
    ]
    assert await job.run() is None
    assert await service.relevel_members() == 0
    # what the member is shown follows at once (and so does the price: it reads the level)
    shown = (await client.get("/api/v1/points", headers=headers)).json()
    assert shown["level"] == 1 and shown["discount_percent"] == 98
    assert shown["next_level"]["threshold"] == 2600 and shown["next_level"]["growth_needed"] == 2150
    # growth earned afterwards moves levels by the new thresholds
    await service.earn(riser.id, 2200, idempotency_key="more", reason="t")
    assert (await Member.get(id=riser.id)).level == 2
    await assert_ledger_ok()


async def test_removing_a_level_moves_its_members_down() -> None:
    clock.set_now(NOON)
    diamond = await new_member()
    await _grow(diamond, 6000)
    rules = await service.get_rules()
    rules.levels = rules.levels[:3]

    class Admin:
        id = 1
        username = "admin"

    await service.save_rules(rules, staff=Admin(), base_version=None)
    assert await service.relevel_if_rules_changed() == 1
    assert (await Member.get(id=diamond.id)).level == 2
