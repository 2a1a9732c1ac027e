from __future__ import annotations

from fastapi import APIRouter

from mall.deps import CurrentMember, IdempotencyKey
from mall.kit import idempotency
from mall.touch import service
from mall.touch.schemas import GrantOut, SubscriptionsIn

router = APIRouter(prefix="/api/v1", tags=["subscriptions"])


@router.post("/subscriptions", response_model=list[GrantOut])
async def subscribe(
    body: SubscriptionsIn, member: CurrentMember, idempotency_key: IdempotencyKey = None
) -> list[GrantOut]:
    """Record the templates the member accepted in `wx.requestSubscribeMessage`; each
    acceptance allows one message on that template."""

    async def work() -> list[GrantOut]:
        grants = await service.record_grants(member.id, body.template_ids)
        return [GrantOut(template_id=g.template_id, remaining=g.remaining) for g in grants]

    result: list[GrantOut] = await idempotency.run(
        f"subscriptions:{member.id}",
        idempotency_key,
        idempotency.fingerprint(body.template_ids),
        work,
    )
    return result


@router.get("/subscriptions", response_model=list[GrantOut])
async def my_subscriptions(member: CurrentMember) -> list[GrantOut]:
    return [
        GrantOut(template_id=g.template_id, remaining=g.remaining)
        for g in await service.grants_of(member.id)
    ]
