"""Ops: top-up plans, the stored-value liability, members' wallets, manual adjustments
and top-up refunds. Adjustments and refunds move money, so they are admin-only."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

from mall.deps import AdminStaff, CurrentStaff, IdempotencyKey
from mall.kit import idempotency
from mall.kit.bounds import Cursor, Id, Limit
from mall.wallet import service
from mall.wallet.models import TopUp
from mall.wallet.schemas import (
    AdjustIn,
    AdjustOut,
    AdminTopUpOut,
    BalanceOut,
    EntryOut,
    LiabilityOut,
    MemberWalletOut,
    PlanIn,
    PlanOut,
    PlanPatch,
    TopUpRefundIn,
    TopUpRefundOut,
)
from mall.wechat.schemas import ResolveRefundIn

router = APIRouter(tags=["admin: wallet"])


@router.get("/wallet/plans", response_model=list[PlanOut])
async def list_plans(_staff: CurrentStaff) -> list[PlanOut]:
    """Every top-up plan, on and off."""
    return [PlanOut.model_validate(p) for p in await service.list_plans(active_only=False)]


@router.post("/wallet/plans", response_model=PlanOut, status_code=201)
async def create_plan(body: PlanIn, staff: CurrentStaff) -> PlanOut:
    """A new plan: pay `amount_fen`, get `bonus_fen` on top. Audited."""
    return PlanOut.model_validate(await service.create_plan(body.model_dump(), staff=staff))


@router.get("/wallet/plans/{plan_id}", response_model=PlanOut)
async def get_plan(plan_id: Id, _staff: CurrentStaff) -> PlanOut:
    return PlanOut.model_validate(await service.get_plan(plan_id))


@router.patch("/wallet/plans/{plan_id}", response_model=PlanOut)
async def update_plan(plan_id: Id, body: PlanPatch, staff: CurrentStaff) -> PlanOut:
    """Change a plan or switch it on/off (`active`). Open and paid top-ups keep the
    amount and bonus they were made with. Audited."""
    # null means "no limit" for per_member_limit and "unchanged" for the rest
    changes = {
        k: v
        for k, v in body.model_dump(exclude_unset=True).items()
        if v is not None or k == "per_member_limit"
    }
    return PlanOut.model_validate(await service.update_plan(plan_id, changes, staff=staff))


@router.delete("/wallet/plans/{plan_id}", status_code=204)
async def delete_plan(plan_id: Id, staff: CurrentStaff) -> Response:
    """Delete a plan nobody has used; a used plan is switched off instead (409)."""
    await service.delete_plan(plan_id, staff=staff)
    return Response(status_code=204)


@router.get("/wallet/liability", response_model=LiabilityOut)
async def liability(_staff: CurrentStaff) -> LiabilityOut:
    """Stored value outstanding: principal (refundable cash) and bonus, apart."""
    owed = await service.liability()
    return LiabilityOut(
        principal_fen=owed.principal_fen,
        bonus_fen=owed.bonus_fen,
        total_fen=owed.principal_fen + owed.bonus_fen,
        wallets_with_balance=owed.wallets_with_balance,
        pending_top_ups=owed.pending_top_ups,
        refunds_in_flight_fen=owed.refunds_in_flight_fen,
    )


@router.get("/members/{member_id}/wallet", response_model=MemberWalletOut)
async def member_wallet(
    member_id: Id,
    _staff: CurrentStaff,
    cursor: Cursor | None = None,
    size: Limit = 50,
) -> MemberWalletOut:
    """A member's balances and wallet entries, newest first."""
    balance = await service.get_balance(member_id)
    entries, next_cursor = await service.entries_page(member_id, cursor, size)
    return MemberWalletOut(
        member_id=member_id,
        principal_fen=balance.principal_fen,
        bonus_fen=balance.bonus_fen,
        total_fen=balance.total_fen,
        entries=[EntryOut.model_validate(e) for e in entries],
        next_cursor=next_cursor,
    )


@router.post("/members/{member_id}/wallet/adjustments", response_model=AdjustOut, status_code=201)
async def adjust(
    member_id: Id, body: AdjustIn, admin: AdminStaff, key: IdempotencyKey = None
) -> AdjustOut:
    """Add (positive) or remove (negative) principal and/or bonus with a reason. Never
    takes a balance below zero. Audited; send an Idempotency-Key."""

    async def work() -> AdjustOut:
        entry = await service.adjust(
            member_id,
            principal_fen=body.principal_fen,
            bonus_fen=body.bonus_fen,
            reason=body.reason,
            staff=admin,
            idempotency_key=f"{admin.id}:{key}" if key else None,
        )
        balance = await service.get_balance(member_id)
        return AdjustOut(
            entry=EntryOut.model_validate(entry),
            balance=BalanceOut(
                principal_fen=balance.principal_fen,
                bonus_fen=balance.bonus_fen,
                total_fen=balance.total_fen,
            ),
        )

    answer = await idempotency.run(
        f"admin.wallet.adjust:{admin.id}",
        key,
        idempotency.fingerprint(member_id, body.model_dump(mode="json")),
        work,
    )
    return AdjustOut.model_validate(answer)


async def _admin_top_up(top_up: TopUp) -> AdminTopUpOut:
    balance = await service.get_balance(top_up.member_id)
    fields = {n: getattr(top_up, n) for n in AdminTopUpOut.model_fields if n != "refundable_fen"}
    fields["refundable_fen"] = service.refundable_fen(top_up, balance)
    return AdminTopUpOut(**fields)


@router.get("/wallet/top-ups", response_model=list[AdminTopUpOut])
async def list_top_ups(
    _staff: CurrentStaff,
    response: Response,
    member_id: Id | None = None,
    status: str | None = Query(default=None, pattern="^(pending|paid|closed)$"),
    cursor: Cursor | None = None,
    size: Limit = 50,
) -> list[AdminTopUpOut]:
    """Top-ups, newest first; the next page's cursor is in the `X-Next-Cursor` header."""
    rows, next_cursor = await service.list_top_ups(
        member_id=member_id, status=status, cursor=cursor, size=size
    )
    if next_cursor:
        response.headers["X-Next-Cursor"] = next_cursor
    return [await _admin_top_up(t) for t in rows]


@router.get("/wallet/top-ups/{top_up_id}", response_model=AdminTopUpOut)
async def get_top_up(top_up_id: Id, _staff: CurrentStaff) -> AdminTopUpOut:
    """A top-up with the principal that can be refunded now."""
    return await _admin_top_up(await service.get_top_up(top_up_id))


@router.get("/wallet/top-ups/{top_up_id}/refunds", response_model=list[TopUpRefundOut])
async def top_up_refunds(top_up_id: Id, _staff: CurrentStaff) -> list[TopUpRefundOut]:
    return [TopUpRefundOut.model_validate(r) for r in await service.refunds_of(top_up_id)]


@router.post("/wallet/top-ups/{top_up_id}/refund", response_model=TopUpRefundOut, status_code=201)
async def refund_top_up(
    top_up_id: Id, body: TopUpRefundIn, admin: AdminStaff, key: IdempotencyKey = None
) -> TopUpRefundOut:
    """Pay principal of a top-up back through WeChat Pay: only what is unspent; the
    top-up's bonus is forfeited in proportion, and bonus already spent is kept back
    from the cash (`clawback_fen`). Audited; send an Idempotency-Key."""

    async def work() -> TopUpRefundOut:
        row = await service.refund_top_up(
            top_up_id,
            principal_fen=body.principal_fen,
            reason=body.reason,
            staff=admin,
            idempotency_key=f"{admin.id}:{key}" if key else None,
        )
        return TopUpRefundOut.model_validate(row)

    answer = await idempotency.run(
        f"admin.wallet.topup_refund:{admin.id}",
        key,
        idempotency.fingerprint(top_up_id, body.model_dump(mode="json")),
        work,
    )
    return TopUpRefundOut.model_validate(answer)


@router.get("/wallet/refunds/abnormal", response_model=list[TopUpRefundOut])
async def abnormal_refunds(_staff: CurrentStaff) -> list[TopUpRefundOut]:
    """Top-up refunds WeChat Pay could not pay out, waiting for ops to resolve."""
    return [TopUpRefundOut.model_validate(r) for r in await service.abnormal_refunds()]


@router.post("/wallet/refunds/{refund_id}/resolve", response_model=TopUpRefundOut)
async def resolve_refund(
    refund_id: Id,
    body: ResolveRefundIn,
    admin: AdminStaff,
    key: IdempotencyKey = None,
) -> TopUpRefundOut:
    """Resolve an `abnormal` top-up refund: `retry` sends it to the original payment
    again (`WALLET_REFUND_RETRY_REFUSED` if WeChat Pay will not), `offline` records that
    it was paid out another way (`note` says how). Admin only; audited; idempotent."""

    async def work() -> TopUpRefundOut:
        row = await service.resolve_abnormal_refund(
            refund_id, action=body.action, note=body.note, staff=admin
        )
        return TopUpRefundOut.model_validate(row)

    answer = await idempotency.run(
        f"admin.wallet.refund_resolve:{admin.id}",
        key,
        idempotency.fingerprint(refund_id, body.model_dump(mode="json")),
        work,
    )
    return TopUpRefundOut.model_validate(answer)
