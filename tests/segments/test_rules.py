"""Segment rules return exactly the matching members; preview and CRUD over HTTP."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from mall.kit import clock
from mall.members.models import Member
from mall.segments import service
from mall.segments.schemas import Rules
from tests.conftest import StaffLogin
from tests.segments.helpers import CASES, NOW, crowd


@pytest.mark.clock
async def test_every_rule_matches_exactly_the_expected_members() -> None:
    clock.set_now(NOW)
    people = await crowd()
    name_of = {m.id: name for name, m in people.items()}
    wrong = []
    for rules, expected in CASES:
        got = {name_of[i] for i in await service.evaluate(Rules.model_validate({"all": rules}))}
        if got != expected:
            wrong.append(f"{rules}: expected {sorted(expected)}, got {sorted(got)}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.clock
async def test_auto_tags_are_kept_apart_from_ops_tags_and_follow_the_data() -> None:
    clock.set_now(NOW)
    people = await crowd()
    added, removed, total = await service.refresh_auto_tags()
    assert (removed, added) == (0, total)
    tags = {name: set(await service.auto_tags_of(m.id)) for name, m in people.items()}
    assert tags == {
        "a": {"auto:repeat_buyer", "auto:birthday_this_month", "auto:bound_tmall"},
        "b": {"auto:bound_jd"},
        "c": {"auto:repeat_buyer", "auto:bound_tmall"},
        "d": set(),
        "e": {"auto:birthday_this_month", "auto:bound_douyin"},
    }
    # rules see auto tags next to ops tags
    rules = Rules.model_validate({"all": [{"field": "tags", "all": ["auto:repeat_buyer", "vip"]}]})
    assert await service.evaluate(rules) == sorted([people["a"].id, people["c"].id])
    # a refresh is idempotent, and April drops the March birthdays
    assert await service.refresh_auto_tags() == (0, 0, total)
    clock.set_now(NOW.replace(month=4))
    assert await service.refresh_auto_tags() == (0, 2, total - 2)
    assert "auto:birthday_this_month" not in await service.auto_tags_of(people["a"].id)
    # the ops tags were never touched
    assert (await Member.get(id=people["c"].id)).tags == ["vip", "friend"]
    assert (await Member.get(id=people["a"].id)).tags == ["vip"]


@pytest.mark.nodb
@pytest.mark.parametrize(
    "bad",
    [
        {"field": "purchase_count"},  # no bound
        {"field": "level", "gte": 3, "lte": 1},
        {"field": "birthday_month", "months": [13]},
        {"field": "last_purchase", "after": "2025-02-01", "before": "2025-01-01"},
        {"field": "tags"},
        {"field": "favourite_colour", "in": ["red"]},
        {"field": "points_balance", "gte": -1},
    ],
)
def test_bad_predicates_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Rules.model_validate({"all": [bad]})


async def test_preview_and_crud_routes(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    clock.set_now(NOW)
    people = await crowd()
    ops = await staff_headers("ops")
    rules = {"all": [{"field": "tags", "any": ["vip"]}, {"field": "level", "in": [2, 3]}]}
    r = await client.post(
        "/api/admin/v1/segments/preview", json={"rules": rules, "sample_size": 1}, headers=ops
    )
    assert r.status_code == 200, r.text
    assert r.json()["count"] == 2
    assert [m["id"] for m in r.json()["sample"]] == [people["c"].id]  # newest first

    bad = {"rules": {"all": [{"field": "level"}]}}
    r = await client.post("/api/admin/v1/segments/preview", json=bad, headers=ops)
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert r.json()["error"]["fields"]

    r = await client.post(
        "/api/admin/v1/segments", json={"name": "VIP 2-3", "rules": rules}, headers=ops
    )
    assert r.status_code == 201, r.text
    segment = r.json()
    assert segment["last_count"] == 2
    assert segment["rules"]["all"][1] == {"field": "level", "in": [2, 3]}
    sid = segment["id"]

    r = await client.patch(
        f"/api/admin/v1/segments/{sid}",
        json={"rules": {"all": [{"field": "purchase_count", "gte": 5}]}},
        headers=ops,
    )
    assert r.status_code == 200, r.text
    assert r.json()["last_count"] == 2  # a and c
    r = await client.get(f"/api/admin/v1/segments/{sid}/members?size=5", headers=ops)
    assert {m["id"] for m in r.json()["sample"]} == {people["a"].id, people["c"].id}
    r = await client.get("/api/admin/v1/segments", headers=ops)
    assert [s["id"] for s in r.json()] == [sid]
    r = await client.delete(f"/api/admin/v1/segments/{sid}", headers=ops)
    assert r.json()["active"] is False
    r = await client.get("/api/admin/v1/segments/999", headers=ops)
    assert r.status_code == 404 and r.json()["error"]["code"] == "SEGMENT_NOT_FOUND"
    # shoppers never see segments
    assert (await client.get("/api/admin/v1/segments")).status_code == 401
