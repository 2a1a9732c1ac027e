"""The pricing table: member day on/off, each coupon type, thresholds at the boundary,
the points cap and rounding, with the expected fen."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mall.kit.clock import SHANGHAI
from mall.pricing import (
    CartLine,
    CouponOffer,
    PricingInput,
    PricingRules,
    allocate,
    is_member_day,
    price_cart,
    price_today,
)

pytestmark = pytest.mark.nodb

MEMBER_DAY = datetime(2025, 3, 18, 10, tzinfo=SHANGHAI)
OTHER_DAY = datetime(2025, 3, 17, 10, tzinfo=SHANGHAI)
FROM = datetime(2025, 1, 1, tzinfo=UTC)
UNTIL = datetime(2025, 6, 1, tzinfo=UTC)


def line(
    list_price: int, qty: int = 1, product: int = 1, cats: list[int] | None = None
) -> CartLine:
    return CartLine(
        sku_id=product * 10, product_id=product, quantity=qty, list_price_fen=list_price,
        category_ids=cats or [],
    )  # fmt: skip


def coupon(kind: str, **terms: Any) -> CouponOffer:
    base: dict[str, Any] = {"coupon_id": 1, "kind": kind, "valid_from": FROM, "expires_at": UNTIL}
    return CouponOffer(**{**base, **terms})


@dataclass
class Case:
    name: str
    lines: list[CartLine]
    due: int
    level: int = 0
    at: datetime = OTHER_DAY
    offer: CouponOffer | None = None
    points: int = 0
    available: int = 1_000_000
    delivery: str = "express"
    rules: dict[str, Any] = field(default_factory=dict)
    member_total: int | None = None
    coupon_fen: int = 0
    points_fen: int = 0
    points_used: int | None = None
    shipping: int | None = None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)


CASES = [
    # member price
    Case("level 0, other day: list price, free shipping over 99", [line(5000, 2)], 10000,
         member_total=10000, shipping=0),
    Case("level 1, other day: 98%", [line(5000, 2)], 10800, level=1, member_total=9800,
         shipping=1000),
    Case("level 1, member day: 92% only", [line(5000, 2)], 10200, level=1, at=MEMBER_DAY,
         member_total=9200),
    Case("member day both: 92% then 98%, rounded each time", [line(5000, 2)], 10016, level=1,
         at=MEMBER_DAY, rules={"member_day_policy": "both"}, member_total=9016),
    Case("member day better: level rate wins when cheaper", [line(5000)], 4600 + 1000, level=3,
         at=MEMBER_DAY, rules={"member_day_policy": "better",
                               "member_day_percent_by_level": {0: 95}}, member_total=4600),
    Case("rounding half up per unit: 999 x 95% = 949.05 -> 949", [line(999, 3)], 2847 + 1000,
         at=MEMBER_DAY, member_total=2847),
    Case("rounding: 10 x 95% = 9.5 -> 10", [line(10)], 10 + 1000, at=MEMBER_DAY,
         member_total=10),
    Case("rounding: 1999 x 88% = 1759.12 -> 1759", [line(1999)], 1759 + 1000, level=3,
         at=MEMBER_DAY, member_total=1759),
    # coupons
    Case("cash coupon", [line(3000)], 3500, offer=coupon("cash", face_value_fen=500),
         coupon_fen=500),
    Case("cash coupon larger than the order: never negative", [line(3000)], 1000,
         offer=coupon("cash", face_value_fen=5000), coupon_fen=3000),
    Case("threshold exactly at the boundary applies", [line(5000, 2)], 9000,
         offer=coupon("threshold", face_value_fen=2000, threshold_fen=10000), coupon_fen=2000),
    Case("threshold 1 fen short does not apply", [line(9999)], 9999,
         offer=coupon("threshold", face_value_fen=2000, threshold_fen=10000),
         reason="COUPON_BELOW_THRESHOLD"),
    Case("threshold on member price, not list price", [line(10000)], 9500 + 1000, level=0,
         at=MEMBER_DAY, offer=coupon("threshold", face_value_fen=2000, threshold_fen=10000),
         reason="COUPON_BELOW_THRESHOLD"),
    Case("discount 90%: pays 11110.5 -> 11111", [line(12345)], 11111,
         offer=coupon("discount", discount_percent=90), coupon_fen=1234),
    Case("discount capped", [line(20000)], 19000,
         offer=coupon("discount", discount_percent=80, discount_cap_fen=1000), coupon_fen=1000),
    Case("gift coupon at its threshold adds a free line", [line(5000)], 6000,
         offer=coupon("gift", threshold_fen=5000, gift_sku_id=99, gift_value_fen=1500)),
    Case("exchange voucher: one unit free, pay shipping", [line(3000, 2, product=7)], 4000,
         offer=coupon("exchange", scope="products", scope_ids=[7]), coupon_fen=3000),
    Case("exchange voucher alone: shipping only", [line(3000, 1, product=7)], 1000,
         offer=coupon("exchange", scope="products", scope_ids=[7]), coupon_fen=3000),
    Case("category scope: threshold on covered lines only",
         [line(4000, cats=[3]), line(6000, product=2, cats=[4])], 10500,
         offer=coupon("threshold", face_value_fen=500, threshold_fen=4000, scope="categories",
                      scope_ids=[3]), coupon_fen=500),
    Case("product scope not in cart", [line(4000)], 5000,
         offer=coupon("cash", face_value_fen=500, scope="products", scope_ids=[8]),
         reason="COUPON_NOT_IN_SCOPE"),
    Case("expired coupon", [line(4000)], 5000, at=datetime(2025, 6, 2, tzinfo=UTC),
         offer=coupon("cash", face_value_fen=500), reason="COUPON_EXPIRED"),
    Case("coupon not started", [line(4000)], 5000, at=datetime(2024, 12, 31, tzinfo=UTC),
         offer=coupon("cash", face_value_fen=500), reason="COUPON_NOT_STARTED"),
    Case("locked coupon", [line(4000)], 5000,
         offer=coupon("cash", face_value_fen=5, status="locked"), reason="COUPON_LOCKED"),
    # points
    Case("points within the cap", [line(10000)], 7000, points=3000, points_fen=3000,
         points_used=3000),
    Case("points capped at 50% of goods", [line(10000)], 5000, points=8000, points_fen=5000,
         points_used=5000, notes=["POINTS_CAPPED"]),
    Case("points short of the request", [line(10000)], 9000, points=3000, available=1000,
         points_fen=1000, notes=["POINTS_SHORT"]),
    Case("300 points per yuan: 1000 points -> 333 fen for 999 points", [line(10000)], 9667,
         points=1000, rules={"points_per_yuan": 300}, points_fen=333, points_used=999),
    Case("cap rounds down: 50% of 999 = 499", [line(999)], 500 + 1000, points=5000,
         points_fen=499, notes=["POINTS_CAPPED"]),
    Case("points after coupon, cap on goods after coupon", [line(10000)], 4000 + 1000,
         offer=coupon("cash", face_value_fen=2000), coupon_fen=2000, points=10000,
         points_fen=4000, notes=["POINTS_CAPPED"]),
    # shipping
    Case("free shipping exactly at 99", [line(9900)], 9900, shipping=0),
    Case("same-city fee", [line(8000)], 8800, delivery="same_city", shipping=800),
    Case("pickup is free", [line(8000)], 8000, delivery="pickup", shipping=0),
    Case("free-shipping threshold uses goods before points", [line(10000)], 5000, points=5000,
         shipping=0, points_fen=5000),
    Case("list price 0", [line(0)], 1000, member_total=0),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_pricing_table(case: Case) -> None:
    result = price_cart(
        PricingInput(
            lines=case.lines,
            at=case.at,
            member_level=case.level,
            coupons=[case.offer] if case.offer else [],
            coupon_id=case.offer.coupon_id if case.offer else None,
            points_requested=case.points,
            points_available=case.available,
            delivery=case.delivery,  # type: ignore[arg-type]
            rules=PricingRules(**case.rules),
        )
    )
    assert result.amount_due_fen == case.due
    if case.member_total is not None:
        assert result.member_total_fen == case.member_total
    assert result.coupon_fen == case.coupon_fen
    assert result.points_fen == case.points_fen
    assert result.points_used == (
        case.points_used if case.points_used is not None else case.points_fen
    )
    if case.shipping is not None:
        assert result.shipping_fen == case.shipping
    assert result.notes == case.notes
    if case.offer is not None:
        verdict = result.coupons[0]
        assert verdict.reason == case.reason
        assert verdict.usable is (case.reason is None)
        assert result.coupon_error == case.reason
    # the steps and the lines always add up
    assert sum(s.amount_fen for s in result.steps[:-1]) == result.amount_due_fen
    assert sum(ln.due_fen for ln in result.lines) + result.shipping_fen == result.amount_due_fen


def test_gift_and_reasons_shown() -> None:
    offers = [
        coupon("gift", coupon_id=1, threshold_fen=5000, gift_sku_id=99, gift_value_fen=1500),
        coupon("threshold", coupon_id=2, face_value_fen=1000, threshold_fen=8000),
        coupon("cash", coupon_id=3, face_value_fen=300),
    ]
    result = price_cart(PricingInput(lines=[line(6000)], at=OTHER_DAY, coupons=offers, coupon_id=1))
    gift = result.lines[-1]
    assert gift.is_gift and gift.sku_id == 99 and gift.due_fen == 0
    by_id = {v.coupon_id: v for v in result.coupons}
    assert by_id[2].reason == "COUPON_BELOW_THRESHOLD" and by_id[2].missing_fen == 2000
    assert by_id[2].message and "20.00" in by_id[2].message
    assert by_id[3].usable and by_id[3].saving_fen == 300
    assert result.best_coupon_id == 1  # the 15-yuan gift beats 3 yuan off
    missing = price_cart(PricingInput(lines=[line(6000)], at=OTHER_DAY, coupon_id=42))
    assert missing.coupon_error == "COUPON_NOT_OWNED" and missing.coupon_fen == 0


@pytest.mark.clock
def test_member_day_is_a_shanghai_day() -> None:
    assert is_member_day(datetime(2025, 3, 17, 16, 0, tzinfo=UTC))  # 00:00 on the 18th
    assert not is_member_day(datetime(2025, 3, 17, 15, 59, 59, tzinfo=UTC))
    assert not is_member_day(datetime(2025, 3, 18, 16, 0, tzinfo=UTC))  # 00:00 on the 19th
    last = PricingRules(member_day_of_month=31)
    assert is_member_day(datetime(2025, 2, 28, 12, tzinfo=SHANGHAI), last)
    assert not is_member_day(datetime(2025, 3, 30, 12, tzinfo=SHANGHAI), last)
    assert price_today(10000, 2, MEMBER_DAY) == 9000
    assert price_today(10000, 2, OTHER_DAY) == 9500
    assert price_today(10000, 2, MEMBER_DAY + timedelta(days=1)) == 9500


def test_allocate_is_exact() -> None:
    assert allocate(10, [5, 5, 5]) == [4, 3, 3]
    assert allocate(7, [1, 2, 4]) == [1, 2, 4]
    assert allocate(100, [1, 1, 1]) == [1, 1, 1]
    assert allocate(5, [0, 10]) == [0, 5]
    assert allocate(50, [10, 20]) == [10, 20]  # never more than the weights
    assert allocate(0, [3]) == [0]


@settings(max_examples=100, deadline=None)
@given(
    prices=st.lists(st.tuples(st.integers(0, 100_000), st.integers(1, 5)), min_size=1, max_size=4),
    level=st.integers(0, 5),
    member_day=st.booleans(),
    kind=st.sampled_from(["cash", "threshold", "discount"]),
    face=st.integers(1, 50_000),
    threshold=st.integers(0, 100_000),
    percent=st.integers(1, 99),
    cap=st.integers(0, 5_000),
    points=st.integers(0, 100_000),
    ppy=st.integers(1, 1000),
)
def test_never_negative_and_lines_add_up(
    prices: list[tuple[int, int]], level: int, member_day: bool, kind: str, face: int,
    threshold: int, percent: int, cap: int, points: int, ppy: int,
) -> None:  # fmt: skip
    offer = coupon(
        kind,
        face_value_fen=face,
        threshold_fen=max(threshold, face) if kind == "threshold" else 0,
        discount_percent=percent,
        discount_cap_fen=cap,
    )
    result = price_cart(
        PricingInput(
            lines=[line(p, q, product=i + 1) for i, (p, q) in enumerate(prices)],
            at=MEMBER_DAY if member_day else OTHER_DAY,
            member_level=level,
            coupons=[offer],
            coupon_id=1,
            points_requested=points,
            points_available=points,
            rules=PricingRules(points_per_yuan=ppy),
        )
    )
    assert result.amount_due_fen >= result.shipping_fen >= 0
    assert all(ln.due_fen >= 0 and ln.coupon_fen >= 0 for ln in result.lines)
    assert sum(ln.coupon_fen for ln in result.lines) == result.coupon_fen
    assert sum(ln.points_fen for ln in result.lines) == result.points_fen
    assert result.points_used <= points
    assert result.points_fen * ppy <= result.points_used * 100  # points pay at most their worth
    assert result.points_fen <= result.points_cap_fen
    assert result.coupon_fen <= result.member_total_fen <= result.list_total_fen
