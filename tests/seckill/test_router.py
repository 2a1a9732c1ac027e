from __future__ import annotations

from datetime import timedelta

import httpx

from mall.audit.models import AuditLog
from mall.kit import clock
from mall.seckill import service
from tests.conftest import MemberLogin, StaffLogin


def _session_body(
    stock: int = 3, starts_in: int = -60, limit: int = 1, **item: object
) -> dict[str, object]:
    start = clock.now() + timedelta(seconds=starts_in)
    return {
        "name": "Friday 20:00",
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(hours=1)).isoformat(),
        "items": [{"title": "Tea gift box", "stock": stock, "per_member_limit": limit, **item}],
    }


async def test_attempt_reservation_and_sessions(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    admin = await staff_headers()
    created = await client.post(
        "/api/admin/v1/seckill/sessions", json=_session_body(), headers=admin
    )
    assert created.status_code == 201, created.text
    item_id = created.json()["items"][0]["id"]
    alice = await member_headers("alice")
    bob = await member_headers("bob")

    assert (await client.post(f"/api/v1/seckill/items/{item_id}/attempt")).status_code == 401
    # not warmed by anyone yet: the first attempt warms lazily
    r = await client.post(
        f"/api/v1/seckill/items/{item_id}/attempt",
        headers={**alice, "Idempotency-Key": "tap-1", "Accept-Language": "en"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["result"] == "won" and body["message"].startswith("You got it")
    rid = body["reservation_id"]
    again = await client.post(
        f"/api/v1/seckill/items/{item_id}/attempt", headers={**alice, "Idempotency-Key": "tap-1"}
    )
    assert again.json()["reservation_id"] == rid
    limited = await client.post(f"/api/v1/seckill/items/{item_id}/attempt", headers=alice)
    assert limited.json()["result"] == "limit_reached"
    assert limited.json()["message"] == "您已达到该商品的限购数量"

    mine = await client.get(f"/api/v1/seckill/reservations/{rid}", headers=alice)
    assert mine.json()["status"] == "pending"
    theirs = await client.get(f"/api/v1/seckill/reservations/{rid}", headers=bob)
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "RESERVATION_NOT_FOUND"
    await service.drain()
    mine = await client.get(f"/api/v1/seckill/reservations/{rid}", headers=alice)
    assert mine.json()["status"] == "confirmed"
    assert (await client.get(f"/api/v1/seckill/reservations/{rid}", headers=bob)).status_code == 404
    bogus = await client.get("/api/v1/seckill/reservations/nonsense", headers=alice)
    assert bogus.status_code == 404

    listing = (await client.get("/api/v1/seckill/sessions")).json()
    assert listing[0]["state"] == "live"
    assert listing[0]["items"][0]["stock_left"] == 2

    missing = await client.post("/api/v1/seckill/items/999999/attempt", headers=alice)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "SECKILL_ITEM_NOT_FOUND"


async def test_admin_session_lifecycle(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    ops = await staff_headers(role="ops")
    bad = _session_body()
    bad["ends_at"] = bad["starts_at"]
    r = await client.post("/api/admin/v1/seckill/sessions", json=bad, headers=ops)
    assert r.status_code == 422 and r.json()["error"]["code"] == "SECKILL_WINDOW_INVALID"
    r = await client.post(
        "/api/admin/v1/seckill/sessions", json=_session_body(stock=-1), headers=ops
    )
    assert r.status_code == 422

    created = await client.post(
        "/api/admin/v1/seckill/sessions",
        json=_session_body(stock=5, starts_in=600, cash_price_fen=990),
        headers=ops,
    )
    session_id = created.json()["id"]
    item_id = created.json()["items"][0]["id"]
    assert created.json()["state"] == "upcoming"
    warm = await client.post(f"/api/admin/v1/seckill/sessions/{session_id}/warm", headers=ops)
    assert warm.json()["items"][0]["warm"] is True

    alice = await member_headers("alice")
    early = await client.post(f"/api/v1/seckill/items/{item_id}/attempt", headers=alice)
    assert early.json()["result"] == "not_started"
    clock.advance(timedelta(seconds=601))
    assert (await client.post(f"/api/v1/seckill/items/{item_id}/attempt", headers=alice)).json()[
        "result"
    ] == "won"

    # stock: may grow, may not drop below what was taken
    r = await client.patch(f"/api/admin/v1/seckill/items/{item_id}", json={"stock": 0}, headers=ops)
    assert r.status_code == 409 and r.json()["error"]["code"] == "SECKILL_STOCK_BELOW_TAKEN"
    r = await client.patch(f"/api/admin/v1/seckill/items/{item_id}", json={"stock": 8}, headers=ops)
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["stock_left"] == 7

    r = await client.delete(f"/api/admin/v1/seckill/sessions/{session_id}", headers=ops)
    assert r.status_code == 409 and r.json()["error"]["code"] == "SECKILL_SESSION_HAS_WINNERS"
    await service.drain()
    winners = await client.get(f"/api/admin/v1/seckill/items/{item_id}/winners", headers=ops)
    assert [w["status"] for w in winners.json()["items"]] == ["pending_payment"]
    live = (await client.get(f"/api/admin/v1/seckill/sessions/{session_id}", headers=ops)).json()
    assert live["items"][0]["held"] == 1 and live["items"][0]["stock_left"] == 7
    check = await client.get(f"/api/admin/v1/seckill/sessions/{session_id}/reconcile", headers=ops)
    assert check.json()[0]["ok"] is True, check.json()

    closed = await client.post(f"/api/admin/v1/seckill/sessions/{session_id}/close", headers=ops)
    assert closed.json()["state"] == "closed"
    bob = await member_headers("bob")
    after = await client.post(f"/api/v1/seckill/items/{item_id}/attempt", headers=bob)
    assert after.json()["result"] == "ended"
    r = await client.patch(
        f"/api/admin/v1/seckill/sessions/{session_id}", json={"name": "x"}, headers=ops
    )
    assert r.status_code == 409
    actions = set(await AuditLog.all().values_list("action", flat=True))
    assert {
        "seckill.session.create",
        "seckill.session.warm",
        "seckill.item.update",
        "seckill.session.close",
    } <= actions
    assert (await client.get("/api/v1/seckill/sessions")).json() == []


async def test_admin_delete_session_without_winners(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    admin = await staff_headers()
    created = await client.post(
        "/api/admin/v1/seckill/sessions", json=_session_body(), headers=admin
    )
    session_id = created.json()["id"]
    await client.post(f"/api/admin/v1/seckill/sessions/{session_id}/warm", headers=admin)
    r = await client.delete(f"/api/admin/v1/seckill/sessions/{session_id}", headers=admin)
    assert r.status_code == 204
    r = await client.get(f"/api/admin/v1/seckill/sessions/{session_id}", headers=admin)
    assert r.status_code == 404 and r.json()["error"]["code"] == "SECKILL_SESSION_NOT_FOUND"


async def test_attempt_token_checks_survive_the_token_cache(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    admin = await staff_headers()
    created = await client.post(
        "/api/admin/v1/seckill/sessions", json=_session_body(stock=5, limit=5), headers=admin
    )
    item_id = created.json()["items"][0]["id"]
    alice = await member_headers("alice")
    path = f"/api/v1/seckill/items/{item_id}/attempt"
    assert (await client.post(path, headers=alice)).json()["result"] == "won"
    token = alice["Authorization"].split()[1]
    tampered = {"Authorization": "Bearer " + token[:-2] + ("xx" if token[-2:] != "xx" else "yy")}
    r = await client.post(path, headers=tampered)
    assert r.status_code == 401 and r.json()["error"]["code"] == "TOKEN_INVALID"
    staff_token = {"Authorization": admin["Authorization"]}
    assert (await client.post(path, headers=staff_token)).status_code == 401
    clock.advance(timedelta(hours=3))  # the cached token has expired meanwhile
    r = await client.post(path, headers=alice)
    assert r.status_code == 401 and r.json()["error"]["code"] == "TOKEN_EXPIRED"


async def test_attempt_fast_path_answers_like_the_route(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    """The attempt is answered by a raw ASGI handler before FastAPI; it keeps the error
    envelope, the language, the request id and the metrics label of the route."""
    admin = await staff_headers()
    created = await client.post(
        "/api/admin/v1/seckill/sessions", json=_session_body(stock=0), headers=admin
    )
    item_id = created.json()["items"][0]["id"]
    alice = await member_headers("alice")
    path = f"/api/v1/seckill/items/{item_id}/attempt"

    r = await client.post(path, headers={**alice, "Idempotency-Key": "k" * 129})
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert r.json()["error"]["fields"] == [
        {"field": "header.Idempotency-Key", "message": "最多 128 个字符", "type": "string_too_long"}
    ]
    r = await client.post(path, headers={"Accept-Language": "en", "X-Request-ID": "rid-7"})
    assert r.status_code == 401 and r.json()["error"]["message"] == "Please log in"
    assert r.headers["x-request-id"] == "rid-7"
    r = await client.post(path, headers={**alice, "Accept-Language": "en"})
    assert r.status_code == 200 and r.json()["result"] == "sold_out"
    assert r.headers["content-type"] == "application/json"
    unknown = await client.post("/api/v1/seckill/items/999999/attempt", headers=alice)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "SECKILL_ITEM_NOT_FOUND"
    # a GET, or another path, still reaches FastAPI
    assert (await client.get(path, headers=alice)).status_code == 405
    metrics = (await client.get("/metrics")).text
    assert 'route="/api/v1/seckill/items/{item_id}/attempt"' in metrics
