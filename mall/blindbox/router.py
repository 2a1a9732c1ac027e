from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from mall.blindbox import service, shipping
from mall.blindbox.schemas import DrawOut, MyDrawOut, PrizeShipIn, SeriesCard, SeriesDetail
from mall.deps import CurrentMember, IdempotencyKey, OptionalMember
from mall.kit import idempotency
from mall.kit.bounds import Cursor, Id, Limit
from mall.kit.pagination import Page
from mall.orders import service as orders_service
from mall.orders.schemas import OrderOut

router = APIRouter(prefix="/api/v1", tags=["blind boxes"])

DrawId = Annotated[str, Path(max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]


@router.get("/blind-boxes", response_model=list[SeriesCard])
async def series_on_offer() -> list[SeriesCard]:
    """Series on sale now or announced, with their cost, cap, age rule and guarantee."""
    return await service.list_on_offer()


@router.get("/blind-boxes/draws", response_model=Page[MyDrawOut])
async def my_draws(
    member: CurrentMember,
    series_id: Id | None = None,
    cursor: Cursor | None = None,
    size: Limit = 20,
) -> Page[MyDrawOut]:
    """The member's own draws, newest first."""
    rows, next_cursor = await service.my_draws(member.id, series_id, cursor, size)
    return Page[MyDrawOut](
        items=[MyDrawOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.post("/blind-boxes/draws/{draw_id}/ship", response_model=OrderOut)
async def ship_prize(draw_id: DrawId, body: PrizeShipIn, member: CurrentMember) -> OrderOut:
    """Ask for an item prize: it becomes a mall order of 0 fen to your address (or for
    pickup) that ships with a carrier and tracking number like any order
    (`/api/v1/orders/{id}`). Asking again returns the same order."""
    order = await shipping.ship_prize(member, draw_id, body)
    return await orders_service.order_out(order)


@router.get("/blind-boxes/{series_id}", response_model=SeriesDetail)
async def series_detail(series_id: Id, member: OptionalMember) -> SeriesDetail:
    """Before any draw: each prize's value, current probability (sold-out prizes drop
    out, the rest re-normalize), stock left, the tiers, the guarantee and the daily cap.
    With a member token it also shows the member's draws today and guarantee count."""
    return await service.disclose(series_id, member.id if member else None)


@router.post("/blind-boxes/{series_id}/draw", response_model=DrawOut)
async def draw(series_id: Id, member: CurrentMember, key: IdempotencyKey = None) -> DrawOut:
    """Spend the series' points cost for one draw. A retry with the same
    `Idempotency-Key` returns the first answer and draws nothing."""

    async def work() -> DrawOut:
        return await service.draw(member.id, series_id)

    result = await idempotency.run(
        f"blindbox.draw:{member.id}", key, idempotency.fingerprint(series_id), work
    )
    return DrawOut.model_validate(result)
