"""A fixture of members with known data, and the rules each should match."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime
from typing import Any

from mall.members.models import Member
from mall.orders.models import Order
from mall.points.models import ExternalOrder

# 10 Mar 2025, 12:00 Shanghai: "this month" is March
NOW = datetime(2025, 3, 10, 4, tzinfo=UTC)


def at(day: str) -> datetime:
    """Noon Asia/Shanghai on the day."""
    y, m, d = (int(x) for x in day.split("-"))
    return datetime(y, m, d, 4, tzinfo=UTC)


async def member(name: str, **data: Any) -> Member:
    return await Member.create(openid=f"o_{name}", nickname=name, **data)


async def orders(m: Member, *paid_days: str, status: str = "completed") -> None:
    for day in paid_days:
        await Order.create(
            number=f"N{secrets.token_hex(6)}",
            member_id=m.id,
            delivery="express",
            status=status,
            paid_at=at(day) if status != "cancelled" else None,
        )


async def marketplace(m: Member, platform: str, *paid_days: str, status: str = "completed") -> None:
    for day in paid_days:
        await ExternalOrder.create(
            platform=platform,
            order_no=f"X{secrets.token_hex(6)}",
            phone="13800000000",
            paid_fen=9900,
            paid_at=at(day),
            status=status,
            member_id=m.id,
            bound_at=at(day),
            imported_at=at(day),
            updated_at=at(day),
        )


async def crowd() -> dict[str, Member]:
    """Five members whose data each rule below tells apart."""
    a = await member("a", level=3, birthday=date(1990, 3, 15), points_balance=1500, tags=["vip"])
    await orders(a, "2024-11-01", "2024-12-01", "2025-01-05", "2025-02-01", "2025-02-10")
    await marketplace(a, "tmall", "2024-10-01")  # a: 6 purchases in all, 5 in the mall

    b = await member("b", level=1, birthday=date(1985, 7, 1), points_balance=200)
    await orders(b, "2024-06-01")
    await orders(b, "2024-08-01", status="refunded")  # not a purchase
    await marketplace(b, "jd", "2024-05-01")  # b: 2 purchases, last 2024-06-01

    c = await member("c", level=2, points_balance=1000, tags=["vip", "friend"])
    await orders(c, "2024-09-01", "2024-10-01", "2024-12-31")
    await marketplace(c, "tmall", "2025-01-20", "2025-02-20")  # c: 5 in all, 3 in the mall

    d = await member("d", level=0, points_balance=0, tags=["blacklist"])  # never bought

    e = await member("e", level=4, birthday=date(2000, 3, 31), points_balance=5000)
    await orders(e, "2025-01-01", status="cancelled")
    await marketplace(e, "douyin", "2025-01-02", status="refunded")  # bound, never bought
    return {"a": a, "b": b, "c": c, "d": d, "e": e}


# (rules, the member names that match)
CASES: list[tuple[list[dict[str, Any]], set[str]]] = [
    ([], {"a", "b", "c", "d", "e"}),
    ([{"field": "purchase_count", "gte": 5}], {"a", "c"}),
    ([{"field": "purchase_count", "gte": 5, "source": "mall"}], {"a"}),
    ([{"field": "purchase_count", "gte": 1, "source": "marketplace"}], {"a", "b", "c"}),
    ([{"field": "purchase_count", "lte": 0}], {"d", "e"}),
    ([{"field": "purchase_count", "gte": 2, "lte": 5}], {"b", "c"}),
    ([{"field": "bound_platform", "platforms": ["tmall"]}], {"a", "c"}),
    ([{"field": "bound_platform", "platforms": ["天猫", "JD"]}], {"a", "b", "c"}),
    ([{"field": "bound_platform", "platforms": []}], {"a", "b", "c", "e"}),
    ([{"field": "bound_platform", "platforms": [], "bound": False}], {"d"}),
    ([{"field": "level", "gte": 2}], {"a", "c", "e"}),
    ([{"field": "level", "in": [0, 4]}], {"d", "e"}),
    ([{"field": "level", "gte": 1, "lte": 2}], {"b", "c"}),
    ([{"field": "birthday_month", "this_month": True}], {"a", "e"}),
    ([{"field": "birthday_month", "months": [7, 12]}], {"b"}),
    ([{"field": "points_balance", "gte": 1000}], {"a", "c", "e"}),
    ([{"field": "points_balance", "gte": 200, "lte": 1000}], {"b", "c"}),
    ([{"field": "last_purchase", "after": "2025-01-01"}], {"a", "c"}),
    ([{"field": "last_purchase", "after": "2025-01-01", "source": "mall"}], {"a"}),
    ([{"field": "last_purchase", "before": "2024-12-31", "source": "mall"}], {"b"}),
    ([{"field": "last_purchase", "before": "2025-01-01", "source": "mall"}], {"b", "c"}),
    (
        [{"field": "last_purchase", "before": "2025-01-01", "include_never": True}],
        {"b", "d", "e"},
    ),
    ([{"field": "tags", "any": ["vip", "blacklist"]}], {"a", "c", "d"}),
    ([{"field": "tags", "all": ["vip", "friend"]}], {"c"}),
    ([{"field": "tags", "none": ["vip"]}], {"b", "d", "e"}),
    ([{"field": "tags", "any": ["nobody-has-this"]}], set()),
    (
        [
            {"field": "purchase_count", "gte": 5},
            {"field": "bound_platform", "platforms": ["tmall"]},
            {"field": "level", "gte": 3},
            {"field": "birthday_month", "this_month": True},
            {"field": "points_balance", "gte": 1000},
            {"field": "last_purchase", "after": "2025-02-01"},
            {"field": "tags", "any": ["vip"]},
        ],
        {"a"},
    ),
    (
        [{"field": "tags", "none": ["blacklist"]}, {"field": "purchase_count", "lte": 2}],
        {"b", "e"},
    ),
]
