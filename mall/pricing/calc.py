"""Pure pricing: list price -> member price -> coupon -> points as cash -> shipping -> due.

No database, no Redis, no clock: callers pass the moment, the member's level, the
coupons they hold and the rules. Everything is integer fen and never negative.

Rounding, step by step:
- Member price is per unit: list x percent / 100, rounded half up (`kit.money.apply_rate`);
  with policy `both` the level rate applies to the member-day price and rounds again.
  A line costs unit member price x quantity, so the product page price x qty matches.
- Discount coupon: the member pays eligible subtotal x percent / 100 rounded half up;
  the saving is the rest, then capped by `discount_cap_fen` (0 = no cap).
- Coupon and points amounts are shared out over the lines in proportion to what each line
  still costs: rounded down, then the leftover fen go one at a time to the largest
  remainders (the earlier line on ties), so lines always add up exactly (refund by line).
- Points: `p` points are worth floor(p x 100 / points_per_yuan) fen; the points taken are the
  fewest worth that amount, ceil(fen x points_per_yuan / 100). The cap is
  floor(goods after coupon x points_max_share_percent / 100).
- Shipping: free when the goods after coupon (before points: points are a way to pay)
  reach `free_shipping_over_fen` (> 0); else the fee of the chosen delivery.
"""

from __future__ import annotations

import calendar
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from mall.i18n import _, translate
from mall.kit.clock import SHANGHAI
from mall.kit.money import apply_rate, fmt_yuan
from mall.pricing.rules import DEFAULT_RULES, PricingRules

Delivery = Literal["express", "same_city", "pickup"]
CouponKind = Literal["cash", "threshold", "discount", "gift", "exchange"]
CouponScope = Literal["all", "categories", "products"]
PriceBasis = Literal["list", "level", "member_day", "member_day+level"]

# Why a coupon does not fit this cart: stable codes, English message ids (zh_CN in coupons.po).
REASONS: dict[str, str] = {
    "COUPON_LOCKED": _("This coupon is held by another unpaid order"),
    "COUPON_USED": _("This coupon has been used"),
    "COUPON_EXPIRED": _("This coupon has expired"),
    "COUPON_NOT_STARTED": _("This coupon is not valid yet"),
    "COUPON_NOT_IN_SCOPE": _("No item in this order is covered by this coupon"),
    "COUPON_BELOW_THRESHOLD": _("Spend {missing_yuan} more on covered items to use this coupon"),
    "COUPON_NOTHING_TO_SAVE": _("This coupon saves nothing on this order"),
    "COUPON_NOT_OWNED": _("This coupon is not in your wallet"),
}


# --- inputs -------------------------------------------------------------------


class CartLine(BaseModel):
    sku_id: int
    product_id: int
    category_ids: list[int] = Field(
        default_factory=list, description="the product's category and its ancestors"
    )
    quantity: int = Field(ge=1)
    list_price_fen: int = Field(ge=0)
    name: str = ""


class CouponOffer(BaseModel):
    """A coupon the member holds, with the terms of its template."""

    coupon_id: int
    template_id: int = 0
    name: str = ""
    kind: CouponKind
    status: str = "usable"
    valid_from: datetime
    expires_at: datetime = Field(description="exclusive: usable while now < expires_at")
    face_value_fen: int = 0
    threshold_fen: int = 0
    discount_percent: int = 100
    discount_cap_fen: int = 0
    gift_sku_id: int | None = None
    gift_value_fen: int = 0
    scope: CouponScope = "all"
    scope_ids: list[int] = Field(default_factory=list)


class PricingInput(BaseModel):
    lines: list[CartLine] = Field(min_length=1)
    at: datetime
    member_level: int = 0
    coupons: list[CouponOffer] = Field(default_factory=list)
    coupon_id: int | None = None
    points_requested: int = Field(default=0, ge=0)
    points_available: int = Field(default=0, ge=0)
    delivery: Delivery = "express"
    rules: PricingRules = DEFAULT_RULES


# --- outputs ------------------------------------------------------------------


class CouponVerdict(BaseModel):
    coupon_id: int
    name: str = ""
    kind: CouponKind
    usable: bool
    saving_fen: int = 0
    gift_sku_id: int | None = None
    reason: str | None = None
    missing_fen: int = 0
    message: str | None = Field(default=None, description="in the request's language")


class PricedLine(BaseModel):
    sku_id: int
    product_id: int
    name: str = ""
    quantity: int
    is_gift: bool = False
    unit_list_fen: int
    unit_member_fen: int
    list_total_fen: int
    member_total_fen: int
    member_saving_fen: int
    coupon_fen: int = 0
    points_fen: int = 0
    due_fen: int = Field(description="what this line costs after coupon and points (no shipping)")


class Step(BaseModel):
    code: Literal["list_total", "member_price", "coupon", "points", "shipping", "amount_due"]
    amount_fen: int = Field(description="signed: savings are negative")


class Breakdown(BaseModel):
    at: datetime
    member_day: bool
    price_basis: PriceBasis
    member_percents: list[int]
    lines: list[PricedLine]
    list_total_fen: int
    member_saving_fen: int
    member_total_fen: int
    coupon_id: int | None = None
    coupon_fen: int = 0
    coupon_error: str | None = None
    best_coupon_id: int | None = None
    goods_after_coupon_fen: int
    points_used: int = 0
    points_fen: int = 0
    points_cap_fen: int = 0
    delivery: Delivery
    shipping_fen: int
    free_shipping: bool
    amount_due_fen: int
    steps: list[Step]
    coupons: list[CouponVerdict]
    notes: list[str] = Field(default_factory=list, description="POINTS_CAPPED, POINTS_SHORT")


# --- member price -------------------------------------------------------------


def percent_for_level(table: dict[int, int], level: int) -> int:
    """The entry with the highest level not above `level`; 100 when none applies."""
    eligible = [lv for lv in table if lv <= level]
    return table[max(eligible)] if eligible else 100


def is_member_day(at: datetime, rules: PricingRules = DEFAULT_RULES) -> bool:
    """Member day is an Asia/Shanghai calendar day; a day past the month's end means its last."""
    day = at.astimezone(SHANGHAI).date()
    last = calendar.monthrange(day.year, day.month)[1]
    return day.day == min(rules.member_day_of_month, last)


def next_member_day(at: datetime, rules: PricingRules = DEFAULT_RULES) -> date:
    """The member day on or after `at`'s Asia/Shanghai day (today when it is member day)."""
    today = at.astimezone(SHANGHAI).date()
    year, month = today.year, today.month
    for _month in range(2):
        last = calendar.monthrange(year, month)[1]
        day = date(year, month, min(rules.member_day_of_month, last))
        if day >= today:
            return day
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    raise AssertionError("a member day falls in every month")  # pragma: no cover


def member_rates(
    level: int, at: datetime, rules: PricingRules = DEFAULT_RULES
) -> tuple[PriceBasis, list[int]]:
    """Which rates apply today, in the order they apply."""
    level_pct = percent_for_level(rules.level_percent_by_level, level)
    if not is_member_day(at, rules):
        return ("level" if level_pct < 100 else "list"), [level_pct]
    day_pct = percent_for_level(rules.member_day_percent_by_level, level)
    if rules.member_day_policy == "both":
        return "member_day+level", [day_pct, level_pct]
    if rules.member_day_policy == "better" and level_pct < day_pct:
        return "level", [level_pct]
    return "member_day", [day_pct]


def member_unit_price(
    list_price_fen: int, level: int, at: datetime, rules: PricingRules = DEFAULT_RULES
) -> int:
    """Today's price for one unit; what product pages show (`price_today`)."""
    price = max(list_price_fen, 0)
    for percent in member_rates(level, at, rules)[1]:
        price = apply_rate(price, percent, 100)
    return price


price_today = member_unit_price


# --- sharing out --------------------------------------------------------------


def allocate(total: int, weights: list[int]) -> list[int]:
    """Split `total` fen in proportion to `weights` (largest remainder, exact sum)."""
    weight_sum = sum(weights)
    if total <= 0 or weight_sum <= 0:
        return [0] * len(weights)
    total = min(total, weight_sum)
    shares = [total * w // weight_sum for w in weights]
    remainders = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % weight_sum), i))
    for i in remainders[: total - sum(shares)]:
        shares[i] += 1
    return shares


# --- coupons ------------------------------------------------------------------


def _in_scope(coupon: CouponOffer, line: PricedLine, categories: list[int]) -> bool:
    if line.is_gift:
        return False
    if coupon.scope == "all":
        return True
    if coupon.scope == "products":
        return line.product_id in coupon.scope_ids
    return bool(set(categories) & set(coupon.scope_ids))


def _verdict(coupon: CouponOffer, reason: str, **extra: int) -> CouponVerdict:
    missing = extra.get("missing_fen", 0)
    message = translate(REASONS[reason], missing_yuan=fmt_yuan(missing))
    return CouponVerdict(
        coupon_id=coupon.coupon_id,
        name=coupon.name,
        kind=coupon.kind,
        usable=False,
        reason=reason,
        missing_fen=missing,
        message=message,
    )


def _coupon_shares(
    coupon: CouponOffer, lines: list[PricedLine], categories: list[list[int]], at: datetime
) -> tuple[CouponVerdict, list[int]]:
    """The verdict on one coupon for these member-priced lines, and its saving per line."""
    none = [0] * len(lines)
    if coupon.status == "locked":
        return _verdict(coupon, "COUPON_LOCKED"), none
    if coupon.status == "used":
        return _verdict(coupon, "COUPON_USED"), none
    if coupon.status == "expired" or at >= coupon.expires_at:
        return _verdict(coupon, "COUPON_EXPIRED"), none
    if at < coupon.valid_from:
        return _verdict(coupon, "COUPON_NOT_STARTED"), none
    eligible = [i for i, ln in enumerate(lines) if _in_scope(coupon, ln, categories[i])]
    if not eligible:
        return _verdict(coupon, "COUPON_NOT_IN_SCOPE"), none
    subtotal = sum(lines[i].member_total_fen for i in eligible)
    if subtotal < coupon.threshold_fen:
        return _verdict(
            coupon, "COUPON_BELOW_THRESHOLD", missing_fen=coupon.threshold_fen - subtotal
        ), none
    shares = list(none)
    if coupon.kind in ("cash", "threshold"):
        saving = min(coupon.face_value_fen, subtotal)
        for i, share in zip(
            eligible, allocate(saving, [lines[i].member_total_fen for i in eligible]), strict=True
        ):
            shares[i] = share
    elif coupon.kind == "discount":
        saving = subtotal - apply_rate(subtotal, coupon.discount_percent, 100)
        if coupon.discount_cap_fen > 0:
            saving = min(saving, coupon.discount_cap_fen)
        for i, share in zip(
            eligible, allocate(saving, [lines[i].member_total_fen for i in eligible]), strict=True
        ):
            shares[i] = share
    elif coupon.kind == "exchange":
        # one unit of the covered product; with several SKUs, the cheapest one
        pick = min(eligible, key=lambda i: (lines[i].unit_member_fen, i))
        shares[pick] = lines[pick].unit_member_fen
    saving = sum(shares)
    if saving <= 0 and coupon.kind != "gift":
        return _verdict(coupon, "COUPON_NOTHING_TO_SAVE"), none
    return CouponVerdict(
        coupon_id=coupon.coupon_id,
        name=coupon.name,
        kind=coupon.kind,
        usable=True,
        saving_fen=saving,
        gift_sku_id=coupon.gift_sku_id if coupon.kind == "gift" else None,
    ), shares


def _not_owned(coupon_id: int) -> CouponVerdict:
    return CouponVerdict(
        coupon_id=coupon_id,
        kind="cash",
        usable=False,
        reason="COUPON_NOT_OWNED",
        message=translate(REASONS["COUPON_NOT_OWNED"]),
    )


# --- the whole cart -----------------------------------------------------------


def price_cart(data: PricingInput) -> Breakdown:
    rules = data.rules
    basis, percents = member_rates(data.member_level, data.at, rules)
    lines: list[PricedLine] = []
    categories: list[list[int]] = []
    for cart_line in data.lines:
        unit = member_unit_price(cart_line.list_price_fen, data.member_level, data.at, rules)
        list_total = cart_line.list_price_fen * cart_line.quantity
        member_total = unit * cart_line.quantity
        lines.append(
            PricedLine(
                sku_id=cart_line.sku_id,
                product_id=cart_line.product_id,
                name=cart_line.name,
                quantity=cart_line.quantity,
                unit_list_fen=cart_line.list_price_fen,
                unit_member_fen=unit,
                list_total_fen=list_total,
                member_total_fen=member_total,
                member_saving_fen=list_total - member_total,
                due_fen=member_total,
            )
        )
        categories.append(cart_line.category_ids)

    verdicts: list[CouponVerdict] = []
    chosen_shares: list[int] | None = None
    chosen: CouponOffer | None = None
    for coupon in data.coupons:
        verdict, shares = _coupon_shares(coupon, lines, categories, data.at)
        verdicts.append(verdict)
        if coupon.coupon_id == data.coupon_id and verdict.usable:
            chosen, chosen_shares = coupon, shares
    coupon_error = None
    if data.coupon_id is not None and chosen is None:
        found = next((v for v in verdicts if v.coupon_id == data.coupon_id), None)
        coupon_error = found.reason if found else "COUPON_NOT_OWNED"
        if found is None:
            verdicts.append(_not_owned(data.coupon_id))
    usable = [v for v in verdicts if v.usable]
    best = max(
        usable,
        key=lambda v: (
            v.saving_fen
            + next(c.gift_value_fen for c in data.coupons if c.coupon_id == v.coupon_id)
        ),
        default=None,
    )

    if chosen_shares is not None:
        for line, share in zip(lines, chosen_shares, strict=True):
            line.coupon_fen = share
            line.due_fen = line.member_total_fen - share
    if chosen is not None and chosen.kind == "gift" and chosen.gift_sku_id is not None:
        lines.append(
            PricedLine(
                sku_id=chosen.gift_sku_id,
                product_id=0,
                name=chosen.name,
                quantity=1,
                is_gift=True,
                unit_list_fen=chosen.gift_value_fen,
                unit_member_fen=0,
                list_total_fen=chosen.gift_value_fen,
                member_total_fen=0,
                member_saving_fen=chosen.gift_value_fen,
                due_fen=0,
            )
        )

    list_total = sum(ln.list_total_fen for ln in lines if not ln.is_gift)
    member_total = sum(ln.member_total_fen for ln in lines)
    coupon_fen = sum(ln.coupon_fen for ln in lines)
    goods = member_total - coupon_fen

    notes: list[str] = []
    spendable = min(data.points_requested, data.points_available)
    if data.points_requested > data.points_available:
        notes.append("POINTS_SHORT")
    cap_fen = goods * rules.points_max_share_percent // 100
    worth_fen = spendable * 100 // rules.points_per_yuan
    if worth_fen > cap_fen:
        notes.append("POINTS_CAPPED")
    points_fen = min(worth_fen, cap_fen)
    points_used = (points_fen * rules.points_per_yuan + 99) // 100
    for line, share in zip(lines, allocate(points_fen, [ln.due_fen for ln in lines]), strict=True):
        line.points_fen = share
        line.due_fen -= share

    fee = {
        "express": rules.express_fee_fen,
        "same_city": rules.same_city_fee_fen,
        "pickup": rules.pickup_fee_fen,
    }[data.delivery]
    free = rules.free_shipping_over_fen > 0 and goods >= rules.free_shipping_over_fen
    shipping = 0 if free else fee
    due = max(goods - points_fen, 0) + shipping

    return Breakdown(
        at=data.at,
        member_day=is_member_day(data.at, rules),
        price_basis=basis,
        member_percents=percents,
        lines=lines,
        list_total_fen=list_total,
        member_saving_fen=list_total - member_total,
        member_total_fen=member_total,
        coupon_id=chosen.coupon_id if chosen else None,
        coupon_fen=coupon_fen,
        coupon_error=coupon_error,
        best_coupon_id=best.coupon_id if best else None,
        goods_after_coupon_fen=goods,
        points_used=points_used,
        points_fen=points_fen,
        points_cap_fen=cap_fen,
        delivery=data.delivery,
        shipping_fen=shipping,
        free_shipping=free,
        amount_due_fen=due,
        steps=[
            Step(code="list_total", amount_fen=list_total),
            Step(code="member_price", amount_fen=member_total - list_total),
            Step(code="coupon", amount_fen=-coupon_fen),
            Step(code="points", amount_fen=-points_fen),
            Step(code="shipping", amount_fen=shipping),
            Step(code="amount_due", amount_fen=due),
        ],
        coupons=verdicts,
        notes=notes,
    )
