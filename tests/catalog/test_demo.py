from __future__ import annotations

import httpx

from mall.catalog import demo
from mall.catalog.models import Category, Product, Sku
from mall.config import Settings


async def test_demo_seed_is_idempotent_and_has_real_pictures(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await demo.seed()
    counts = (await Category.all().count(), await Product.all().count(), await Sku.all().count())
    assert counts[0] == 9 and counts[1] == len(demo.PRODUCTS) and counts[2] >= counts[1]
    await demo.seed()
    again = (await Category.all().count(), await Product.all().count(), await Sku.all().count())
    assert again == counts

    tree = (await client.get("/api/v1/catalog/categories")).json()
    assert [n["name"] for n in tree] == ["洗护", "服饰", "家居"]
    assert all(n["icon"].startswith("/static/uploads/") for n in tree)
    listed = (await client.get("/api/v1/catalog/products", params={"size": 50})).json()["items"]
    assert len(listed) == len(demo.PRODUCTS) - 1  # one is not on the shelf yet
    for item in listed:
        cover = item["cover"]
        assert cover.startswith("/static/uploads/")
        assert (settings.uploads_dir / cover.removeprefix("/static/uploads/")).is_file()
        thumb = cover.replace("-750.jpg", "-150.webp")
        assert (await client.get(thumb)).status_code == 200
