"""Ops catalog: categories, products, SKUs, stock deltas, on/off shelf, image uploads.

Any staff role may use these (ops is enough). Every write is audited by the service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from mall.catalog import service
from mall.catalog.schemas import (
    CategoryIn,
    CategoryOut,
    CategoryPatch,
    ProductAdminOut,
    ProductIn,
    ProductPatch,
    SkuAdminOut,
    SkuIn,
    SkuPatch,
    StockAdjustIn,
    StockOut,
)
from mall.config import get_settings
from mall.deps import CurrentStaff, IdempotencyKey
from mall.kit import idempotency
from mall.kit import images as kit_images
from mall.kit.bounds import Cursor, Id, Limit
from mall.kit.images import StoredImage
from mall.kit.pagination import Page
from mall.kit.text import SafeLine

router = APIRouter(tags=["admin: catalog"])


# --- categories ------------------------------------------------------------------


@router.get("/categories", response_model=list[CategoryOut])
async def list_categories(_staff: CurrentStaff) -> list[CategoryOut]:
    """Every category, flat, ordered by `sort_order` (build the tree from `parent_id`)."""
    return [CategoryOut.model_validate(c) for c in await service.list_categories()]


@router.post("/categories", response_model=CategoryOut, status_code=201)
async def create_category(body: CategoryIn, staff: CurrentStaff) -> CategoryOut:
    """At most three levels deep."""
    return CategoryOut.model_validate(await service.create_category(staff, body))


@router.get("/categories/{category_id}", response_model=CategoryOut)
async def get_category(category_id: Id, _staff: CurrentStaff) -> CategoryOut:
    return CategoryOut.model_validate(await service.get_category(category_id))


@router.patch("/categories/{category_id}", response_model=CategoryOut)
async def update_category(category_id: Id, body: CategoryPatch, staff: CurrentStaff) -> CategoryOut:
    return CategoryOut.model_validate(await service.update_category(staff, category_id, body))


@router.delete("/categories/{category_id}", status_code=204)
async def delete_category(category_id: Id, staff: CurrentStaff) -> Response:
    """Only an empty category (no sub-categories, no products) can be deleted."""
    await service.delete_category(staff, category_id)
    return Response(status_code=204)


# --- products ----------------------------------------------------------------------


@router.get("/products", response_model=Page[ProductAdminOut])
async def list_products(
    _staff: CurrentStaff,
    category: Id | None = None,
    q: Annotated[SafeLine | None, Query(max_length=50)] = None,
    on_shelf: bool | None = None,
    cursor: Cursor | None = None,
    size: Limit = 20,
) -> Page[ProductAdminOut]:
    """All products that were not deleted (on and off the shelf), newest first, with SKUs."""
    items, next_cursor = await service.admin_products(
        category_id=category, q=q, on_shelf=on_shelf, cursor=cursor, size=size
    )
    return Page[ProductAdminOut](items=items, next_cursor=next_cursor)


@router.post("/products", response_model=ProductAdminOut, status_code=201)
async def create_product(
    body: ProductIn, staff: CurrentStaff, idempotency_key: IdempotencyKey = None
) -> Any:
    """A product with its SKUs and their initial stock. Honours `Idempotency-Key`."""
    return await idempotency.run(
        f"admin.catalog.product:{staff.id}",
        idempotency_key,
        idempotency.fingerprint(body.model_dump(mode="json")),
        lambda: service.create_product(staff, body),
    )


@router.get("/products/{product_id}", response_model=ProductAdminOut)
async def get_product(product_id: Id, _staff: CurrentStaff) -> ProductAdminOut:
    return await service.admin_product(product_id)


@router.patch("/products/{product_id}", response_model=ProductAdminOut)
async def update_product(
    product_id: Id, body: ProductPatch, staff: CurrentStaff
) -> ProductAdminOut:
    """Only the fields sent change. Stock is changed per SKU with `POST /skus/{id}/stock`."""
    return await service.update_product(staff, product_id, body)


@router.post("/products/{product_id}/on-shelf", response_model=ProductAdminOut)
async def put_on_shelf(product_id: Id, staff: CurrentStaff) -> ProductAdminOut:
    """Shoppers can see it; needs at least one SKU."""
    return await service.set_on_shelf(staff, product_id, True)


@router.post("/products/{product_id}/off-shelf", response_model=ProductAdminOut)
async def take_off_shelf(product_id: Id, staff: CurrentStaff) -> ProductAdminOut:
    return await service.set_on_shelf(staff, product_id, False)


@router.delete("/products/{product_id}", status_code=204)
async def delete_product(product_id: Id, staff: CurrentStaff) -> Response:
    """Takes it off the shelf and hides it; past orders still resolve it."""
    await service.delete_product(staff, product_id)
    return Response(status_code=204)


# --- SKUs and stock ------------------------------------------------------------------


@router.post("/products/{product_id}/skus", response_model=SkuAdminOut, status_code=201)
async def add_sku(
    product_id: Id, body: SkuIn, staff: CurrentStaff, idempotency_key: IdempotencyKey = None
) -> Any:
    """Honours `Idempotency-Key` (it sets initial stock)."""
    return await idempotency.run(
        f"admin.catalog.sku:{staff.id}",
        idempotency_key,
        idempotency.fingerprint(product_id, body.model_dump(mode="json")),
        lambda: service.add_sku(staff, product_id, body),
    )


@router.patch("/skus/{sku_id}", response_model=SkuAdminOut)
async def update_sku(sku_id: Id, body: SkuPatch, staff: CurrentStaff) -> SkuAdminOut:
    return await service.update_sku(staff, sku_id, body)


@router.delete("/skus/{sku_id}", status_code=204)
async def delete_sku(sku_id: Id, staff: CurrentStaff) -> Response:
    """Hides the SKU and frees its code; the last SKU of an on-shelf product stays."""
    await service.delete_sku(staff, sku_id)
    return Response(status_code=204)


@router.post("/skus/{sku_id}/stock", response_model=StockOut)
async def adjust_stock(
    sku_id: Id, body: StockAdjustIn, staff: CurrentStaff, idempotency_key: IdempotencyKey = None
) -> Any:
    """Add (`delta` > 0) or remove (`delta` < 0) stock; refused with `STOCK_NOT_ENOUGH`
    rather than going below zero. Audited with the reason. Honours `Idempotency-Key`."""
    return await idempotency.run(
        f"admin.catalog.stock:{staff.id}",
        idempotency_key,
        idempotency.fingerprint(sku_id, body.delta, body.reason),
        lambda: service.adjust_stock(staff, sku_id, body.delta, body.reason),
    )


# --- uploads -------------------------------------------------------------------------

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "a JPEG, PNG or WebP image",
                        }
                    },
                }
            }
        },
    }
}


@router.post(
    "/uploads/images",
    response_model=StoredImage,
    status_code=201,
    openapi_extra=_UPLOAD_BODY,
    responses={
        413: {"description": "`IMAGE_TOO_LARGE`: over `MALL_UPLOAD_MAX_BYTES`"},
        415: {"description": "`IMAGE_TYPE_NOT_ALLOWED`: not a JPEG, PNG or WebP image"},
        422: {
            "description": "`IMAGE_TOO_MANY_PIXELS` (over `MALL_UPLOAD_MAX_PIXELS`), "
            "`IMAGE_INVALID` (damaged or truncated), `UPLOAD_FILE_MISSING`"
        },
    },
)
async def upload_image(request: Request, staff: CurrentStaff) -> StoredImage:
    """Upload one image (multipart field `file`). It is checked by its content, turned
    upright by its EXIF orientation, stripped of metadata and stored as WebP and JPEG
    variants (e.g. 750, 375 and 150 px wide; never upscaled) named by the SHA-256 of
    the file, so uploading the same file again returns the same URLs."""
    upload = await kit_images.read_upload(request, "file", get_settings().upload_max_bytes)
    return await service.store_image(staff, upload.data)
