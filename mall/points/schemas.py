from __future__ import annotations

from datetime import date, datetime
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mall.kit.bounds import MAX_POINTS, Fen, Version
from mall.kit.text import SafeLine
from mall.pricing.rules import PricingRules

# --- the rules document ------------------------------------------------------
# One JSON document, versioned in the database, edited at /api/admin/v1/rules.
# Other domains add their own section as another field of `Rules` with defaults
# (so documents saved before the section existed still load).


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EarnRules(_Section):
    # 10 yuan = 1 point, rounded down
    fen_per_point: int = Field(default=1000, ge=1, le=100_000_000)
    # growth value also rises by 1 per yuan paid (on top of earned points)
    growth_from_paid: bool = False


class SignInRules(_Section):
    # points for day 1, 2, ... of a streak; with `repeat` the table starts over after
    # its last day, otherwise the last day's reward holds for every longer streak
    daily_points: list[Annotated[int, Field(ge=0, le=1_000_000)]] = Field(
        default_factory=lambda: [5, 5, 5, 5, 5, 5, 25], min_length=1, max_length=366
    )
    repeat: bool = True

    def reward_for(self, streak: int) -> int:
        n = len(self.daily_points)
        index = (streak - 1) % n if self.repeat else min(streak, n) - 1
        return self.daily_points[index]


class Level(_Section):
    level: int = Field(ge=0, le=100)
    name: SafeLine = Field(min_length=1, max_length=32)
    # growth values are BIGINT, but a level beyond MAX_POINTS could never be reached
    threshold: int = Field(ge=0, le=MAX_POINTS, description="growth value needed")
    # price paid in percent of list price: 95 = 5% off
    discount_percent: int = Field(default=100, ge=1, le=100)
    birthday_points: int = Field(default=0, ge=0, le=1_000_000)


def _default_levels() -> list[Level]:
    return [
        Level(level=0, name="普通会员", threshold=0, discount_percent=100, birthday_points=50),
        Level(level=1, name="银卡会员", threshold=500, discount_percent=98, birthday_points=100),
        Level(level=2, name="金卡会员", threshold=2000, discount_percent=95, birthday_points=200),
        Level(level=3, name="钻石会员", threshold=5000, discount_percent=90, birthday_points=500),
    ]


class ExpiryRules(_Section):
    # end_of_following_year: a lot earned in 2025 lapses at the end of 2026 (Shanghai)
    mode: Literal["end_of_following_year", "days", "never"] = "end_of_following_year"
    days: int = Field(default=365, ge=1, le=36500)


class Rules(_Section):
    earn: EarnRules = Field(default_factory=EarnRules)
    sign_in: SignInRules = Field(default_factory=SignInRules)
    levels: list[Level] = Field(default_factory=_default_levels, min_length=1, max_length=50)
    expiry: ExpiryRules = Field(default_factory=ExpiryRules)
    # member day, level prices, points as cash, shipping (see mall.pricing)
    pricing: PricingRules = Field(default_factory=PricingRules)

    @model_validator(mode="after")
    def _levels_consistent(self) -> Rules:
        levels = sorted(self.levels, key=lambda lv: lv.level)
        if [lv.level for lv in levels] != list(range(len(levels))):
            raise ValueError("levels must be numbered 0, 1, 2, ... without gaps")
        if levels[0].threshold != 0:
            raise ValueError("level 0 must have threshold 0")
        for lower, higher in pairwise(levels):
            if higher.threshold <= lower.threshold:
                raise ValueError("level thresholds must rise with the level")
        self.levels = levels
        return self

    def level_for(self, growth: int) -> Level:
        found = self.levels[0]
        for lv in self.levels:
            if growth >= lv.threshold:
                found = lv
        return found

    def level(self, number: int) -> Level:
        for lv in self.levels:
            if lv.level == number:
                return lv
        return self.level_for(0) if number <= 0 else self.levels[-1]


class RulesOut(BaseModel):
    version: int
    rules: Rules
    updated_at: datetime | None = None


class RulesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: Rules
    # the version the editor started from; a stale one is refused (two ops editing)
    base_version: Version | None = None


# --- shopper -----------------------------------------------------------------


class EntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    delta: int
    balance_after: int
    kind: str
    reason: str
    reference: str
    created_at: datetime


class NextLevelOut(BaseModel):
    level: int
    name: str
    threshold: int
    growth_needed: int


class PointsSummaryOut(BaseModel):
    balance: int
    expiring_soon: int = Field(description="points that lapse in the next 30 days")
    expiring_soon_at: datetime | None = Field(
        default=None, description="when the first of those lapse"
    )
    level: int
    level_name: str
    discount_percent: int
    growth_value: int
    next_level: NextLevelOut | None


class SignInOut(BaseModel):
    points_awarded: int
    streak: int
    day: date
    balance: int


class SignInStatusOut(BaseModel):
    signed_in_today: bool
    streak: int
    today_reward: int = Field(description="what signing in today gives (or gave)")
    tomorrow_reward: int


class BindOrderIn(BaseModel):
    platform: SafeLine = Field(min_length=1, max_length=32, examples=["tmall"])
    order_no: SafeLine = Field(min_length=1, max_length=64, examples=["2024123456789"])
    phone: SafeLine = Field(min_length=4, max_length=20, examples=["13800138000"])


class BindOrderOut(BaseModel):
    points_awarded: int
    platform: str
    order_no: str
    paid_fen: int
    balance: int


# --- ops ---------------------------------------------------------------------


class GrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: int = Field(
        ge=-100_000_000, le=100_000_000, description="positive grants, negative deducts"
    )
    reason: SafeLine = Field(min_length=1, max_length=128)
    counts_for_growth: bool = True
    expires_at: datetime | None = None

    @model_validator(mode="after")
    def _non_zero(self) -> GrantIn:
        if self.points == 0:
            raise ValueError("points must be non-zero")
        return self


class GrantOut(BaseModel):
    entry: EntryOut
    balance: int


class ExternalOrderRow(BaseModel):
    """One imported marketplace order; `paid_at` without an offset is Shanghai time."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    platform: SafeLine = Field(min_length=1, max_length=32)
    order_no: SafeLine = Field(min_length=1, max_length=64)
    phone: SafeLine = Field(min_length=4, max_length=20)
    paid_fen: Fen
    paid_at: datetime | None = None
    status: Literal["paid", "shipped", "completed", "refunded", "cancelled"] = "completed"


class ImportRowError(BaseModel):
    row: int
    order_no: str = ""
    code: str
    message: str


class ImportOut(BaseModel):
    rows: int
    created: int
    updated: int
    unchanged: int
    errors: list[ImportRowError]


class OverviewOut(BaseModel):
    start: date
    end: date
    points_issued: int
    points_spent: int
    points_expired: int
    points_deducted: int
    consumption_rate: float | None = Field(description="spent / issued; null when none issued")
    orders_imported: int
    orders_bound: int
    binding_rate: float | None = Field(description="bound / imported; null when none imported")
    members_signed_in: int
    extra: dict[str, object] = Field(default_factory=dict)
