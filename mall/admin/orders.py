"""Ops: find orders, ship them, complete them, refund them (every write audited)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from mall.admin._phones import PhoneReveal
from mall.deps import AdminStaff, CurrentStaff, IdempotencyKey
from mall.kit import clock, idempotency
from mall.kit.bounds import Cursor, Id, Limit
from mall.kit.text import SafeLine
from mall.orders import service
from mall.orders.models import STATUSES, OrderRefund
from mall.orders.schemas import (
    AdminOrderOut,
    AdminOrderPage,
    AdminRefundIn,
    AdminRefundOut,
    CancelIn,
    ShipIn,
)
from mall.wechat.schemas import ResolveRefundIn

router = APIRouter(tags=["admin: orders"])

_STATUS_PATTERN = "^(" + "|".join(STATUSES) + ")$"


async def _out(order_id: int) -> AdminOrderOut:
    out = await service.order_out(await service.get_order(order_id), admin=True)
    assert isinstance(out, AdminOrderOut)
    return out


@router.get("/orders", response_model=AdminOrderPage)
async def list_orders(
    _staff: CurrentStaff,
    status: str | None = Query(default=None, pattern=_STATUS_PATTERN),
    member_id: Id | None = None,
    number: Annotated[
        SafeLine | None, Query(max_length=33, description="order number prefix")
    ] = None,
    tracking_no: Annotated[SafeLine | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: Cursor | None = None,
    size: Limit = 50,
) -> AdminOrderPage:
    """Orders newest first, filtered by status, member, number (prefix, with or without
    the WeChat Pay "O"), tracking number and creation time [since, until)."""
    items, next_cursor = await service.search_orders(
        status=status,
        member_id=member_id,
        number=number,
        tracking_no=tracking_no,
        since=since,
        until=until,
        cursor=cursor,
        size=size,
    )
    return AdminOrderPage(items=items, next_cursor=next_cursor)


@router.get(
    "/orders.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def export_orders(
    _staff: CurrentStaff,
    status: str | None = Query(default=None, pattern=_STATUS_PATTERN),
    member_id: Id | None = None,
    number: Annotated[
        SafeLine | None, Query(max_length=33, description="order number prefix")
    ] = None,
    tracking_no: Annotated[SafeLine | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> StreamingResponse:
    """The orders the list's filters select, as CSV (UTF-8 with BOM), newest first; the
    consignee's phone is masked."""
    stamp = clock.local_now().strftime("%Y%m%d-%H%M%S")
    return StreamingResponse(
        service.export_csv(
            status=status,
            member_id=member_id,
            number=number,
            tracking_no=tracking_no,
            since=since,
            until=until,
        ),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="orders-{stamp}.csv"'},
    )


@router.get("/orders/{order_id}", response_model=AdminOrderOut)
async def get_order(order_id: Id, _staff: CurrentStaff, _reveal: PhoneReveal) -> AdminOrderOut:
    """One order. The address phone is masked unless an admin asks `?reveal=phone`
    (audited)."""
    return await _out(order_id)


@router.post("/orders/{order_id}/ship", response_model=AdminOrderOut)
async def ship(order_id: Id, body: ShipIn, staff: CurrentStaff) -> AdminOrderOut:
    """paid -> shipped with the carrier and tracking number (required for express)."""
    await service.ship(
        order_id,
        shipping_company=body.shipping_company,
        tracking_no=body.tracking_no,
        staff=staff,
    )
    return await _out(order_id)


@router.post("/orders/{order_id}/complete", response_model=AdminOrderOut)
async def complete(order_id: Id, staff: CurrentStaff) -> AdminOrderOut:
    """shipped (or paid, e.g. picked up in store) -> completed; order-to-points are granted."""
    await service.complete(order_id, staff=staff)
    return await _out(order_id)


@router.post("/orders/{order_id}/cancel", response_model=AdminOrderOut)
async def cancel(
    order_id: Id, body: CancelIn, staff: CurrentStaff, idempotency_key: IdempotencyKey = None
) -> Any:
    """Cancel an order that has not shipped (a paid one is refunded in full)."""

    async def work() -> AdminOrderOut:
        await service.cancel(
            order_id,
            reason=body.reason,
            staff=staff,
            request_key=f"staff:{staff.id}:{idempotency_key}" if idempotency_key else None,
        )
        return await _out(order_id)

    return await idempotency.run(
        f"admin.orders.cancel:{staff.id}",
        idempotency_key,
        idempotency.fingerprint(order_id, body.model_dump()),
        work,
    )


@router.post("/orders/{order_id}/refund", response_model=AdminOrderOut)
async def refund(
    order_id: Id, body: AdminRefundIn, staff: CurrentStaff, idempotency_key: IdempotencyKey = None
) -> Any:
    """Refund lines (or everything left) of a paid, shipped or completed order: cash back
    through WeChat Pay, stored value to the wallet, spent points back, earned points
    reversed pro rata, the coupon back on a full refund while valid, and the units back
    in stock unless `restock` is false. Send an `Idempotency-Key`."""
    lines = [(ln.line_id, ln.quantity) for ln in body.lines] if body.lines is not None else None

    async def work() -> AdminOrderOut:
        await service.refund(
            order_id,
            lines,
            reason=body.reason,
            staff=staff,
            restock=body.restock,
            request_key=f"staff:{staff.id}:{idempotency_key}" if idempotency_key else None,
        )
        return await _out(order_id)

    return await idempotency.run(
        f"admin.orders.refund:{staff.id}",
        idempotency_key,
        idempotency.fingerprint(order_id, body.model_dump()),
        work,
    )


async def _refunds_out(refunds: list[OrderRefund]) -> list[AdminRefundOut]:
    members = await service.members_of_refunds(refunds)
    return [
        AdminRefundOut.model_validate(r).model_copy(update={"member_id": members.get(r.id)})
        for r in refunds
    ]


@router.get("/order-refunds/abnormal", response_model=list[AdminRefundOut])
async def abnormal_refunds(_staff: CurrentStaff) -> list[AdminRefundOut]:
    """Cash refunds WeChat Pay could not pay out, waiting for ops to resolve, with the
    order's member."""
    return await _refunds_out(await service.abnormal_refunds())


@router.post("/order-refunds/{refund_id}/resolve", response_model=AdminRefundOut)
async def resolve_refund(
    refund_id: Id,
    body: ResolveRefundIn,
    admin: AdminStaff,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Resolve an `abnormal` cash refund: `retry` sends it to the original payment again
    (`ORDER_REFUND_RETRY_REFUSED` if WeChat Pay will not), `offline` records that it was
    paid out another way (`note` says how). Admin only; audited; idempotent."""

    async def work() -> AdminRefundOut:
        refund = await service.resolve_abnormal_refund(
            refund_id, action=body.action, note=body.note, staff=admin
        )
        return (await _refunds_out([refund]))[0]

    return await idempotency.run(
        f"admin.orders.refund_resolve:{admin.id}",
        idempotency_key,
        idempotency.fingerprint(refund_id, body.model_dump()),
        work,
    )
