from __future__ import annotations

from fastapi import APIRouter

from mall.deps import CurrentMember, IdempotencyKey
from mall.kit import idempotency
from mall.kit.bounds import Cursor, Limit
from mall.kit.pagination import Page
from mall.points import service
from mall.points.schemas import (
    BindOrderIn,
    BindOrderOut,
    EntryOut,
    PointsSummaryOut,
    SignInOut,
    SignInStatusOut,
)

router = APIRouter(prefix="/api/v1", tags=["points"])


@router.get("/points", response_model=PointsSummaryOut)
async def summary(member: CurrentMember) -> PointsSummaryOut:
    """Balance, points lapsing in the next 30 days, level, growth and the next level."""
    return await service.summary(member.id)


@router.get("/points/ledger", response_model=Page[EntryOut])
async def ledger(
    member: CurrentMember,
    cursor: Cursor | None = None,
    size: Limit = 20,
) -> Page[EntryOut]:
    """The member's points entries, newest first."""
    rows, next_cursor = await service.ledger_page(member.id, cursor, size)
    return Page[EntryOut](items=[EntryOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/points/sign-in", response_model=SignInStatusOut)
async def sign_in_status(member: CurrentMember) -> SignInStatusOut:
    """Whether the member signed in today, the streak, and today's / tomorrow's reward."""
    return await service.sign_in_status(member.id)


@router.post("/points/sign-in", response_model=SignInOut)
async def sign_in(member: CurrentMember, key: IdempotencyKey = None) -> SignInOut:
    """Today's sign-in (Asia/Shanghai day). A second one the same day is ALREADY_SIGNED_IN."""

    async def work() -> SignInOut:
        return await service.sign_in(member.id)

    body = await idempotency.run(
        f"points.sign-in:{member.id}", key, idempotency.fingerprint(member.id), work
    )
    return SignInOut.model_validate(body)


@router.post("/points/bind-order", response_model=BindOrderOut)
async def bind_order(
    body: BindOrderIn, member: CurrentMember, key: IdempotencyKey = None
) -> BindOrderOut:
    """Claim a marketplace order by platform, order number and the phone on the order."""

    async def work() -> BindOrderOut:
        result = await service.bind_order(member.id, body.platform, body.order_no, body.phone)
        return BindOrderOut(
            points_awarded=result.points,
            platform=result.order.platform,
            order_no=result.order.order_no,
            paid_fen=result.order.paid_fen,
            balance=result.balance,
        )

    answer = await idempotency.run(
        f"points.bind-order:{member.id}",
        key,
        idempotency.fingerprint(body.model_dump()),
        work,
    )
    return BindOrderOut.model_validate(answer)
