"""Ops: promoter levels and rates, promoters and their customers, bindings, commissions
and their CSV export."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from mall.deps import AdminStaff, CurrentStaff
from mall.errors import NOT_FOUND
from mall.kit import clock
from mall.kit.bounds import Cursor, Id, Limit
from mall.kit.pagination import Page
from mall.kit.text import SafeLine
from mall.referral import service
from mall.referral.models import Promoter
from mall.referral.schemas import (
    BindingOut,
    CommissionOut,
    CustomerOut,
    PromoterIn,
    PromoterOut,
    PromoterPatch,
    RulesIn,
    RulesOut,
)

router = APIRouter(tags=["admin: referral"])


async def _promoters_out(promoters: list[Promoter]) -> list[PromoterOut]:
    rules = await service.get_rules()
    figures = await service.figures([p.id for p in promoters])
    names = await service.names(promoters)
    out = []
    for p in promoters:
        level = service.level_of(rules, p.level)
        customers, commission = figures.get(p.id, (0, 0))
        out.append(
            PromoterOut(
                id=p.id,
                kind="member" if p.member_id is not None else "staff",
                member_id=p.member_id,
                staff_id=p.staff_id,
                name=names.get(p.id, ""),
                code=p.code,
                level=level.code,
                level_name=level.name,
                rate_bp=level.rate_bp,
                active=p.active,
                customers=customers,
                commission_fen=commission,
                created_at=p.created_at,
            )
        )
    return out


@router.get("/referral/rules", response_model=RulesOut)
async def get_rules(_staff: CurrentStaff) -> RulesOut:
    """Promoter levels with their commission rates (basis points: 500 = 5%)."""
    version, rules, at = await service.get_rules_version()
    return RulesOut(version=version, rules=rules, updated_at=at)


@router.put("/referral/rules", response_model=RulesOut)
async def put_rules(body: RulesIn, admin: AdminStaff) -> RulesOut:
    """Replace the levels and rates (admin only; audited). New rates apply to orders that
    complete from now on; entries already written keep their rate."""
    await service.save_rules(body.rules, staff=admin, base_version=body.base_version)
    version, rules, at = await service.get_rules_version()
    return RulesOut(version=version, rules=rules, updated_at=at)


@router.get("/referral/promoters", response_model=Page[PromoterOut])
async def list_promoters(
    _staff: CurrentStaff,
    level: Annotated[SafeLine | None, Query(max_length=32)] = None,
    cursor: Cursor | None = None,
    size: Limit = 20,
) -> Page[PromoterOut]:
    """Promoters, newest first, with their customers and net commission."""
    rows, next_cursor = await service.list_promoters(level=level, cursor=cursor, size=size)
    return Page[PromoterOut](items=await _promoters_out(rows), next_cursor=next_cursor)


@router.post("/referral/promoters", response_model=PromoterOut, status_code=201)
async def create_promoter(body: PromoterIn, staff: CurrentStaff) -> PromoterOut:
    """Make a member (e.g. a KOC) a promoter at a level, or (admin only) give a staff
    salesperson a share code. A member who already has a share code keeps it. Audited."""
    promoter = await service.create_promoter(
        member_id=body.member_id, staff_id=body.staff_id, level=body.level, actor=staff
    )
    return (await _promoters_out([promoter]))[0]


@router.get("/referral/me", response_model=PromoterOut)
async def my_promoter(staff: CurrentStaff) -> PromoterOut:
    """The signed-in staff member's own share code, if they are a promoter."""
    return (await _promoters_out([await service.promoter_of_staff(staff.id)]))[0]


@router.get("/referral/promoters/{promoter_id}", response_model=PromoterOut)
async def get_promoter(promoter_id: Id, _staff: CurrentStaff) -> PromoterOut:
    return (await _promoters_out([await service.get_promoter(promoter_id)]))[0]


@router.patch("/referral/promoters/{promoter_id}", response_model=PromoterOut)
async def update_promoter(promoter_id: Id, body: PromoterPatch, staff: CurrentStaff) -> PromoterOut:
    """Move a promoter to another level, or switch them off (an inactive promoter's code
    binds nobody new and earns no new commission). Audited."""
    promoter = await service.update_promoter(
        promoter_id, level=body.level, active=body.active, actor=staff
    )
    return (await _promoters_out([promoter]))[0]


@router.get("/referral/promoters/{promoter_id}/customers", response_model=Page[CustomerOut])
async def promoter_customers(
    promoter_id: Id,
    _staff: CurrentStaff,
    cursor: Cursor | None = None,
    size: Limit = 20,
) -> Page[CustomerOut]:
    await service.get_promoter(promoter_id)
    rows, next_cursor = await service.customers_page(promoter_id, cursor, size)
    return Page[CustomerOut](
        items=[
            CustomerOut(
                customer_id=b.customer_id,
                nickname=nickname,
                source=b.source,
                bound_at=b.bound_at,
                commission_fen=earned,
            )
            for b, nickname, earned in rows
        ],
        next_cursor=next_cursor,
    )


@router.get("/referral/bindings/{member_id}", response_model=BindingOut)
async def binding_of(member_id: Id, _staff: CurrentStaff) -> BindingOut:
    """Which promoter a member is bound to (404 when none)."""
    b = await service.binding_of(member_id)
    if b is None:
        raise NOT_FOUND()
    return BindingOut(
        customer_id=b.customer_id,
        promoter_id=b.promoter_id,
        code=b.code,
        source=b.source,
        bound_at=b.bound_at,
    )


@router.get("/referral/commissions", response_model=Page[CommissionOut])
async def list_commissions(
    _staff: CurrentStaff,
    promoter_id: Id | None = None,
    cursor: Cursor | None = None,
    size: Limit = 50,
) -> Page[CommissionOut]:
    """The commission ledger, newest first (refund reversals are negative)."""
    rows, next_cursor = await service.commissions_page(
        promoter_id=promoter_id, cursor=cursor, size=size
    )
    return Page[CommissionOut](
        items=[CommissionOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/referral/commissions.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def export_commissions(
    _staff: CurrentStaff,
    promoter_id: Id | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> StreamingResponse:
    """The commission ledger as CSV (UTF-8 with BOM), optionally for one promoter and a
    time window [since, until)."""
    stamp = clock.local_now().strftime("%Y%m%d-%H%M%S")
    return StreamingResponse(
        service.export_csv(promoter_id=promoter_id, since=since, until=until),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="commissions-{stamp}.csv"'},
    )
