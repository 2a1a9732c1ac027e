from __future__ import annotations

import httpx

from tests.conftest import MemberLogin

ADDRESS = {
    "name": "李四",
    "phone": "13900139000",
    "region": "浙江省 杭州市 西湖区",
    "detail": "2号",
}


async def test_addresses_crud_and_one_default(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    h = await member_headers("addr")
    first = await client.post("/api/v1/addresses", json=ADDRESS, headers=h)
    assert first.status_code == 201 and first.json()["is_default"] is True
    second = await client.post(
        "/api/v1/addresses", json={**ADDRESS, "detail": "3号", "is_default": True}, headers=h
    )
    listed = (await client.get("/api/v1/addresses", headers=h)).json()
    assert [a["id"] for a in listed] == [second.json()["id"], first.json()["id"]]
    assert [a["is_default"] for a in listed] == [True, False]

    fid = first.json()["id"]
    r = await client.put(
        f"/api/v1/addresses/{fid}", json={**ADDRESS, "detail": "4号", "is_default": True}, headers=h
    )
    assert r.status_code == 200 and r.json()["detail"] == "4号" and r.json()["is_default"]
    defaults = [
        a for a in (await client.get("/api/v1/addresses", headers=h)).json() if a["is_default"]
    ]
    assert [a["id"] for a in defaults] == [fid]

    assert (await client.delete(f"/api/v1/addresses/{fid}", headers=h)).status_code == 204
    left = (await client.get("/api/v1/addresses", headers=h)).json()
    assert [a["id"] for a in left] == [second.json()["id"]] and left[0]["is_default"]
    r = await client.get(f"/api/v1/addresses/{fid}", headers=h)
    assert r.status_code == 404 and r.json()["error"]["code"] == "ADDRESS_NOT_FOUND"


async def test_addresses_are_private_and_validated(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    alice = await member_headers("alice-a")
    bob = await member_headers("bob-a")
    mine = (await client.post("/api/v1/addresses", json=ADDRESS, headers=alice)).json()
    assert (await client.get(f"/api/v1/addresses/{mine['id']}", headers=bob)).status_code == 404
    assert (await client.delete(f"/api/v1/addresses/{mine['id']}", headers=bob)).status_code == 404
    assert (await client.get("/api/v1/addresses", headers=bob)).json() == []
    bad = await client.post("/api/v1/addresses", json={**ADDRESS, "phone": "call me"}, headers=bob)
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "body.phone"
    assert (await client.get("/api/v1/addresses")).status_code == 401


async def test_address_limit(client: httpx.AsyncClient, member_headers: MemberLogin) -> None:
    h = await member_headers("hoarder")
    for i in range(20):
        r = await client.post("/api/v1/addresses", json={**ADDRESS, "detail": f"{i}"}, headers=h)
        assert r.status_code == 201
    r = await client.post("/api/v1/addresses", json=ADDRESS, headers={**h, "Accept-Language": "en"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "ADDRESS_LIMIT_REACHED"
    assert r.json()["error"]["message"] == "You can keep at most 20 delivery addresses"
