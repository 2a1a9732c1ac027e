"""Ops routes for flash sales: sessions with items, warm-up, live stock and winners,
closing early, and the reconciliation figures. Every write is audited."""

from __future__ import annotations

from fastapi import APIRouter, Response

from mall.deps import CurrentStaff
from mall.kit.bounds import Cursor, Id, Limit
from mall.kit.pagination import Page, cursor_page
from mall.seckill import service
from mall.seckill.models import SeckillOrder
from mall.seckill.schemas import (
    AdminItemOut,
    AdminSessionOut,
    ItemCheckOut,
    ItemIn,
    ItemPatch,
    SessionIn,
    SessionPatch,
    WinnerOut,
)

router = APIRouter(tags=["admin: seckill"])


async def _session_out(session_id: int) -> AdminSessionOut:
    session, views = await service.session_items_live(session_id)
    return AdminSessionOut(
        id=session.id,
        name=session.name,
        starts_at=session.starts_at,
        ends_at=session.ends_at,
        status=session.status.value,
        state=service.session_state(session),
        rules=service.rules_of(session),
        closed_at=session.closed_at,
        created_at=session.created_at,
        items=[
            AdminItemOut(
                **service.item_out(v.item, v.stock_left).model_dump(),
                sold=v.item.sold,
                warm=v.warm,
                held=v.held,
                backlog=v.backlog,
            )
            for v in views
        ],
    )


@router.get("/seckill/sessions", response_model=list[AdminSessionOut])
async def list_sessions(_staff: CurrentStaff) -> list[AdminSessionOut]:
    """Sessions, newest start first, with live stock per item."""
    return [await _session_out(s.id) for s in await service.list_sessions()]


@router.post("/seckill/sessions", response_model=AdminSessionOut, status_code=201)
async def create_session(body: SessionIn, staff: CurrentStaff) -> AdminSessionOut:
    """Create a session with its items. It is warmed into Redis by a job before it starts
    (or now with `POST .../warm`)."""
    session = await service.create_session(body, staff)
    return await _session_out(session.id)


@router.get("/seckill/sessions/{session_id}", response_model=AdminSessionOut)
async def get_session(session_id: Id, _staff: CurrentStaff) -> AdminSessionOut:
    """A session with live stock, units held by orders and the unpersisted backlog."""
    return await _session_out(session_id)


@router.patch("/seckill/sessions/{session_id}", response_model=AdminSessionOut)
async def update_session(
    session_id: Id, body: SessionPatch, staff: CurrentStaff
) -> AdminSessionOut:
    await service.update_session(session_id, body, staff)
    return await _session_out(session_id)


@router.delete("/seckill/sessions/{session_id}", status_code=204)
async def delete_session(session_id: Id, staff: CurrentStaff) -> Response:
    """Only a session nobody has won anything in; otherwise close it."""
    await service.delete_session(session_id, staff)
    return Response(status_code=204)


@router.post("/seckill/sessions/{session_id}/items", response_model=AdminSessionOut)
async def add_item(session_id: Id, body: ItemIn, staff: CurrentStaff) -> AdminSessionOut:
    await service.add_item(session_id, body, staff)
    return await _session_out(session_id)


@router.patch("/seckill/items/{item_id}", response_model=AdminSessionOut)
async def update_item(item_id: Id, body: ItemPatch, staff: CurrentStaff) -> AdminSessionOut:
    """Edit an item; a stock change never takes back units already won."""
    item = await service.update_item(item_id, body, staff)
    return await _session_out(item.session_id)


@router.post("/seckill/sessions/{session_id}/warm", response_model=AdminSessionOut)
async def warm(session_id: Id, staff: CurrentStaff) -> AdminSessionOut:
    """Load the session's items into Redis now. Safe to repeat: stock already warm is kept."""
    await service.warm_session(session_id, staff)
    return await _session_out(session_id)


@router.post("/seckill/sessions/{session_id}/close", response_model=AdminSessionOut)
async def close(session_id: Id, staff: CurrentStaff) -> AdminSessionOut:
    """Close early: attempts answer `ended` from now on; wins already made stand."""
    await service.close_session(session_id, staff)
    return await _session_out(session_id)


@router.get("/seckill/items/{item_id}/winners", response_model=Page[WinnerOut])
async def winners(
    item_id: Id,
    _staff: CurrentStaff,
    cursor: Cursor | None = None,
    size: Limit = 50,
) -> Page[WinnerOut]:
    """Persisted wins of an item, newest first (all statuses)."""
    await service.get_item(item_id)
    rows, next_cursor = await cursor_page(SeckillOrder.filter(item_id=item_id), cursor, size)
    return Page[WinnerOut](
        items=[WinnerOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.get("/seckill/sessions/{session_id}/reconcile", response_model=list[ItemCheckOut])
async def reconcile(session_id: Id, _staff: CurrentStaff) -> list[ItemCheckOut]:
    """Redis stock + held + backlog + give-backs due against the initial stock, per item."""
    _session, views = await service.session_items_live(session_id)
    checks = await service.reconcile([v.item.id for v in views])
    return [
        ItemCheckOut(
            item_id=c.item_id,
            title=c.title,
            initial=c.initial,
            redis_stock=c.redis_stock,
            held=c.held,
            backlog=c.backlog,
            returns_due=c.returns_due,
            ok=c.ok,
            problems=c.problems,
        )
        for c in checks
    ]
