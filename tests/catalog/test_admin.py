from __future__ import annotations

import asyncio
from typing import Any

import httpx

from mall.audit.models import AuditLog
from mall.catalog.models import Sku
from tests.catalog.conftest import StaffToken
from tests.conftest import MemberLogin, StaffLogin

A = "/api/admin/v1"


def product_body(category_id: int | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": "纯棉基础款T恤",
        "subtitle": "240g 精梳棉",
        "category_id": category_id,
        "list_price": 9900,
        "images": ["/static/uploads/ab/x-750.jpg"],
        "delivery_modes": ["express"],
        "skus": [
            {"specs": {"颜色": "白", "尺码": "L"}, "price": 9900, "stock": 10, "code": "TS-W-L"},
            {"specs": {"颜色": "黑", "尺码": "L"}, "price": 9900, "stock": 4, "code": "TS-B-L"},
        ],
        **extra,
    }


async def test_ops_login_can_manage_the_catalog_end_to_end(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    ops = await staff_headers("ops")  # the real login, ops role
    cat = await client.post(A + "/categories", json={"name": "服饰", "icon": "/i.png"}, headers=ops)
    assert cat.status_code == 201, cat.text
    cat_id = cat.json()["id"]
    sub = await client.post(
        A + "/categories", json={"name": "T恤", "parent_id": cat_id}, headers=ops
    )
    assert sub.json()["parent_id"] == cat_id
    renamed = await client.patch(A + f"/categories/{cat_id}", json={"name": "服装"}, headers=ops)
    assert renamed.json()["name"] == "服装" and renamed.json()["icon"] == "/i.png"

    created = await client.post(A + "/products", json=product_body(sub.json()["id"]), headers=ops)
    assert created.status_code == 201, created.text
    product = created.json()
    assert product["on_shelf"] is False and len(product["skus"]) == 2
    pid = product["id"]
    # off the shelf: shoppers cannot see it yet
    assert (await client.get(f"/api/v1/catalog/products/{pid}")).status_code == 404
    on = await client.post(A + f"/products/{pid}/on-shelf", headers=ops)
    assert on.status_code == 200 and on.json()["on_shelf"] is True
    assert (await client.get(f"/api/v1/catalog/products/{pid}")).status_code == 200

    patched = await client.patch(
        A + f"/products/{pid}",
        json={"list_price": 7900, "delivery_modes": ["express", "pickup"]},
        headers=ops,
    )
    assert patched.status_code == 200
    assert patched.json()["list_price"] == 7900 and patched.json()["name"] == "纯棉基础款T恤"
    shopper_view = (await client.get(f"/api/v1/catalog/products/{pid}")).json()
    assert shopper_view["list_price"] == 7900
    assert shopper_view["delivery_modes"] == ["express", "pickup"]

    sku = await client.post(
        A + f"/products/{pid}/skus",
        json={"specs": {"颜色": "灰", "尺码": "XL"}, "price": 10900, "stock": 3},
        headers=ops,
    )
    assert sku.status_code == 201
    sku_id = sku.json()["id"]
    assert (await client.patch(A + f"/skus/{sku_id}", json={"price": 9900}, headers=ops)).json()[
        "price"
    ] == 9900
    assert (await client.delete(A + f"/skus/{sku_id}", headers=ops)).status_code == 204
    listed = (await client.get(A + "/products", params={"q": "T恤"}, headers=ops)).json()
    assert [p["id"] for p in listed["items"]] == [pid]
    assert len(listed["items"][0]["skus"]) == 2

    # a category with products cannot go; the product is deleted softly
    blocked = await client.delete(A + f"/categories/{sub.json()['id']}", headers=ops)
    assert blocked.status_code == 409 and blocked.json()["error"]["code"] == "CATEGORY_NOT_EMPTY"
    assert (await client.delete(A + f"/products/{pid}", headers=ops)).status_code == 204
    assert (await client.get(f"/api/v1/catalog/products/{pid}")).status_code == 404
    assert (await client.get(A + f"/products/{pid}", headers=ops)).status_code == 404
    assert (
        await client.delete(A + f"/categories/{sub.json()['id']}", headers=ops)
    ).status_code == 204

    actions = [a.action for a in await AuditLog.all().order_by("id")]
    assert actions == [
        "category.create",
        "category.create",
        "category.update",
        "product.create",
        "product.update",  # on shelf
        "product.update",
        "sku.create",
        "sku.update",
        "sku.delete",
        "product.delete",
        "category.delete",
    ]
    first = await AuditLog.filter(action="product.create").first()
    assert first is not None and first.staff_username.startswith("ops_")


async def test_shopper_and_anonymous_are_refused(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    shopper = await member_headers("eve")
    for method, path in [
        ("GET", "/categories"),
        ("POST", "/categories"),
        ("GET", "/products"),
        ("POST", "/products"),
        ("POST", "/skus/1/stock"),
    ]:
        for headers in (shopper, {}):
            r = await client.request(method, A + path, json={}, headers=headers)
            assert r.status_code == 401, (method, path, r.text)
    assert not await AuditLog.exists()


async def test_validation_and_rules(client: httpx.AsyncClient, ops_headers: StaffToken) -> None:
    ops = await ops_headers()
    no_sku = await client.post(
        A + "/products", json=product_body(on_shelf=True, skus=[]), headers=ops
    )
    assert no_sku.status_code == 409 and no_sku.json()["error"]["code"] == "PRODUCT_HAS_NO_SKU"
    bad = await client.post(
        A + "/products",
        json=product_body(list_price=-1, delivery_modes=["teleport"], images=["javascript:x"]),
        headers=ops,
    )
    assert bad.status_code == 422
    fields = {f["field"] for f in bad.json()["error"]["fields"]}
    assert {"body.list_price", "body.delivery_modes.0", "body.images.0"} <= fields
    unknown_cat = await client.post(A + "/products", json=product_body(12345), headers=ops)
    assert unknown_cat.status_code == 404
    assert unknown_cat.json()["error"]["code"] == "CATEGORY_NOT_FOUND"

    first = await client.post(A + "/products", json=product_body(), headers=ops)
    assert first.status_code == 201
    dup_code = await client.post(A + "/products", json=product_body(), headers=ops)
    assert dup_code.status_code == 409 and dup_code.json()["error"]["code"] == "SKU_CODE_TAKEN"
    assert dup_code.json()["error"]["details"]["code"] == "TS-W-L"
    pid = first.json()["id"]
    same_specs = await client.post(
        A + f"/products/{pid}/skus",
        json={"specs": {"尺码": "L", "颜色": "白"}, "price": 1},
        headers=ops,
    )
    assert same_specs.json()["error"]["code"] == "SKU_SPECS_DUPLICATE"
    # stock is never set directly: only deltas
    sku_id = first.json()["skus"][0]["id"]
    direct = await client.patch(A + f"/skus/{sku_id}", json={"stock": 999}, headers=ops)
    assert direct.status_code == 422
    zero = await client.post(
        A + f"/skus/{sku_id}/stock", json={"delta": 0, "reason": "x"}, headers=ops
    )
    assert zero.status_code == 422
    assert (await Sku.get(id=sku_id)).stock == 10


async def test_stock_deltas_are_audited_idempotent_and_never_negative(
    client: httpx.AsyncClient, ops_headers: StaffToken
) -> None:
    ops = await ops_headers()
    product = (await client.post(A + "/products", json=product_body(), headers=ops)).json()
    sku_id = product["skus"][1]["id"]  # stock 4
    url = A + f"/skus/{sku_id}/stock"

    added = await client.post(
        url, json={"delta": 6, "reason": "到货入库"}, headers={**ops, "Idempotency-Key": "in-1"}
    )
    assert added.status_code == 200 and added.json() == {"sku_id": sku_id, "delta": 6, "stock": 10}
    replay = await client.post(
        url, json={"delta": 6, "reason": "到货入库"}, headers={**ops, "Idempotency-Key": "in-1"}
    )
    assert replay.json() == added.json()
    assert (await Sku.get(id=sku_id)).stock == 10

    too_many = await client.post(url, json={"delta": -11, "reason": "报损"}, headers=ops)
    assert too_many.status_code == 409
    assert too_many.json()["error"]["code"] == "STOCK_NOT_ENOUGH"
    assert too_many.json()["error"]["message"] == "库存仅剩 10，无法扣减 11"

    results = await asyncio.gather(
        *(client.post(url, json={"delta": -3, "reason": "盘点"}, headers=ops) for _ in range(8))
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] * 3 + [409] * 5
    assert (await Sku.get(id=sku_id)).stock == 1

    entries = await AuditLog.filter(action="sku.stock_adjust").order_by("id")
    assert [e.detail["delta"] for e in entries] == [6, -3, -3, -3]
    assert sorted(e.detail["stock_after"] for e in entries) == [1, 4, 7, 10]
    assert all(e.target == f"sku:{sku_id}" for e in entries)
    unknown = await client.post(
        A + "/skus/999999/stock", json={"delta": 1, "reason": "x"}, headers=ops
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "SKU_NOT_FOUND"


async def test_last_sku_of_an_on_shelf_product_stays(
    client: httpx.AsyncClient, ops_headers: StaffToken
) -> None:
    ops = await ops_headers("admin")
    body = product_body(on_shelf=True, skus=[{"specs": {}, "price": 100, "stock": 1}])
    product = (await client.post(A + "/products", json=body, headers=ops)).json()
    sku_id = product["skus"][0]["id"]
    r = await client.delete(A + f"/skus/{sku_id}", headers=ops)
    assert r.status_code == 409 and r.json()["error"]["code"] == "PRODUCT_HAS_NO_SKU"
    await client.post(A + f"/products/{product['id']}/off-shelf", headers=ops)
    assert (await client.delete(A + f"/skus/{sku_id}", headers=ops)).status_code == 204
    back_on = await client.post(A + f"/products/{product['id']}/on-shelf", headers=ops)
    assert back_on.json()["error"]["code"] == "PRODUCT_HAS_NO_SKU"


async def test_create_product_is_idempotent(
    client: httpx.AsyncClient, ops_headers: StaffToken
) -> None:
    ops = {**(await ops_headers()), "Idempotency-Key": "new-tee-1"}
    first = await client.post(A + "/products", json=product_body(), headers=ops)
    again = await client.post(A + "/products", json=product_body(), headers=ops)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    listed = (await client.get(A + "/products", headers=ops)).json()["items"]
    assert len(listed) == 1
    other = await client.post(A + "/products", json=product_body(name="别的"), headers=ops)
    assert other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
