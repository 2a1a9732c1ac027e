"""Ops routes for blind boxes: series, prizes, stock, the draw log and its export."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse

from mall.blindbox import service
from mall.blindbox.schemas import (
    AdminDrawOut,
    AdminSeriesOut,
    PrizeIn,
    PrizePatch,
    ReconcileOut,
    SeriesIn,
    SeriesPatch,
    StockAdjustIn,
)
from mall.deps import CurrentStaff, IdempotencyKey
from mall.kit import idempotency
from mall.kit.bounds import Cursor, Id, Limit
from mall.kit.pagination import Page

router = APIRouter(tags=["admin: blind boxes"])


@router.get("/blind-boxes", response_model=list[AdminSeriesOut])
async def list_series(_staff: CurrentStaff) -> list[AdminSeriesOut]:
    return await service.list_series()


@router.post("/blind-boxes", response_model=AdminSeriesOut, status_code=201)
async def create_series(body: SeriesIn, staff: CurrentStaff) -> AdminSeriesOut:
    """A series with its prizes (optional here; add them later). Starts as a draft."""
    series = await service.create_series(staff, body)
    return await service.admin_view(series.id)


@router.get("/blind-boxes/{series_id}", response_model=AdminSeriesOut)
async def get_series(series_id: Id, _staff: CurrentStaff) -> AdminSeriesOut:
    """The series with each prize's units allotted, left (live, from Redis) and drawn."""
    return await service.admin_view(series_id)


@router.get("/blind-boxes/{series_id}/reconcile", response_model=ReconcileOut)
async def reconcile(series_id: Id, _staff: CurrentStaff) -> ReconcileOut:
    """Per limited prize: Redis stock + confirmed draws + stream backlog + give-backs due
    == units allotted (`mall check blindbox`, for this series)."""
    return await service.reconcile_series(series_id)


@router.patch("/blind-boxes/{series_id}", response_model=AdminSeriesOut)
async def update_series(series_id: Id, body: SeriesPatch, staff: CurrentStaff) -> AdminSeriesOut:
    """Change rules, window or status (`on_sale` opens it, `off_sale` closes it early)."""
    await service.update_series(staff, series_id, body)
    return await service.admin_view(series_id)


@router.delete("/blind-boxes/{series_id}", status_code=204)
async def delete_series(series_id: Id, staff: CurrentStaff) -> Response:
    """Only a series nobody has drawn yet; otherwise take it off sale."""
    await service.delete_series(staff, series_id)
    return Response(status_code=204)


@router.post("/blind-boxes/{series_id}/prizes", response_model=AdminSeriesOut, status_code=201)
async def add_prize(series_id: Id, body: PrizeIn, staff: CurrentStaff) -> AdminSeriesOut:
    await service.add_prize(staff, series_id, body)
    return await service.admin_view(series_id)


@router.patch("/blind-boxes/{series_id}/prizes/{prize_id}", response_model=AdminSeriesOut)
async def update_prize(
    series_id: Id, prize_id: Id, body: PrizePatch, staff: CurrentStaff
) -> AdminSeriesOut:
    """Name, image, tier, weight, value. Stock moves only through the stock route."""
    await service.update_prize(staff, series_id, prize_id, body)
    return await service.admin_view(series_id)


@router.delete("/blind-boxes/{series_id}/prizes/{prize_id}", status_code=204)
async def delete_prize(series_id: Id, prize_id: Id, staff: CurrentStaff) -> Response:
    """Only a prize nobody has drawn; otherwise set its weight to 0."""
    await service.delete_prize(staff, series_id, prize_id)
    return Response(status_code=204)


@router.post("/blind-boxes/{series_id}/prizes/{prize_id}/stock", response_model=AdminSeriesOut)
async def adjust_stock(
    series_id: Id,
    prize_id: Id,
    body: StockAdjustIn,
    staff: CurrentStaff,
    key: IdempotencyKey = None,
) -> AdminSeriesOut:
    """Add (or take away, never below zero) units of a limited prize; audited with the
    reason. A retry with the same `Idempotency-Key` changes nothing."""

    async def work() -> dict[str, int]:
        prize = await service.adjust_stock(staff, series_id, prize_id, body.delta, body.reason)
        return {"prize_id": prize.id}

    await idempotency.run(
        f"admin.blindbox.stock:{staff.id}",
        key,
        idempotency.fingerprint(series_id, prize_id, body.delta, body.reason),
        work,
    )
    return await service.admin_view(series_id)


@router.get("/blind-boxes/{series_id}/draws", response_model=Page[AdminDrawOut])
async def list_draws(
    series_id: Id,
    _staff: CurrentStaff,
    member_id: Id | None = None,
    cursor: Cursor | None = None,
    size: Limit = 50,
) -> Page[AdminDrawOut]:
    """The draw log, newest first: random value, probability table, guarantee counter."""
    rows, next_cursor = await service.list_draws(series_id, cursor, size, member_id)
    return Page[AdminDrawOut](
        items=[AdminDrawOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.get("/blind-boxes/{series_id}/draws.csv", response_class=StreamingResponse)
async def export_draws(series_id: Id, _staff: CurrentStaff) -> StreamingResponse:
    """The whole draw log as CSV (UTF-8), oldest first, for audits and re-derivation."""
    rows = service.export_draws_csv(series_id)
    first = await anext(rows)  # raises SERIES_NOT_FOUND before the response starts

    async def body() -> AsyncIterator[str]:
        yield first
        async for chunk in rows:
            yield chunk

    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="blindbox-{series_id}-draws.csv"'},
    )
