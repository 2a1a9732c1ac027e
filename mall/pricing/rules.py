"""The pricing knobs ops tune: member day, level discounts, points as cash, shipping.

They are stored in ONE place, the rules document ops edit (`GET/PUT /api/admin/v1/rules`,
`mall.points.schemas.Rules`): each level's own rates in `levels[]`
(`discount_percent`, `member_day_percent`) and everything else in its `pricing` section
(`PricingSettings`). `Rules.pricing_rules()` builds the `PricingRules` pricing receives,
so what a member is shown and what they are charged come from the same numbers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mall.kit.bounds import Fen, MemberLevel, Percent

# "from this level up" -> percent paid; JSON keys are strings, pydantic reads them as ints
PercentTable = dict[MemberLevel, Annotated[Percent, Field(ge=1)]]


def _percent_table(value: dict[int, int]) -> dict[int, int]:
    if not value:
        raise ValueError("at least one level is needed")
    for level, percent in value.items():
        if level < 0 or not 1 <= percent <= 100:
            raise ValueError("levels are >= 0 and percents are 1..100 (100 = no discount)")
    return value


class PricingSettings(BaseModel):
    """The `pricing` section of the rules document: everything but the per-level rates."""

    model_config = ConfigDict(extra="forbid")

    member_day_of_month: int = Field(
        default=18, ge=1, le=31, description="Asia/Shanghai day; 31 means the month's last day"
    )
    member_day_policy: Literal["member_day", "better", "both"] = Field(
        default="member_day",
        description=(
            "On member day: `member_day` applies only the member-day rate, `better` the cheaper "
            "of member-day and level rate, `both` applies the two one after the other."
        ),
    )
    points_per_yuan: int = Field(
        default=100, ge=1, le=100_000, description="points worth 1 yuan off"
    )
    points_max_share_percent: int = Field(
        default=50,
        ge=0,
        le=100,
        description="points pay at most this share of the goods after coupon",
    )
    free_shipping_over_fen: Fen = Field(
        default=9900,
        description="goods after coupon at or above this ship free (0 = never free)",
    )
    express_fee_fen: Fen = 1000
    same_city_fee_fen: Fen = 800
    pickup_fee_fen: Fen = 0


class PricingRules(PricingSettings):
    """What the pure pricing functions receive. Rates are the percent of the price the
    member pays (95 = 5% off, 100 = list price).

    A level table maps "from this level up" to a percent: the member's rate is the
    entry with the highest level not above the member's level. In the mall the tables
    are built from the rules document's `levels[]`, never stored on their own."""

    member_day_percent_by_level: PercentTable = Field(
        default_factory=lambda: {0: 95, 1: 92, 2: 90, 3: 88}
    )
    level_percent_by_level: PercentTable = Field(
        default_factory=lambda: {0: 100, 1: 98, 2: 95, 3: 92}
    )

    @field_validator("member_day_percent_by_level", "level_percent_by_level")
    @classmethod
    def _check_tables(cls, value: dict[int, int]) -> dict[int, int]:
        return _percent_table(value)


DEFAULT_RULES = PricingRules()
