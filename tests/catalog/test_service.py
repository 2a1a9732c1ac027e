from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from mall.catalog import service
from mall.catalog.models import Sku
from mall.catalog.schemas import CategoryIn, CategoryPatch, ProductIn, SkuIn
from mall.errors import MallError
from mall.kit import clock
from mall.members.models import Member


async def make_product(stock: int = 10, **extra: object) -> int:
    data = ProductIn.model_validate(
        {
            "name": "纯棉T恤",
            "list_price": 9900,
            "on_shelf": True,
            "skus": [{"specs": {"颜色": "白", "尺码": "L"}, "price": 9900, "stock": stock}],
            **extra,
        }
    )
    return (await service.create_product(None, data)).id


async def test_concurrent_reserve_never_oversells() -> None:
    product_id = await make_product(stock=10)
    sku = (await service.admin_product(product_id)).skus[0]
    results = await asyncio.gather(*(service.reserve_stock(sku.id, 1) for _ in range(50)))
    assert results.count(True) == 10
    assert (await Sku.get(id=sku.id)).stock == 0
    assert await service.reserve_stock(sku.id, 1) is False
    await service.release_stock(sku.id, 3)
    assert (await service.get_sku(sku.id)).stock == 3
    assert await service.reserve_stock(sku.id, 4) is False  # never partially
    assert await service.reserve_stock(sku.id, 3) is True
    with pytest.raises(ValueError):
        await service.reserve_stock(sku.id, 0)


async def test_concurrent_stock_deltas_never_go_negative() -> None:
    product_id = await make_product(stock=7)
    sku_id = (await service.admin_product(product_id)).skus[0].id
    outcomes = await asyncio.gather(
        *(service.adjust_stock(None, sku_id, -2, "盘点") for _ in range(20)),
        return_exceptions=True,
    )
    ok = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, MallError)]
    assert len(ok) == 3 and len(refused) == 17
    assert all(e.code == "STOCK_NOT_ENOUGH" for e in refused)
    assert (await Sku.get(id=sku_id)).stock == 1
    assert sorted(o.stock for o in ok) == [1, 3, 5]  # each saw its own result


async def test_deleted_sku_cannot_be_reserved_and_lookups_404() -> None:
    product_id = await make_product(stock=5)
    extra = await service.add_sku(
        None, product_id, SkuIn(specs={"颜色": "黑", "尺码": "L"}, price=9900, stock=5, code="K1")
    )
    await service.delete_sku(None, extra.id)
    assert await service.reserve_stock(extra.id, 1) is False
    with pytest.raises(MallError) as err:
        await service.get_sku(extra.id)
    assert err.value.code == "SKU_NOT_FOUND"
    # its code is free again
    again = await service.add_sku(
        None, product_id, SkuIn(specs={"颜色": "黑", "尺码": "L"}, price=9900, code="K1")
    )
    assert again.code == "K1"
    with pytest.raises(MallError) as err:
        await service.get_sku(again.id, product_id=product_id + 1)
    assert err.value.code == "SKU_NOT_FOUND"
    await service.delete_product(None, product_id)
    with pytest.raises(MallError) as err:
        await service.get_product(product_id)
    assert err.value.code == "PRODUCT_NOT_FOUND"


@pytest.mark.clock
async def test_price_today_follows_member_day_and_level() -> None:
    member = await Member.create(openid="o_price")
    gold = await Member.create(openid="o_gold", level=2)
    # the 17th in Shanghai: level prices only (level 0 pays list price, level 2 pays 95%)
    clock.set_now(datetime(2026, 3, 17, 4, 0, tzinfo=UTC))
    assert await service.price_today(12345, None) == 12345
    assert await service.price_today(12345, member) == 12345
    assert await service.price_today(10000, gold) == 9500
    # the 18th (member day): 95% for level 0, 90% for level 2; anonymous shoppers pay list
    clock.set_now(datetime(2026, 3, 17, 16, 0, tzinfo=UTC))  # 00:00 on the 18th in Shanghai
    assert await service.price_today(10000, None) == 10000
    assert await service.price_today(10000, member) == 9500
    assert await service.price_today(10000, gold) == 9000


async def test_category_tree_depth_and_cycles() -> None:
    root = await service.create_category(None, CategoryIn(name="服饰", sort_order=2))
    home = await service.create_category(None, CategoryIn(name="家居", sort_order=1))
    tops = await service.create_category(None, CategoryIn(name="上衣", parent_id=root.id))
    tees = await service.create_category(None, CategoryIn(name="T恤", parent_id=tops.id))
    with pytest.raises(MallError) as err:
        await service.create_category(None, CategoryIn(name="短袖", parent_id=tees.id))
    assert err.value.code == "CATEGORY_TOO_DEEP"
    with pytest.raises(MallError) as err:
        await service.update_category(None, root.id, CategoryPatch(parent_id=tees.id))
    assert err.value.code == "CATEGORY_CYCLE"
    bags = await service.create_category(None, CategoryIn(name="包袋"))
    await service.create_category(None, CategoryIn(name="托特包", parent_id=bags.id))
    with pytest.raises(MallError) as err:  # a two-level subtree under a second level
        await service.update_category(None, bags.id, CategoryPatch(parent_id=tops.id))
    assert err.value.code == "CATEGORY_TOO_DEEP"
    await service.update_category(None, bags.id, CategoryPatch(parent_id=root.id))
    await service.update_category(None, tops.id, CategoryPatch(parent_id=home.id))
    tree = await service.category_tree()
    assert [n.name for n in tree] == ["家居", "服饰"]
    assert tree[0].children[0].name == "上衣" and tree[0].children[0].children[0].name == "T恤"
    await service.update_category(None, tops.id, CategoryPatch(parent_id=None))
    assert [n.name for n in await service.category_tree()] == ["上衣", "家居", "服饰"]
