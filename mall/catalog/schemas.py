from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mall.kit import bounds
from mall.kit.bounds import Id, SortOrder
from mall.kit.text import ImageRef, SafeLine, SafeText

DeliveryMode = Literal["express", "same_city", "pickup"]
# a product price: at most 100 million yuan, well inside bounds.MAX_FEN
Fen = Annotated[bounds.Fen, Field(le=100_000_000_00, description="integer fen (1 yuan = 100)")]
ImageUrl = Annotated[ImageRef, Field(min_length=1, max_length=512)]
SpecKey = Annotated[SafeLine, Field(min_length=1, max_length=16)]
SpecValue = Annotated[SafeLine, Field(min_length=1, max_length=32)]
Specs = Annotated[
    dict[SpecKey, SpecValue],
    Field(max_length=6, examples=[{"颜色": "白", "尺码": "L"}]),
]


# --- shopper ---------------------------------------------------------------


class CategoryNode(BaseModel):
    id: int
    name: str
    icon: str
    sort_order: int
    children: list[CategoryNode] = []


class CategoryRef(BaseModel):
    id: int
    name: str


class SkuOut(BaseModel):
    id: int
    specs: dict[str, str]
    price: int = Field(description="list price of this SKU in fen")
    price_today: int = Field(description="what this member pays today, in fen")
    stock: int


class ProductSummary(BaseModel):
    id: int
    name: str
    subtitle: str
    category_id: int | None
    cover: str | None = Field(description="first image URL, if any")
    list_price: int = Field(description="fen")
    price_today: int = Field(description="what this member pays today, in fen")
    delivery_modes: list[str]
    sold_out: bool


class ProductDetail(ProductSummary):
    description: str
    images: list[str]
    category: CategoryRef | None
    skus: list[SkuOut]
    created_at: datetime
    updated_at: datetime


# --- ops -------------------------------------------------------------------


class CategoryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    parent_id: int | None
    name: str
    icon: str
    sort_order: int
    created_at: datetime
    updated_at: datetime


class CategoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SafeLine = Field(min_length=1, max_length=32, examples=["洗护"])
    parent_id: Id | None = None
    icon: ImageRef = Field(default="", max_length=512)
    sort_order: SortOrder = 0


class CategoryPatch(BaseModel):
    """Only the fields sent are changed; `"parent_id": null` moves it to the top level."""

    model_config = ConfigDict(extra="forbid")

    name: SafeLine | None = Field(default=None, min_length=1, max_length=32)
    parent_id: Id | None = None
    icon: ImageRef | None = Field(default=None, max_length=512)
    sort_order: SortOrder | None = None


class SkuIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    specs: Specs = {}
    price: Fen
    stock: int = Field(default=0, ge=0, le=100_000_000, description="initial stock")
    code: SafeLine | None = Field(default=None, min_length=1, max_length=64, examples=["TS-WHT-L"])


class SkuPatch(BaseModel):
    """Stock is not here: change it with `POST /skus/{id}/stock` (an audited delta)."""

    model_config = ConfigDict(extra="forbid")

    specs: Specs | None = None
    price: Fen | None = None
    code: SafeLine | None = Field(default=None, min_length=1, max_length=64)


class SkuAdminOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    product_id: int
    specs: dict[str, str]
    price: int
    stock: int
    code: str | None
    created_at: datetime
    updated_at: datetime


def _unique_modes(modes: list[str]) -> list[str]:
    return list(dict.fromkeys(modes))


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SafeLine = Field(min_length=1, max_length=60, examples=["植萃洗衣液 2kg"])
    subtitle: SafeLine = Field(default="", max_length=120)
    description: SafeText = Field(default="", max_length=20_000)
    category_id: Id | None = None
    images: list[ImageUrl] = Field(default=[], max_length=20)
    list_price: Fen
    on_shelf: bool = False
    delivery_modes: list[DeliveryMode] = Field(default=["express"], min_length=1, max_length=3)
    skus: list[SkuIn] = Field(default=[], max_length=100)

    @field_validator("delivery_modes")
    @classmethod
    def _modes(cls, modes: list[str]) -> list[str]:
        return _unique_modes(modes)


class ProductPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SafeLine | None = Field(default=None, min_length=1, max_length=60)
    subtitle: SafeLine | None = Field(default=None, max_length=120)
    description: SafeText | None = Field(default=None, max_length=20_000)
    category_id: Id | None = None
    images: list[ImageUrl] | None = Field(default=None, max_length=20)
    list_price: Fen | None = None
    on_shelf: bool | None = None
    delivery_modes: list[DeliveryMode] | None = Field(default=None, min_length=1, max_length=3)

    @field_validator("delivery_modes")
    @classmethod
    def _modes(cls, modes: list[str] | None) -> list[str] | None:
        return None if modes is None else _unique_modes(modes)


class ProductAdminOut(BaseModel):
    id: int
    name: str
    subtitle: str
    description: str
    category_id: int | None
    images: list[str]
    list_price: int
    on_shelf: bool
    delivery_modes: list[str]
    skus: list[SkuAdminOut]
    created_at: datetime
    updated_at: datetime


class StockAdjustIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delta: int = Field(
        ge=-100_000_000,
        le=100_000_000,
        description="units to add (positive) or remove (negative); never below zero",
        examples=[50, -3],
    )
    reason: SafeLine = Field(min_length=1, max_length=200, examples=["到货入库"])

    @field_validator("delta")
    @classmethod
    def _not_zero(cls, delta: int) -> int:
        if delta == 0:
            raise ValueError("delta must not be 0")
        return delta


class StockOut(BaseModel):
    sku_id: int
    delta: int
    stock: int
