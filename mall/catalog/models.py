from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class Category(Model):
    """A node of the category tree shown in the mini-program (at most three levels)."""

    id = fields.BigIntField(primary_key=True)
    parent: fields.ForeignKeyNullableRelation[Category] = fields.ForeignKeyField(
        "models.Category", related_name="children", null=True, on_delete=fields.RESTRICT
    )
    parent_id: int | None
    name = fields.CharField(max_length=32)
    icon = fields.CharField(max_length=512, default="")
    sort_order = fields.IntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "catalog_category"


class Product(Model):
    """What a shopper browses. Prices are integer fen — `deleted_at` hides it everywhere
    but keeps the row, so orders that point at it still resolve."""

    id = fields.BigIntField(primary_key=True)
    category: fields.ForeignKeyNullableRelation[Category] = fields.ForeignKeyField(
        "models.Category", related_name="products", null=True, on_delete=fields.SET_NULL
    )
    category_id: int | None
    name = fields.CharField(max_length=60)
    subtitle = fields.CharField(max_length=120, default="")
    description = fields.TextField(default="")
    images: list[str] = fields.JSONField(default=list)  # type: ignore[assignment]
    list_price = fields.BigIntField()
    on_shelf = fields.BooleanField(default=False, db_index=True)
    # "express", "same_city", "pickup"
    delivery_modes: list[str] = fields.JSONField(default=list)  # type: ignore[assignment]
    deleted_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "catalog_product"


class Sku(Model):
    """One buyable variant of a product, e.g. {"颜色": "白", "尺码": "L"}.

    `stock` changes only by conditional updates (`stock >= qty`), never overwritten."""

    id = fields.BigIntField(primary_key=True)
    product: fields.ForeignKeyRelation[Product] = fields.ForeignKeyField(
        "models.Product", related_name="skus", on_delete=fields.RESTRICT
    )
    product_id: int
    specs: dict[str, str] = fields.JSONField(default=dict)  # type: ignore[assignment]
    price = fields.BigIntField()
    stock = fields.BigIntField(default=0)
    code = fields.CharField(max_length=64, null=True, unique=True)
    deleted_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "catalog_sku"
