from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from mall.catalog import service
from mall.catalog.schemas import CategoryNode, ProductDetail, ProductSummary
from mall.deps import OptionalMember
from mall.kit.bounds import Cursor, Id, Limit
from mall.kit.pagination import Page
from mall.kit.text import SafeLine

router = APIRouter(prefix="/api/v1", tags=["catalog"])


@router.get("/catalog/categories", response_model=list[CategoryNode])
async def categories() -> list[CategoryNode]:
    """The category tree, each level ordered by `sort_order`."""
    return await service.category_tree()


@router.get("/catalog/products", response_model=Page[ProductSummary])
async def products(
    member: OptionalMember,
    category: Annotated[
        Id | None, Query(description="a category id; includes its sub-categories")
    ] = None,
    q: Annotated[SafeLine | None, Query(max_length=50, description="search by name")] = None,
    cursor: Cursor | None = None,
    size: Limit = 20,
) -> Page[ProductSummary]:
    """Products on the shelf, newest first, each with its list price and the price this
    member pays today (fen). Pass `next_cursor` back as `cursor` for the next page."""
    items, next_cursor = await service.browse_products(
        member, category_id=category, q=q, cursor=cursor, size=size
    )
    return Page[ProductSummary](items=items, next_cursor=next_cursor)


@router.get("/catalog/products/{product_id}", response_model=ProductDetail)
async def product(product_id: Id, member: OptionalMember) -> ProductDetail:
    """Detail with SKUs and images; `PRODUCT_NOT_FOUND` when it is off the shelf."""
    return await service.product_detail(product_id, member)
