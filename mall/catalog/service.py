"""Catalog rules: the category tree, products and SKUs, stock, and what a member pays today.

Other domains call `get_product`, `get_sku`, `reserve_stock`, `release_stock` and
`price_today`; they never touch these models."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from mall import pricing
from mall.audit import service as audit_service
from mall.audit.service import Actor
from mall.catalog.models import Category, Product, Sku
from mall.catalog.schemas import (
    CategoryIn,
    CategoryNode,
    CategoryPatch,
    CategoryRef,
    ProductAdminOut,
    ProductDetail,
    ProductIn,
    ProductPatch,
    ProductSummary,
    SkuAdminOut,
    SkuIn,
    SkuOut,
    SkuPatch,
    StockOut,
)
from mall.errors import ErrorCode
from mall.i18n import _
from mall.kit import clock
from mall.kit import images as kit_images
from mall.kit.pagination import cursor_page
from mall.points import service as points_service

if TYPE_CHECKING:
    from mall.members.models import Member

CATEGORY_NOT_FOUND = ErrorCode("CATEGORY_NOT_FOUND", 404, _("Category not found"))
CATEGORY_NOT_EMPTY = ErrorCode(
    "CATEGORY_NOT_EMPTY", 409, _("This category still has sub-categories or products")
)
CATEGORY_TOO_DEEP = ErrorCode(
    "CATEGORY_TOO_DEEP", 422, _("Categories can be nested at most {max_depth} levels deep")
)
CATEGORY_CYCLE = ErrorCode(
    "CATEGORY_CYCLE", 422, _("A category cannot be moved under itself or its sub-categories")
)
PRODUCT_NOT_FOUND = ErrorCode("PRODUCT_NOT_FOUND", 404, _("This product is not available"))
PRODUCT_HAS_NO_SKU = ErrorCode(
    "PRODUCT_HAS_NO_SKU", 409, _("A product on the shelf needs at least one SKU")
)
SKU_NOT_FOUND = ErrorCode("SKU_NOT_FOUND", 404, _("SKU not found"))
SKU_CODE_TAKEN = ErrorCode("SKU_CODE_TAKEN", 409, _("The SKU code {code} is already in use"))
SKU_SPECS_DUPLICATE = ErrorCode(
    "SKU_SPECS_DUPLICATE", 409, _("Another SKU of this product already has these specs")
)
STOCK_NOT_ENOUGH = ErrorCode(
    "STOCK_NOT_ENOUGH", 409, _("Only {stock} in stock; cannot take away {quantity}")
)

MAX_CATEGORY_DEPTH = 3


# --- pricing hook ------------------------------------------------------------


async def price_today(list_price_fen: int, member: Member | None) -> int:
    """The price `member` (None: an anonymous shopper) pays today for an item listed at
    `list_price_fen`: member day or level price from the rules document."""
    if member is None:
        return list_price_fen
    rules = await points_service.get_rules()
    return pricing.price_today(list_price_fen, member.level, clock.now(), rules.pricing_rules())


# --- categories ----------------------------------------------------------------


async def _parents() -> dict[int, int | None]:
    rows = await Category.all().values_list("id", "parent_id")
    return {int(cid): (int(pid) if pid is not None else None) for cid, pid in rows}


def _depth(category_id: int, parents: dict[int, int | None]) -> int:
    depth, seen = 0, set()
    current: int | None = category_id
    while current is not None and current not in seen:
        seen.add(current)
        depth += 1
        current = parents.get(current)
    return depth


def _descendants(root: int, parents: dict[int, int | None]) -> set[int]:
    children: dict[int | None, list[int]] = defaultdict(list)
    for cid, pid in parents.items():
        children[pid].append(cid)
    found, stack = {root}, [root]
    while stack:
        for child in children[stack.pop()]:
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _subtree_height(root: int, parents: dict[int, int | None]) -> int:
    """Levels in the subtree under and including `root`."""
    return max(_depth(c, parents) for c in _descendants(root, parents)) - _depth(root, parents) + 1


async def category_tree() -> list[CategoryNode]:
    rows = await Category.all().order_by("sort_order", "id")
    nodes = {
        c.id: CategoryNode(id=c.id, name=c.name, icon=c.icon, sort_order=c.sort_order) for c in rows
    }
    roots: list[CategoryNode] = []
    for c in rows:
        parent = nodes.get(c.parent_id) if c.parent_id is not None else None
        (parent.children if parent is not None else roots).append(nodes[c.id])
    return roots


async def list_categories() -> list[Category]:
    return await Category.all().order_by("sort_order", "id")


async def get_category(category_id: int) -> Category:
    category = await Category.get_or_none(id=category_id)
    if category is None:
        raise CATEGORY_NOT_FOUND()
    return category


async def create_category(actor: Actor | None, data: CategoryIn) -> Category:
    async with in_transaction():
        if data.parent_id is not None:
            await get_category(data.parent_id)
            if _depth(data.parent_id, await _parents()) + 1 > MAX_CATEGORY_DEPTH:
                raise CATEGORY_TOO_DEEP(max_depth=MAX_CATEGORY_DEPTH)
        category = await Category.create(**data.model_dump())
        await audit_service.record(
            actor, "category.create", f"category:{category.id}", **data.model_dump()
        )
    return category


async def update_category(actor: Actor | None, category_id: int, patch: CategoryPatch) -> Category:
    changes = patch.model_dump(exclude_unset=True)
    for required in ("name", "icon", "sort_order"):
        if required in changes and changes[required] is None:
            del changes[required]
    async with in_transaction():
        category = await get_category(category_id)
        if "parent_id" in changes and changes["parent_id"] != category.parent_id:
            new_parent = changes["parent_id"]
            if new_parent is not None:
                await get_category(new_parent)
                parents = await _parents()
                if new_parent in _descendants(category_id, parents):
                    raise CATEGORY_CYCLE()
                height = _subtree_height(category_id, parents)
                if _depth(new_parent, parents) + height > MAX_CATEGORY_DEPTH:
                    raise CATEGORY_TOO_DEEP(max_depth=MAX_CATEGORY_DEPTH)
        if changes:
            category.update_from_dict(changes)
            await category.save(update_fields=[*changes, "updated_at"])
            await audit_service.record(
                actor, "category.update", f"category:{category.id}", **changes
            )
    return category


async def delete_category(actor: Actor | None, category_id: int) -> None:
    async with in_transaction():
        category = await get_category(category_id)
        if (
            await Category.filter(parent_id=category_id).exists()
            or await Product.filter(category_id=category_id, deleted_at__isnull=True).exists()
        ):
            raise CATEGORY_NOT_EMPTY()
        await Product.filter(category_id=category_id).update(category_id=None)
        await category.delete()
        await audit_service.record(
            actor, "category.delete", f"category:{category_id}", name=category.name
        )


# --- shopper reads -------------------------------------------------------------


def _product_query(
    *, category_id: int | None, q: str | None, parents: dict[int, int | None] | None
) -> QuerySet[Product]:
    query = Product.filter(deleted_at__isnull=True)
    if category_id is not None:
        ids = _descendants(category_id, parents or {}) if parents else {category_id}
        query = query.filter(category_id__in=list(ids))
    if q and q.strip():
        query = query.filter(name__icontains=q.strip())
    return query


async def _in_stock_product_ids(product_ids: Iterable[int]) -> set[int]:
    ids = list(product_ids)
    if not ids:
        return set()
    rows = await Sku.filter(product_id__in=ids, deleted_at__isnull=True, stock__gt=0).values_list(
        "product_id", flat=True
    )
    return {int(pid) for pid in cast(list[int], rows)}


async def _summary(product: Product, member: Member | None, in_stock: bool) -> ProductSummary:
    return ProductSummary(
        id=product.id,
        name=product.name,
        subtitle=product.subtitle,
        category_id=product.category_id,
        cover=product.images[0] if product.images else None,
        list_price=product.list_price,
        price_today=await price_today(product.list_price, member),
        delivery_modes=product.delivery_modes,
        sold_out=not in_stock,
    )


async def browse_products(
    member: Member | None,
    *,
    category_id: int | None = None,
    q: str | None = None,
    cursor: str | None = None,
    size: int = 20,
) -> tuple[list[ProductSummary], str | None]:
    """On-shelf products, newest first; a category includes its sub-categories."""
    parents = await _parents() if category_id is not None else None
    query = _product_query(category_id=category_id, q=q, parents=parents).filter(on_shelf=True)
    rows, next_cursor = await cursor_page(query, cursor, size)
    in_stock = await _in_stock_product_ids(p.id for p in rows)
    return [await _summary(p, member, p.id in in_stock) for p in rows], next_cursor


async def _live_skus(product_id: int) -> list[Sku]:
    return await Sku.filter(product_id=product_id, deleted_at__isnull=True).order_by("id")


async def product_detail(product_id: int, member: Member | None) -> ProductDetail:
    """What a shopper sees; off-shelf and deleted products are PRODUCT_NOT_FOUND."""
    product = await Product.get_or_none(id=product_id, on_shelf=True, deleted_at__isnull=True)
    if product is None:
        raise PRODUCT_NOT_FOUND()
    skus = await _live_skus(product.id)
    category = await Category.get_or_none(id=product.category_id) if product.category_id else None
    summary = await _summary(product, member, any(s.stock > 0 for s in skus))
    return ProductDetail(
        **summary.model_dump(),
        description=product.description,
        images=product.images,
        category=CategoryRef(id=category.id, name=category.name) if category else None,
        skus=[
            SkuOut(
                id=s.id,
                specs=s.specs,
                price=s.price,
                price_today=await price_today(s.price, member),
                stock=s.stock,
            )
            for s in skus
        ],
        created_at=product.created_at,
        updated_at=product.updated_at,
    )


# --- lookups for other domains ---------------------------------------------------


async def get_product(product_id: int) -> Product:
    """A product that was not deleted (it may be off the shelf: check `on_shelf`)."""
    product = await Product.get_or_none(id=product_id, deleted_at__isnull=True)
    if product is None:
        raise PRODUCT_NOT_FOUND()
    return product


async def get_sku(sku_id: int, *, product_id: int | None = None) -> Sku:
    """A SKU that was not deleted, optionally checked to belong to `product_id`."""
    query = Sku.filter(id=sku_id, deleted_at__isnull=True)
    if product_id is not None:
        query = query.filter(product_id=product_id)
    sku = await query.first()
    if sku is None:
        raise SKU_NOT_FOUND()
    return sku


async def reserve_stock(sku_id: int, qty: int) -> bool:
    """Take `qty` units if that many are left; one conditional UPDATE, so concurrent
    callers never oversell. Joins the caller's transaction if there is one."""
    if qty <= 0:
        raise ValueError("qty must be positive")
    updated = await Sku.filter(id=sku_id, deleted_at__isnull=True, stock__gte=qty).update(
        stock=F("stock") - qty
    )
    return updated == 1


async def release_stock(sku_id: int, qty: int) -> None:
    """Give back `qty` units taken by `reserve_stock` (a cancelled or expired order)."""
    if qty <= 0:
        raise ValueError("qty must be positive")
    updated = await Sku.filter(id=sku_id).update(stock=F("stock") + qty)
    if not updated:
        raise SKU_NOT_FOUND()


# --- ops: products and SKUs ------------------------------------------------------


def _sku_admin(sku: Sku) -> SkuAdminOut:
    return SkuAdminOut.model_validate(sku)


def _product_admin(product: Product, skus: list[Sku]) -> ProductAdminOut:
    return ProductAdminOut(
        id=product.id,
        name=product.name,
        subtitle=product.subtitle,
        description=product.description,
        category_id=product.category_id,
        images=product.images,
        list_price=product.list_price,
        on_shelf=product.on_shelf,
        delivery_modes=product.delivery_modes,
        skus=[_sku_admin(s) for s in skus],
        created_at=product.created_at,
        updated_at=product.updated_at,
    )


async def admin_products(
    *,
    category_id: int | None = None,
    q: str | None = None,
    on_shelf: bool | None = None,
    cursor: str | None = None,
    size: int = 20,
) -> tuple[list[ProductAdminOut], str | None]:
    parents = await _parents() if category_id is not None else None
    query = _product_query(category_id=category_id, q=q, parents=parents)
    if on_shelf is not None:
        query = query.filter(on_shelf=on_shelf)
    rows, next_cursor = await cursor_page(query, cursor, size)
    skus: dict[int, list[Sku]] = defaultdict(list)
    if rows:
        for sku in await Sku.filter(
            product_id__in=[p.id for p in rows], deleted_at__isnull=True
        ).order_by("id"):
            skus[sku.product_id].append(sku)
    return [_product_admin(p, skus[p.id]) for p in rows], next_cursor


async def admin_product(product_id: int) -> ProductAdminOut:
    product = await get_product(product_id)
    return _product_admin(product, await _live_skus(product.id))


def _specs_key(specs: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(specs.items()))


async def _check_code_free(code: str | None, except_sku: int | None = None) -> None:
    if code is None:
        return
    query = Sku.filter(code=code)
    if except_sku is not None:
        query = query.exclude(id=except_sku)
    if await query.exists():
        raise SKU_CODE_TAKEN(code=code)


async def create_product(actor: Actor | None, data: ProductIn) -> ProductAdminOut:
    if data.on_shelf and not data.skus:
        raise PRODUCT_HAS_NO_SKU()
    if len({_specs_key(s.specs) for s in data.skus}) != len(data.skus):
        raise SKU_SPECS_DUPLICATE()
    codes = [s.code for s in data.skus if s.code is not None]
    if len(set(codes)) != len(codes):
        raise SKU_CODE_TAKEN(code=next(c for c in codes if codes.count(c) > 1))
    try:
        async with in_transaction():
            if data.category_id is not None:
                await get_category(data.category_id)
            for code in codes:
                await _check_code_free(code)
            fields = data.model_dump(exclude={"skus"})
            product = await Product.create(**fields)
            skus = [await Sku.create(product_id=product.id, **s.model_dump()) for s in data.skus]
            await audit_service.record(
                actor,
                "product.create",
                f"product:{product.id}",
                name=product.name,
                list_price=product.list_price,
                on_shelf=product.on_shelf,
                skus=[{"id": s.id, "specs": s.specs, "stock": s.stock} for s in skus],
            )
    except IntegrityError:  # a code taken by a concurrent request
        raise SKU_CODE_TAKEN(code=", ".join(codes)) from None
    return _product_admin(product, skus)


async def update_product(
    actor: Actor | None, product_id: int, patch: ProductPatch
) -> ProductAdminOut:
    changes: dict[str, Any] = patch.model_dump(exclude_unset=True)
    for key in [k for k, v in changes.items() if v is None and k != "category_id"]:
        del changes[key]
    async with in_transaction():
        product = await get_product(product_id)
        skus = await _live_skus(product.id)
        if changes.get("category_id") is not None:
            await get_category(changes["category_id"])
        if changes.get("on_shelf") and not skus:
            raise PRODUCT_HAS_NO_SKU()
        if changes:
            product.update_from_dict(changes)
            await product.save(update_fields=[*changes, "updated_at"])
            await audit_service.record(actor, "product.update", f"product:{product.id}", **changes)
    return _product_admin(product, skus)


async def set_on_shelf(actor: Actor | None, product_id: int, on_shelf: bool) -> ProductAdminOut:
    return await update_product(actor, product_id, ProductPatch(on_shelf=on_shelf))


async def delete_product(actor: Actor | None, product_id: int) -> None:
    """Hide the product everywhere; the row stays so past orders still resolve."""
    async with in_transaction():
        product = await get_product(product_id)
        await Product.filter(id=product.id).update(
            on_shelf=False, deleted_at=clock.now(), updated_at=clock.now()
        )
        await audit_service.record(
            actor, "product.delete", f"product:{product.id}", name=product.name
        )


async def add_sku(actor: Actor | None, product_id: int, data: SkuIn) -> SkuAdminOut:
    try:
        async with in_transaction():
            product = await get_product(product_id)
            existing = await _live_skus(product.id)
            if _specs_key(data.specs) in {_specs_key(s.specs) for s in existing}:
                raise SKU_SPECS_DUPLICATE()
            await _check_code_free(data.code)
            sku = await Sku.create(product_id=product.id, **data.model_dump())
            await audit_service.record(
                actor, "sku.create", f"sku:{sku.id}", product_id=product.id, **data.model_dump()
            )
    except IntegrityError:
        raise SKU_CODE_TAKEN(code=data.code or "") from None
    return _sku_admin(sku)


async def update_sku(actor: Actor | None, sku_id: int, patch: SkuPatch) -> SkuAdminOut:
    changes: dict[str, Any] = {
        k: v for k, v in patch.model_dump(exclude_unset=True).items() if v is not None
    }
    try:
        async with in_transaction():
            sku = await get_sku(sku_id)
            if "specs" in changes:
                others = [s for s in await _live_skus(sku.product_id) if s.id != sku.id]
                if _specs_key(changes["specs"]) in {_specs_key(s.specs) for s in others}:
                    raise SKU_SPECS_DUPLICATE()
            if "code" in changes:
                await _check_code_free(changes["code"], except_sku=sku.id)
            if changes:
                sku.update_from_dict(changes)
                await sku.save(update_fields=[*changes, "updated_at"])
                await audit_service.record(actor, "sku.update", f"sku:{sku.id}", **changes)
    except IntegrityError:
        raise SKU_CODE_TAKEN(code=str(changes.get("code", ""))) from None
    return _sku_admin(sku)


async def delete_sku(actor: Actor | None, sku_id: int) -> None:
    """Hide the SKU and free its code; refused if it is the last SKU of an on-shelf product."""
    async with in_transaction():
        sku = await get_sku(sku_id)
        product = await get_product(sku.product_id)
        if product.on_shelf and len(await _live_skus(product.id)) <= 1:
            raise PRODUCT_HAS_NO_SKU()
        await Sku.filter(id=sku.id).update(
            deleted_at=clock.now(), updated_at=clock.now(), code=None
        )
        await audit_service.record(
            actor, "sku.delete", f"sku:{sku.id}", product_id=product.id, code=sku.code
        )


async def adjust_stock(actor: Actor | None, sku_id: int, delta: int, reason: str) -> StockOut:
    """Add or remove stock as a delta; a removal only happens if enough is left."""
    if delta == 0:
        raise ValueError("delta must not be 0")
    async with in_transaction():
        query = Sku.filter(id=sku_id, deleted_at__isnull=True)
        if delta < 0:
            query = query.filter(stock__gte=-delta)
        updated = await query.update(stock=F("stock") + delta, updated_at=clock.now())
        if not updated:
            sku = await get_sku(sku_id)
            raise STOCK_NOT_ENOUGH(stock=sku.stock, quantity=-delta)
        sku = await get_sku(sku_id)
        await audit_service.record(
            actor,
            "sku.stock_adjust",
            f"sku:{sku.id}",
            delta=delta,
            reason=reason,
            stock_after=sku.stock,
        )
    return StockOut(sku_id=sku.id, delta=delta, stock=sku.stock)


# --- images ----------------------------------------------------------------------


async def store_image(actor: Actor | None, data: bytes) -> kit_images.StoredImage:
    """Run an uploaded file through the image pipeline; the write is audited."""
    stored = await kit_images.store_image(data)
    await audit_service.record(
        actor,
        "image.upload",
        f"image:{stored.id[:16]}",
        sha256=stored.id,
        width=stored.width,
        height=stored.height,
    )
    return stored
