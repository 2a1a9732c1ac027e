"""Ops dashboard: the health figures of the console's charts, in one read-only call.

Figures come from the domains' services where they have one (points overview, coupon
template figures, seckill live session view, wallet liability). Where a domain has no
such function the models are read here, read-only: member sign-ups (members), repurchase
(mall orders and bound marketplace orders), and the monthly stored-value movement."""

from __future__ import annotations

import importlib.util
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from tortoise.functions import Count, Sum

from mall.coupons import service as coupons_service
from mall.deps import CurrentStaff
from mall.kit import clock
from mall.members.models import Member
from mall.points import service as points_service
from mall.points.models import ExternalOrder
from mall.seckill import service as seckill_service

router = APIRouter(tags=["admin: dashboard"])

# the band ops aim for: below 30% members are idle, above 50% points are too cheap
CONSUMPTION_LOW = 0.3
CONSUMPTION_HIGH = 0.5
# mall orders that count as a purchase (paid, whatever happened after, except a full refund)
PURCHASED = ("paid", "shipped", "completed")
MARKETPLACE_PURCHASED = ("paid", "shipped", "completed")


class PointsMonth(BaseModel):
    month: str = Field(examples=["2025-06"])
    issued: int
    spent: int
    expired: int
    consumption_rate: float | None = Field(description="spent / issued; null when none issued")


class BindingMonth(BaseModel):
    month: str
    imported: int
    bound: int
    rate: float | None = Field(description="bound / imported (orders imported that month)")


class SignupMonth(BaseModel):
    month: str
    members: int


class RepurchaseQuarter(BaseModel):
    quarter: str = Field(examples=["2025Q2"])
    buyers: int = Field(description="members with at least one purchase in the quarter")
    repeat_buyers: int = Field(description="members with two or more purchases in the quarter")
    rate: float | None


class SellThrough(BaseModel):
    session_id: int
    name: str
    starts_at: datetime
    state: str
    stock: int
    sold: int
    rate: float | None = Field(description="sold / stock put on sale")


class CouponTemplateFigure(BaseModel):
    id: int
    name: str
    issued: int
    used: int
    rate: float | None


class CouponFigures(BaseModel):
    issued: int
    used: int
    rate: float | None = Field(description="used / issued, all templates")
    templates: list[CouponTemplateFigure]


class StoredValueMonth(BaseModel):
    month: str
    outstanding_fen: int = Field(description="principal + bonus owed at the end of the month")


class StoredValue(BaseModel):
    available: bool = Field(description="false when the wallet domain is not installed")
    outstanding_fen: int | None = None
    principal_fen: int | None = None
    bonus_fen: int | None = None
    wallets_with_balance: int | None = None
    months: list[StoredValueMonth] = []


class Totals(BaseModel):
    points_issued: int
    points_spent: int
    consumption_rate: float | None
    orders_imported: int
    orders_bound: int
    binding_rate: float | None
    members: int


class DashboardOut(BaseModel):
    generated_at: datetime
    months: list[str]
    consumption_band: tuple[float, float] = (CONSUMPTION_LOW, CONSUMPTION_HIGH)
    totals: Totals
    points: list[PointsMonth]
    binding: list[BindingMonth]
    signups: list[SignupMonth]
    repurchase: list[RepurchaseQuarter]
    seckill: list[SellThrough]
    coupons: CouponFigures
    stored_value: StoredValue


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole > 0 else None


def _month_starts(today: date, count: int) -> list[date]:
    first = today.replace(day=1)
    months = [first]
    for _ in range(count - 1):
        first = (first - timedelta(days=1)).replace(day=1)
        months.append(first)
    return months[::-1]


def _quarter_starts(today: date, count: int) -> list[date]:
    start = date(today.year, 3 * ((today.month - 1) // 3) + 1, 1)
    quarters = [start]
    for _ in range(count - 1):
        month = start.month - 3
        start = date(start.year - 1, month + 12, 1) if month < 1 else date(start.year, month, 1)
        quarters.append(start)
    return quarters[::-1]


def _label(day: date) -> str:
    return f"{day.year}-{day.month:02d}"


async def _points(months: list[date], today: date) -> tuple[list[PointsMonth], list[BindingMonth]]:
    points, binding = [], []
    for start in months:
        end = min(clock.next_month_start(start) - timedelta(days=1), today)
        o = await points_service.overview(start, end)
        points.append(
            PointsMonth(
                month=_label(start),
                issued=o["points_issued"],
                spent=o["points_spent"],
                expired=o["points_expired"],
                consumption_rate=o["consumption_rate"],
            )
        )
        binding.append(
            BindingMonth(
                month=_label(start),
                imported=o["orders_imported"],
                bound=o["orders_bound"],
                rate=o["binding_rate"],
            )
        )
    return points, binding


async def _signups(months: list[date]) -> list[SignupMonth]:
    # members has no figures function: its model is read here
    out = []
    for start in months:
        since, until = clock.local_month_bounds_utc(start)
        n = await Member.filter(created_at__gte=since, created_at__lt=until).count()
        out.append(SignupMonth(month=_label(start), members=n))
    return out


async def _purchases(since: datetime, until: datetime) -> Counter[int]:
    """Purchases per member in [since, until): mall orders by payment time and marketplace
    orders bound to a member, by their payment time."""
    per_member: Counter[int] = Counter()
    if importlib.util.find_spec("mall.orders.models") is not None:
        from mall.orders.models import Order

        rows = (
            await Order.filter(status__in=PURCHASED, paid_at__gte=since, paid_at__lt=until)
            .annotate(n=Count("id"))
            .group_by("member_id")
            .values_list("member_id", "n")
        )
        for member_id, n in rows:
            per_member[int(member_id)] += int(n)
    rows = (
        await ExternalOrder.filter(
            member_id__isnull=False,
            status__in=MARKETPLACE_PURCHASED,
            paid_at__gte=since,
            paid_at__lt=until,
        )
        .annotate(n=Count("id"))
        .group_by("member_id")
        .values_list("member_id", "n")
    )
    for member_id, n in rows:
        per_member[int(member_id)] += int(n)
    return per_member


async def _repurchase(today: date, count: int) -> list[RepurchaseQuarter]:
    out = []
    for start in _quarter_starts(today, count):
        end = clock.next_month_start(clock.next_month_start(clock.next_month_start(start)))
        per_member = await _purchases(
            clock.start_of_local_day(start), clock.start_of_local_day(end)
        )
        buyers = len(per_member)
        repeat = sum(1 for n in per_member.values() if n >= 2)
        out.append(
            RepurchaseQuarter(
                quarter=f"{start.year}Q{(start.month - 1) // 3 + 1}",
                buyers=buyers,
                repeat_buyers=repeat,
                rate=_rate(repeat, buyers),
            )
        )
    return out


async def _seckill(limit: int) -> list[SellThrough]:
    out = []
    for session in await seckill_service.list_sessions(limit):
        _session, views = await seckill_service.session_items_live(session.id)
        stock = sum(v.item.stock for v in views)
        sold = sum(v.item.sold for v in views)
        out.append(
            SellThrough(
                session_id=session.id,
                name=session.name,
                starts_at=session.starts_at,
                state=seckill_service.session_state(session),
                stock=stock,
                sold=sold,
                rate=_rate(sold, stock),
            )
        )
    return out[::-1]  # oldest first, like the other series


async def _coupons() -> CouponFigures:
    templates = await coupons_service.list_templates()
    figures = await coupons_service.template_figures([t.id for t in templates])
    rows = []
    for t in templates:
        issued, used = figures.get(t.id, (0, 0))
        rows.append(
            CouponTemplateFigure(
                id=t.id, name=t.name, issued=issued, used=used, rate=_rate(used, issued)
            )
        )
    issued = sum(r.issued for r in rows)
    used = sum(r.used for r in rows)
    rows.sort(key=lambda r: r.issued, reverse=True)
    return CouponFigures(issued=issued, used=used, rate=_rate(used, issued), templates=rows[:10])


async def _stored_value(months: list[date]) -> StoredValue:
    if importlib.util.find_spec("mall.wallet.service") is None:
        return StoredValue(available=False)
    from mall.wallet import service as wallet_service
    from mall.wallet.models import WalletEntry

    owed: Any = await wallet_service.liability()
    outstanding = int(owed.principal_fen) + int(owed.bonus_fen)
    # the wallet has no history function: walk back from today's figure by each
    # month's net movement in its (append-only) ledger, read here
    history = []
    for start in months:
        _since, until = clock.local_month_bounds_utc(start)
        later = (
            await WalletEntry.filter(created_at__gte=until)
            .annotate(p=Sum("principal_delta"), b=Sum("bonus_delta"))
            .values("p", "b")
        )
        moved = int(later[0]["p"] or 0) + int(later[0]["b"] or 0) if later else 0
        history.append(StoredValueMonth(month=_label(start), outstanding_fen=outstanding - moved))
    return StoredValue(
        available=True,
        outstanding_fen=outstanding,
        principal_fen=int(owed.principal_fen),
        bonus_fen=int(owed.bonus_fen),
        wallets_with_balance=int(owed.wallets_with_balance),
        months=history,
    )


@router.get("/dashboard", response_model=DashboardOut)
async def dashboard(
    _staff: CurrentStaff,
    months: Annotated[int, Query(ge=1, le=24, description="months of history")] = 12,
    quarters: Annotated[int, Query(ge=1, le=12, description="quarters of repurchase")] = 4,
    sessions: Annotated[int, Query(ge=1, le=50, description="latest flash-sale sessions")] = 8,
) -> DashboardOut:
    """The console dashboard: per month (Asia/Shanghai) points issued vs spent with the
    consumption rate and its 30%-50% band, binding rate of imported marketplace orders,
    member sign-ups; repurchase rate per quarter (members with 2+ purchases among members
    with any: paid mall orders and bound marketplace orders); sell-through of the latest
    flash-sale sessions; coupon redemption (used / issued); stored value outstanding."""
    today = clock.today()
    month_starts = _month_starts(today, months)
    points, binding = await _points(month_starts, today)
    window = await points_service.overview(month_starts[0], today)
    return DashboardOut(
        generated_at=clock.now(),
        months=[_label(m) for m in month_starts],
        totals=Totals(
            points_issued=window["points_issued"],
            points_spent=window["points_spent"],
            consumption_rate=window["consumption_rate"],
            orders_imported=window["orders_imported"],
            orders_bound=window["orders_bound"],
            binding_rate=window["binding_rate"],
            members=await Member.all().count(),
        ),
        points=points,
        binding=binding,
        signups=await _signups(month_starts),
        repurchase=await _repurchase(today, quarters),
        seckill=await _seckill(sessions),
        coupons=await _coupons(),
        stored_value=await _stored_value(month_starts),
    )
