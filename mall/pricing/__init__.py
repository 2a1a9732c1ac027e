"""Pure pricing functions (no database): member day, level price, coupons, points as
cash, shipping, and the line-by-line breakdown. See `calc` for the rounding rules."""

from mall.pricing.calc import (
    Breakdown,
    CartLine,
    CouponOffer,
    CouponVerdict,
    PricingInput,
    allocate,
    is_member_day,
    member_rates,
    member_unit_price,
    next_member_day,
    percent_for_level,
    price_cart,
    price_today,
)
from mall.pricing.rules import DEFAULT_RULES, PricingRules, PricingSettings

__all__ = [
    "DEFAULT_RULES",
    "Breakdown",
    "CartLine",
    "CouponOffer",
    "CouponVerdict",
    "PricingInput",
    "PricingRules",
    "PricingSettings",
    "allocate",
    "is_member_day",
    "member_rates",
    "member_unit_price",
    "next_member_day",
    "percent_for_level",
    "price_cart",
    "price_today",
]
