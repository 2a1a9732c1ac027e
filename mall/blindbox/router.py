"""Shopper routes for blind boxes. The draw route is a hot path: the member id comes
straight from the signed token (no database read) and one Lua call decides and records
the draw; the answer is `pending` until the consumer persists it."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from mall.blindbox import service, shipping
from mall.blindbox.schemas import DrawOut, MyDrawOut, PrizeShipIn, SeriesCard, SeriesDetail
from mall.deps import CurrentMember, MemberId, OptionalMember
from mall.errors import error_responses
from mall.kit import idempotency
from mall.kit.bounds import Cursor, Id, Limit
from mall.kit.fastpath import FastRoute, bearer_openapi, fits_id
from mall.kit.pagination import Page
from mall.members import service as members_service
from mall.orders import service as orders_service
from mall.orders.schemas import OrderOut

router = APIRouter(prefix="/api/v1", tags=["blind boxes"])

# "<series id>-<hex>" as the draw answers it
DrawId = Annotated[str, Path(max_length=48, pattern=r"^[A-Za-z0-9_-]+$")]


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
    """The member's own recorded draws (confirmed and released), newest first."""
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


@router.get(
    "/blind-boxes/draws/{draw_id}",
    response_model=DrawOut,
    responses=error_responses(service.DRAW_NOT_FOUND),
)
async def draw_status(draw_id: DrawId, member_id: MemberId) -> DrawOut:
    """One of your draws: `pending` until it is recorded, then `confirmed` (points spent,
    prize granted or due) or `released` with `release_reason` (nothing spent)."""
    return await service.get_draw(member_id, draw_id)


@router.get("/blind-boxes/{series_id}", response_model=SeriesDetail)
async def series_detail(series_id: Id, member: OptionalMember) -> SeriesDetail:
    """Before any draw: each prize's value, current probability (sold-out prizes drop
    out, the rest re-normalize), stock left, the tiers, the guarantee and the daily cap.
    With a member token it also shows the member's draws today and guarantee count."""
    return await service.disclose(series_id, member.id if member else None)


@router.post(
    "/blind-boxes/{series_id}/draw",
    response_model=DrawOut,
    openapi_extra=bearer_openapi(retry="the same draw"),
)
async def draw(series_id: Id, request: Request) -> Response:
    """Draw once for the series' points cost. The answer names the prize and the draw's
    reservation (`draw_id`), `pending`: the points are spent when it is recorded, moments
    later (GET /blind-boxes/draws/{draw_id}); a member short of points then finds it
    `released`, nothing spent. A retry with the same `Idempotency-Key` returns the same
    draw. Redis unreachable: 503, nothing changed."""
    headers = request.headers
    member_id = (await members_service.member_of_header(headers.get("authorization")))[0]
    key = headers.get("idempotency-key")
    idempotency.check_key(key)
    out = await service.draw(member_id, series_id, key)
    return Response(service.answer_json(out), media_type="application/json")


# --- the hot path without the framework ---------------------------------------------


async def _fast_draw(
    found: re.Match[str], authorization: str | None, key: str | None, _body: bytes
) -> bytes:
    """`draw` above, answered by kit.fastpath: same answers, errors and headers."""
    idempotency.check_key(key)
    member_id = (await members_service.member_of_header(authorization))[0]
    return service.answer_json(await service.draw(member_id, int(found.group(1)), key))


FAST_ROUTES = [
    FastRoute(
        "POST",
        "/api/v1/blind-boxes/{series_id}/draw",
        # ASCII digits only, at most BIGINT's 19
        re.compile(r"^/api/v1/blind-boxes/([0-9]{1,19})/draw$"),
        _fast_draw,
        accepts=fits_id,
    )
]
