"""Ops: points mall items, stock adjustments, redemptions, shipping and CSV export."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from mall.addresses.schemas import AddressSnapshot
from mall.admin._phones import PhoneReveal
from mall.deps import CurrentStaff, IdempotencyKey
from mall.kit import clock, idempotency
from mall.kit.bounds import Cursor, Id, Limit
from mall.kit.text import SafeLine
from mall.pointsmall import service
from mall.pointsmall.models import PointsMallItem, PointsMallRedemption
from mall.pointsmall.schemas import (
    AdminItemOut,
    AdminItemPage,
    AdminRedemptionOut,
    AdminRedemptionPage,
    CancelIn,
    ItemCreate,
    ItemPatch,
    ShipIn,
    StockAdjustIn,
    StockAdjustOut,
)

router = APIRouter(tags=["admin: points mall"])


async def _item_out(item: PointsMallItem) -> AdminItemOut:
    live = await service.redis_stock([item.id])
    out = AdminItemOut.model_validate(item)
    out.redis_stock = live.get(item.id)
    return out


def _redemption_out(r: PointsMallRedemption) -> AdminRedemptionOut:
    return AdminRedemptionOut.model_validate(
        {
            **{k: getattr(r, k) for k in AdminRedemptionOut.model_fields if k != "address"},
            "address": AddressSnapshot.model_validate(r.address) if r.address else None,
        }
    )


@router.get("/points-mall/items", response_model=AdminItemPage)
async def list_items(
    _staff: CurrentStaff,
    status: str | None = Query(default=None, pattern="^(draft|on|off|archived)$"),
    cursor: Cursor | None = None,
    size: Limit = 50,
) -> AdminItemPage:
    """All items but archived ones (or those of `status`), newest first."""
    rows, next_cursor = await service.list_items_admin(status, cursor, size)
    live = await service.redis_stock([r.id for r in rows])
    items = []
    for row in rows:
        out = AdminItemOut.model_validate(row)
        out.redis_stock = live.get(row.id)
        items.append(out)
    return AdminItemPage(items=items, next_cursor=next_cursor)


@router.post("/points-mall/items", response_model=AdminItemOut, status_code=201)
async def create_item(
    body: ItemCreate, staff: CurrentStaff, idempotency_key: IdempotencyKey = None
) -> Any:
    """Create an item (a draft unless `on_shelf`); its stock is loaded into Redis.
    With an `Idempotency-Key`, a retried create returns the first item."""

    async def work() -> AdminItemOut:
        return await _item_out(await service.create_item(body, staff))

    return await idempotency.run(
        f"pointsmall.item-create:{staff.id}",
        idempotency_key,
        idempotency.fingerprint(body.model_dump(mode="json")),
        work,
    )


@router.get("/points-mall/items/{item_id}", response_model=AdminItemOut)
async def get_item(item_id: Id, _staff: CurrentStaff) -> AdminItemOut:
    return await _item_out(await service.get_item(item_id))


@router.patch("/points-mall/items/{item_id}", response_model=AdminItemOut)
async def update_item(item_id: Id, body: ItemPatch, staff: CurrentStaff) -> AdminItemOut:
    """Edit some fields. Stock changes go through `stock-adjustments`."""
    return await _item_out(await service.update_item(item_id, body, staff))


@router.delete("/points-mall/items/{item_id}", status_code=204)
async def archive_item(item_id: Id, staff: CurrentStaff) -> Response:
    """Archive the item: off the shelf and out of lists; its redemptions stay."""
    await service.archive_item(item_id, staff)
    return Response(status_code=204)


@router.post("/points-mall/items/{item_id}/on-shelf", response_model=AdminItemOut)
async def put_on_shelf(item_id: Id, staff: CurrentStaff) -> AdminItemOut:
    """Put on the shelf (members see it within its shelf window, if one is set)."""
    return await _item_out(await service.set_shelf(item_id, True, staff))


@router.post("/points-mall/items/{item_id}/off-shelf", response_model=AdminItemOut)
async def take_off_shelf(item_id: Id, staff: CurrentStaff) -> AdminItemOut:
    return await _item_out(await service.set_shelf(item_id, False, staff))


@router.post(
    "/points-mall/items/{item_id}/stock-adjustments",
    response_model=StockAdjustOut,
    status_code=201,
)
async def adjust_stock(
    item_id: Id, body: StockAdjustIn, staff: CurrentStaff, idempotency_key: IdempotencyKey = None
) -> Any:
    """Add (positive `delta`) or take away (negative) units, with a reason; audited.
    Refused with STOCK_BELOW_ZERO if fewer units are left than taken away."""

    async def work() -> StockAdjustOut:
        adjustment = await service.adjust_stock(
            item_id, body.delta, body.reason, staff, idempotency_key
        )
        return StockAdjustOut.model_validate(adjustment)

    return await idempotency.run(
        f"pointsmall.stock:{item_id}",
        idempotency_key,
        idempotency.fingerprint(body.model_dump()),
        work,
    )


@router.get("/points-mall/items/{item_id}/stock-adjustments", response_model=list[StockAdjustOut])
async def stock_adjustments(item_id: Id, _staff: CurrentStaff) -> list[StockAdjustOut]:
    return [StockAdjustOut.model_validate(a) for a in await service.list_stock_adjustments(item_id)]


@router.get("/points-mall/redemptions", response_model=AdminRedemptionPage)
async def list_redemptions(
    _staff: CurrentStaff,
    item_id: Id | None = None,
    member_id: Id | None = None,
    status: Annotated[SafeLine | None, Query(max_length=24)] = None,
    cursor: Cursor | None = None,
    size: Limit = 50,
) -> AdminRedemptionPage:
    rows, next_cursor = await service.list_redemptions(
        member_id=member_id, item_id=item_id, status=status, cursor=cursor, size=size
    )
    return AdminRedemptionPage(items=[_redemption_out(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/points-mall/redemptions/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def export_redemptions(
    _staff: CurrentStaff,
    _reveal: PhoneReveal,
    item_id: Id | None = None,
    status: Annotated[SafeLine | None, Query(max_length=24)] = None,
    since: datetime | None = Query(default=None, alias="from"),
    until: datetime | None = Query(default=None, alias="to"),
) -> StreamingResponse:
    """Redemptions as CSV (UTF-8 with BOM), filtered by item, status and creation time.
    Phones are masked unless an admin asks `?reveal=phone` (audited)."""
    stamp = clock.local_now().strftime("%Y%m%d-%H%M")
    return StreamingResponse(
        service.export_csv(item_id=item_id, status=status, since=since, until=until),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="redemptions-{stamp}.csv"'},
    )


@router.get("/points-mall/redemptions/{redemption_id}", response_model=AdminRedemptionOut)
async def get_redemption(
    redemption_id: Id, _staff: CurrentStaff, _reveal: PhoneReveal
) -> AdminRedemptionOut:
    """One redemption. The address phone is masked unless an admin asks `?reveal=phone`
    (audited)."""
    return _redemption_out(await service.get_redemption(redemption_id))


@router.post("/points-mall/redemptions/{redemption_id}/ship", response_model=AdminRedemptionOut)
async def ship(redemption_id: Id, body: ShipIn, staff: CurrentStaff) -> AdminRedemptionOut:
    """Mark a gift shipped with its tracking number (repeating the same call is harmless)."""
    return _redemption_out(
        await service.ship(redemption_id, body.carrier, body.tracking_number, staff)
    )


@router.post("/points-mall/redemptions/{redemption_id}/cancel", response_model=AdminRedemptionOut)
async def cancel(
    redemption_id: Id, body: CancelIn, staff: CurrentStaff, idempotency_key: IdempotencyKey = None
) -> Any:
    """Cancel a redemption not yet shipped (vouchers too): points and stock come back and
    the coupons it issued are voided; if one of them was used (or an unpaid order holds
    it), nothing changes (REDEMPTION_COUPON_USED)."""

    async def work() -> AdminRedemptionOut:
        return _redemption_out(await service.cancel(redemption_id, staff=staff, reason=body.reason))

    return await idempotency.run(
        f"pointsmall.admin-cancel:{redemption_id}",
        idempotency_key,
        idempotency.fingerprint(body.model_dump()),
        work,
    )
