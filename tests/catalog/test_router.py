from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from mall.catalog import service
from mall.catalog.schemas import CategoryIn, ProductIn
from mall.kit import clock
from mall.members.models import Member
from tests.conftest import MemberLogin


async def seed() -> dict[str, int]:
    care = await service.create_category(None, CategoryIn(name="洗护", sort_order=1))
    laundry = await service.create_category(None, CategoryIn(name="洗衣液", parent_id=care.id))
    wear = await service.create_category(None, CategoryIn(name="服饰", sort_order=2))
    ids = {"care": care.id, "laundry": laundry.id, "wear": wear.id}

    async def product(name: str, category: int, *, on_shelf: bool = True, stock: int = 5) -> int:
        body: dict[str, Any] = {
            "name": name,
            "category_id": category,
            "list_price": 5990,
            "on_shelf": on_shelf,
            "images": [f"/static/uploads/ab/{name}-750.jpg"],
            "delivery_modes": ["express", "same_city"],
            "skus": [{"specs": {"规格": "2kg"}, "price": 5990, "stock": stock, "code": name}],
        }
        return (await service.create_product(None, ProductIn.model_validate(body))).id

    ids["detergent"] = await product("植萃洗衣液", laundry.id)
    ids["softener"] = await product("柔顺剂", laundry.id, stock=0)
    ids["shampoo"] = await product("洗发水", care.id)
    ids["hidden"] = await product("下架洗衣液", laundry.id, on_shelf=False)
    ids["tee"] = await product("纯棉T恤", wear.id)
    return ids


async def test_category_tree(client: httpx.AsyncClient) -> None:
    await seed()
    r = await client.get("/api/v1/catalog/categories")
    assert r.status_code == 200
    tree = r.json()
    assert [n["name"] for n in tree] == ["洗护", "服饰"]
    assert [c["name"] for c in tree[0]["children"]] == ["洗衣液"]
    assert tree[1]["children"] == []


async def test_list_is_newest_first_paginated_and_hides_off_shelf(
    client: httpx.AsyncClient,
) -> None:
    ids = await seed()
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"size": 2}
        if cursor:
            params["cursor"] = cursor
        r = await client.get("/api/v1/catalog/products", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= 2
        seen += [p["id"] for p in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 2
    on_shelf = [ids[k] for k in ("detergent", "softener", "shampoo", "tee")]
    assert seen == sorted(on_shelf, reverse=True)
    assert ids["hidden"] not in seen
    bad = await client.get("/api/v1/catalog/products", params={"cursor": "abc"})
    assert bad.status_code == 422


async def test_search_and_category_filter(client: httpx.AsyncClient) -> None:
    ids = await seed()

    async def names(**params: Any) -> list[str]:
        r = await client.get("/api/v1/catalog/products", params=params)
        assert r.status_code == 200, r.text
        return [p["name"] for p in r.json()["items"]]

    assert await names(q="洗衣液") == ["植萃洗衣液"]  # the off-shelf one stays hidden
    assert await names(q="t恤") == ["纯棉T恤"]  # case-insensitive
    assert await names(q="%") == []  # LIKE wildcards are literal
    assert set(await names(category=ids["care"])) == {"植萃洗衣液", "柔顺剂", "洗发水"}
    assert set(await names(category=ids["laundry"])) == {"植萃洗衣液", "柔顺剂"}
    assert await names(category=ids["laundry"], q="柔顺") == ["柔顺剂"]
    assert await names(category=999999) == []


async def test_product_shape_anonymous_and_logged_in(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    ids = await seed()
    clock.set_now(datetime(2026, 3, 10, 4, 0, tzinfo=UTC))  # not member day
    anonymous = (await client.get("/api/v1/catalog/products")).json()["items"]
    member = await member_headers("alice")
    logged_in = await client.get("/api/v1/catalog/products", headers=member)
    assert logged_in.status_code == 200
    assert logged_in.json()["items"] == anonymous
    by_id = {p["id"]: p for p in anonymous}
    detergent = by_id[ids["detergent"]]
    assert detergent["list_price"] == 5990 and detergent["price_today"] == 5990
    assert detergent["cover"] == "/static/uploads/ab/植萃洗衣液-750.jpg"
    assert detergent["delivery_modes"] == ["express", "same_city"]
    assert detergent["sold_out"] is False
    assert by_id[ids["softener"]]["sold_out"] is True

    detail = await client.get(f"/api/v1/catalog/products/{ids['detergent']}", headers=member)
    assert detail.status_code == 200
    body = detail.json()
    assert body["category"] == {"id": ids["laundry"], "name": "洗衣液"}
    assert body["images"] == ["/static/uploads/ab/植萃洗衣液-750.jpg"]
    (sku,) = body["skus"]
    assert sku["specs"] == {"规格": "2kg"} and sku["stock"] == 5
    assert sku["price"] == 5990 and sku["price_today"] == 5990
    assert "code" not in sku

    # a bad token is refused rather than silently treated as anonymous
    bad = await client.get("/api/v1/catalog/products", headers={"Authorization": "Bearer x.y.z"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "TOKEN_INVALID"


async def test_price_today_comes_from_the_pricing_hook(
    client: httpx.AsyncClient, member_headers: MemberLogin, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await seed()

    async def member_pays_less(list_price_fen: int, member: Member | None) -> int:
        return list_price_fen if member is None else list_price_fen * 9 // 10

    monkeypatch.setattr(service, "price_today", member_pays_less)
    member = await member_headers("bob")
    anon = await client.get(f"/api/v1/catalog/products/{ids['tee']}")
    mine = await client.get(f"/api/v1/catalog/products/{ids['tee']}", headers=member)
    assert anon.json()["price_today"] == 5990
    assert mine.json()["price_today"] == 5391 and mine.json()["skus"][0]["price_today"] == 5391


async def test_off_shelf_and_unknown_products_are_not_found(client: httpx.AsyncClient) -> None:
    ids = await seed()
    for product_id in (ids["hidden"], 987654):
        r = await client.get(f"/api/v1/catalog/products/{product_id}")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "PRODUCT_NOT_FOUND"
        assert r.json()["error"]["message"] == "商品不存在或已下架"
    en = await client.get(
        f"/api/v1/catalog/products/{ids['hidden']}", headers={"Accept-Language": "en"}
    )
    assert en.json()["error"]["message"] == "This product is not available"
