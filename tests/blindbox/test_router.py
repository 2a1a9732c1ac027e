"""The shopper and ops HTTP surface of blind boxes."""

from __future__ import annotations

import csv
import io
import json

import httpx

from mall.blindbox import service
from mall.blindbox.models import BlindBoxDraw
from mall.coupons import service as coupons_service
from mall.points import service as points_service
from tests.conftest import MemberLogin, StaffLogin

SERIES = {
    "name": "Tea party",
    "points_cost": 100,
    "description": "Six figurines and a coupon",
    "rules": "One figurine or coupon per draw.",
    "daily_draw_cap": 5,
    "guarantee_tier": "secret",
    "guarantee_every": 10,
    "prizes": [
        {"name": "Cup", "tier": "common", "weight": 600, "value_fen": 3900},
        {"name": "Pot", "tier": "common", "weight": 300, "stock": 100, "value_fen": 5900},
        {"name": "Golden pot", "tier": "secret", "weight": 100, "stock": 2, "value_fen": 19900},
    ],
}


async def _shopper(
    client: httpx.AsyncClient, member_headers: MemberLogin, name: str, points: int = 1000
) -> dict[str, str]:
    headers = await member_headers(name)
    r = await client.patch("/api/v1/me", json={"birthday": "1995-02-03"}, headers=headers)
    member_id = r.json()["id"]
    await points_service.earn(member_id, points, idempotency_key=f"t:{member_id}", reason="test")
    return headers


async def _series(client: httpx.AsyncClient, ops: dict[str, str], **changes: object) -> int:
    r = await client.post("/api/admin/v1/blind-boxes", json={**SERIES, **changes}, headers=ops)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def test_disclosure_before_any_draw(
    client: httpx.AsyncClient, staff_headers: StaffLogin, member_headers: MemberLogin
) -> None:
    ops = await staff_headers("ops")
    series_id = await _series(client, ops)
    # a draft is not on offer
    assert (await client.get("/api/v1/blind-boxes")).json() == []
    assert (await client.get(f"/api/v1/blind-boxes/{series_id}")).status_code == 404
    r = await client.patch(
        f"/api/admin/v1/blind-boxes/{series_id}", json={"status": "on_sale"}, headers=ops
    )
    assert r.status_code == 200, r.text

    cards = (await client.get("/api/v1/blind-boxes")).json()
    assert [c["id"] for c in cards] == [series_id] and cards[0]["is_open"]
    r = await client.get(f"/api/v1/blind-boxes/{series_id}", headers={"Accept-Language": "en"})
    assert r.status_code == 200
    detail = r.json()
    assert detail["total_weight"] == 1000 and detail["me"] is None
    assert [
        (p["name"], p["probability"], p["stock_left"], p["value_fen"]) for p in detail["prizes"]
    ] == [
        ("Cup", 0.6, None, 3900),
        ("Pot", 0.3, 100, 5900),
        ("Golden pot", 0.1, 2, 19900),
    ]
    assert {t["tier"]: t["probability"] for t in detail["tiers"]} == {"common": 0.9, "secret": 0.1}
    assert detail["guarantee"] == {
        "tier": "secret",
        "every": 10,
        "active": True,
        "text": "At the latest on draw 10 since your last secret prize, you get a secret prize.",
    }
    assert detail["daily_draw_cap"] == 5 and detail["min_age"] == 8
    assert detail["rules"] == SERIES["rules"]
    assert detail["sold_out_rule"] == service.SOLD_OUT_RULE  # how sold-out prizes are handled
    zh = (await client.get(f"/api/v1/blind-boxes/{series_id}")).json()
    assert zh["guarantee"]["text"] == "自上次抽中 secret 级奖品起，最迟第 10 次必得 secret 级奖品。"

    headers = await _shopper(client, member_headers, "dora")
    mine = (await client.get(f"/api/v1/blind-boxes/{series_id}", headers=headers)).json()["me"]
    assert mine == {"draws_today": 0, "draws_left_today": 5, "pity_count": 0, "guarantee_in": 10}


async def test_draw_with_idempotency_key_draws_once(
    client: httpx.AsyncClient, staff_headers: StaffLogin, member_headers: MemberLogin
) -> None:
    ops = await staff_headers("ops")
    series_id = await _series(client, ops, status="on_sale")
    headers = await _shopper(client, member_headers, "erin", points=300)
    url = f"/api/v1/blind-boxes/{series_id}/draw"
    first = await client.post(url, headers={**headers, "Idempotency-Key": "tap-1"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["status"] == "pending" and body["points_cost"] == 100
    assert body["draw_id"].startswith(f"{series_id}-")
    assert body["prize"]["name"] in {"Cup", "Pot", "Golden pot"}
    assert body["draws_today"] == 1 and body["fulfilment_status"] is None
    replay = await client.post(url, headers={**headers, "Idempotency-Key": "tap-1"})
    assert replay.status_code == 200 and replay.json() == body
    status_url = f"/api/v1/blind-boxes/draws/{body['draw_id']}"
    pending = (await client.get(status_url, headers=headers)).json()
    assert pending["status"] == "pending" and pending["prize"] == body["prize"]
    assert await service.drain() == 1
    assert await BlindBoxDraw.all().count() == 1
    me = (await client.get("/api/v1/me", headers=headers)).json()
    assert me["points_balance"] == 200
    done = (await client.get(status_url, headers=headers)).json()
    assert (done["status"], done["fulfilment_status"]) == ("confirmed", "pending")
    assert done["prize"] == body["prize"] and done["created_at"]
    # a retry after it was recorded still answers the same draw, and draws nothing
    replay = await client.post(url, headers={**headers, "Idempotency-Key": "tap-1"})
    assert replay.json()["draw_id"] == body["draw_id"]
    assert await service.drain() == 0
    other = await client.get(status_url, headers=await _shopper(client, member_headers, "zed"))
    assert other.status_code == 404 and other.json()["error"]["code"] == "DRAW_NOT_FOUND"

    # a new key is a new draw; the member's history lists both
    second = await client.post(url, headers={**headers, "Idempotency-Key": "tap-2"})
    assert second.status_code == 200 and second.json()["draw_id"] != body["draw_id"]
    await service.drain()
    history = (await client.get("/api/v1/blind-boxes/draws", headers=headers)).json()
    assert [d["draw_id"] for d in history["items"]] == [second.json()["draw_id"], body["draw_id"]]
    mine = (await client.get(f"/api/v1/blind-boxes/{series_id}", headers=headers)).json()["me"]
    assert mine["draws_today"] == 2 and mine["draws_left_today"] == 3


async def test_draw_refusals_are_clear_and_replayed(
    client: httpx.AsyncClient, staff_headers: StaffLogin, member_headers: MemberLogin
) -> None:
    ops = await staff_headers("ops")
    series_id = await _series(client, ops, status="on_sale", daily_draw_cap=1)
    url = f"/api/v1/blind-boxes/{series_id}/draw"
    assert (await client.post(url)).status_code == 401

    no_birthday = await member_headers("fred")
    r = await client.post(url, headers={**no_birthday, "Accept-Language": "en"})
    assert r.status_code == 403
    assert r.json()["error"] == {
        "code": "BIRTHDAY_REQUIRED",
        "message": "Please add your birthday to your profile before drawing",
    }

    poor = await _shopper(client, member_headers, "gina", points=50)
    r = await client.post(url, headers={**poor, "Idempotency-Key": "k", "Accept-Language": "en"})
    assert r.status_code == 200 and r.json()["status"] == "pending"
    assert await service.drain() == 1
    again = await client.post(url, headers={**poor, "Idempotency-Key": "k"})
    assert again.json()["draw_id"] == r.json()["draw_id"]  # the same draw, not a new one
    status_url = f"/api/v1/blind-boxes/draws/{r.json()['draw_id']}"
    released = (await client.get(status_url, headers={**poor, "Accept-Language": "en"})).json()
    assert (released["status"], released["release_reason"]) == ("released", "not_enough_points")
    assert released["message"] == (
        "You did not have enough points for this draw: it was cancelled and nothing was spent."
    )
    mine = (await client.get(f"/api/v1/blind-boxes/{series_id}", headers=poor)).json()["me"]
    assert mine["draws_today"] == 0  # the released draw does not count toward the cap

    rich = await _shopper(client, member_headers, "hana")
    assert (await client.post(url, headers=rich)).status_code == 200
    r = await client.post(url, headers=rich)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "DAILY_DRAW_CAP_REACHED"
    assert r.json()["error"]["message"] == "今日 1 次抽取机会已用完，请明天再来"


async def test_admin_manages_series_prizes_stock_and_exports_the_log(
    client: httpx.AsyncClient, staff_headers: StaffLogin, member_headers: MemberLogin
) -> None:
    ops = await staff_headers("ops")
    assert (await client.get("/api/admin/v1/blind-boxes")).status_code == 401
    assert (
        await client.post(
            "/api/admin/v1/blind-boxes",
            json={**SERIES, "guarantee_every": None},
            headers=ops,
        )
    ).json()["error"]["code"] == "GUARANTEE_INVALID"
    bad_age = await client.post(
        "/api/admin/v1/blind-boxes", json={**SERIES, "min_age": 6}, headers=ops
    )
    assert bad_age.status_code == 422  # never under 8
    series_id = await _series(client, ops, status="on_sale")
    base = f"/api/admin/v1/blind-boxes/{series_id}"

    coupon_prize = {"name": "Coupon 10", "kind": "coupon", "coupon_template_id": 7,
                    "tier": "common", "weight": 0, "value_fen": 1000}  # fmt: skip
    r = await client.post(f"{base}/prizes", json=coupon_prize, headers=ops)
    assert r.status_code == 422 and r.json()["error"] == {
        "code": "PRIZE_COUPON_TEMPLATE_UNKNOWN",
        "message": "优惠券模板 7 不存在",
        "details": {"template_id": 7},
    }
    template = await coupons_service.create_template({"name": "10 off", "kind": "cash"})
    r = await client.post(
        f"{base}/prizes", json={**coupon_prize, "coupon_template_id": template.id}, headers=ops
    )
    assert r.status_code == 201, r.text
    coupon = next(p for p in r.json()["prizes"] if p["name"] == "Coupon 10")
    assert coupon["stock"] is None and coupon["stock_left"] is None
    golden = next(p for p in r.json()["prizes"] if p["name"] == "Golden pot")

    r = await client.post(
        f"{base}/prizes/{golden['id']}/stock",
        json={"delta": 3, "reason": "found a box"},
        headers={**ops, "Idempotency-Key": "restock-1"},
    )
    assert r.status_code == 200, r.text
    r = await client.post(
        f"{base}/prizes/{golden['id']}/stock",
        json={"delta": 3, "reason": "found a box"},
        headers={**ops, "Idempotency-Key": "restock-1"},
    )
    golden = next(p for p in r.json()["prizes"] if p["id"] == golden["id"])
    assert (golden["stock"], golden["stock_left"]) == (5, 5)  # the retry added nothing

    headers = await _shopper(client, member_headers, "ivan")
    for _ in range(3):
        r = await client.post(f"/api/v1/blind-boxes/{series_id}/draw", headers=headers)
        assert r.status_code == 200, r.text
    assert await service.drain() == 3
    view = (await client.get(base, headers=ops)).json()
    assert view["draws"] == 3 and sum(p["drawn"] for p in view["prizes"]) == 3

    drawn_prize = next(p for p in view["prizes"] if p["drawn"])
    r = await client.delete(f"{base}/prizes/{drawn_prize['id']}", headers=ops)
    assert r.status_code == 409 and r.json()["error"]["code"] == "PRIZE_HAS_DRAWS"
    assert (await client.delete(base, headers=ops)).json()["error"]["code"] == "SERIES_HAS_DRAWS"
    assert (await client.delete(f"{base}/prizes/{coupon['id']}", headers=ops)).status_code == 204
    r = await client.patch(f"{base}/prizes/{drawn_prize['id']}", json={"weight": 0}, headers=ops)
    assert r.status_code == 200

    page = (await client.get(f"{base}/draws?size=2", headers=ops)).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = (await client.get(f"{base}/draws?cursor={page['next_cursor']}", headers=ops)).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None

    export = await client.get(f"{base}/draws.csv", headers=ops)
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert len(rows) == 3
    for row in rows:  # anyone with the export can re-derive every result
        logged = {
            "random_value": int(row["random_value"]),
            "probability_table": json.loads(row["probability_table"]),
        }
        assert service.rederive(logged) == int(row["prize_id"])
    assert (
        await client.get("/api/admin/v1/blind-boxes/999/draws.csv", headers=ops)
    ).status_code == 404

    audit = (await client.get("/api/admin/v1/audit-log", headers=await staff_headers())).json()
    actions = {a["action"] for a in audit}
    assert {
        "blindbox.series.create",
        "blindbox.prize.create",
        "blindbox.prize.stock",
        "blindbox.prize.update",
        "blindbox.prize.delete",
    } <= actions
