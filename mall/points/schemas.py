from __future__ import annotations

from datetime import date, datetime
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from mall.kit.bounds import MAX_POINTS, Fen, Version
from mall.kit.text import SafeLine
from mall.pricing.rules import PricingRules, PricingSettings

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
    # The one home of a level's prices: what `GET /api/v1/points` shows and what the
    # catalog and checkout charge (percent of list price paid: 95 = 5% off).
    discount_percent: int = Field(default=100, ge=1, le=100)
    member_day_percent: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="percent paid on member day; empty: the same as discount_percent",
    )
    birthday_points: int = Field(default=0, ge=0, le=1_000_000)


def _default_levels() -> list[Level]:
    # level 3 pays 92%: what checkout always charged (the old display said 90%)
    return [
        Level(
            level=0, name="普通会员", threshold=0,
            discount_percent=100, member_day_percent=95, birthday_points=50,
        ),
        Level(
            level=1, name="银卡会员", threshold=500,
            discount_percent=98, member_day_percent=92, birthday_points=100,
        ),
        Level(
            level=2, name="金卡会员", threshold=2000,
            discount_percent=95, member_day_percent=90, birthday_points=200,
        ),
        Level(
            level=3, name="钻石会员", threshold=5000,
            discount_percent=92, member_day_percent=88, birthday_points=500,
        ),
    ]  # fmt: skip


# Before the level rates moved into `levels[]`, the `pricing` section held its own
# per-level tables, and checkout charged from them while the display read `levels[]`.
_LEGACY_TABLES = {
    "level_percent_by_level": "discount_percent",
    "member_day_percent_by_level": "member_day_percent",
}


def _legacy_rate(table: dict[Any, Any], level: int) -> int:
    """The old tables' rule: the entry with the highest level not above `level`."""
    rates = {int(k): int(v) for k, v in table.items()}
    eligible = [lv for lv in rates if lv <= level]
    return rates[max(eligible)] if eligible else 100


def _convert_legacy(data: Any, stored: bool) -> Any:
    """Fold the old `pricing.*_by_level` tables into `levels[]`.

    A stored document keeps charging what it charged: the table wins over a level's own
    `discount_percent` (only the label members saw changes). A document sent to the API
    may carry a table only when it agrees with the levels; two different numbers for the
    same thing are refused rather than guessed."""
    if not isinstance(data, dict) or not isinstance(data.get("pricing"), dict):
        return data
    pricing = dict(data["pricing"])
    tables = {name: pricing.pop(name) for name in _LEGACY_TABLES if name in pricing}
    if not tables:
        return data
    data = {**data, "pricing": pricing}
    raw_levels = data.get("levels")
    if raw_levels is None:
        raw_levels = [lv.model_dump() for lv in _default_levels()]
    levels = []
    for raw in raw_levels:
        if not isinstance(raw, dict) or not isinstance(raw.get("level"), int):
            levels.append(raw)  # the field validators say what is wrong with it
            continue
        level = dict(raw)
        for table_name, field in _LEGACY_TABLES.items():
            table = tables.get(table_name)
            if not isinstance(table, dict) or not table:
                continue
            try:
                rate = _legacy_rate(table, level["level"])
            except (TypeError, ValueError):
                raise ValueError(f"pricing.{table_name} must map levels to percents") from None
            given = level.get(field)
            if not stored and given is not None and given != rate:
                raise ValueError(
                    f"levels[{level['level']}].{field} is {given} but pricing.{table_name} "
                    f"says {rate}: the level rates live only in levels[] now; "
                    f"drop pricing.{table_name}"
                )
            level[field] = rate
        levels.append(level)
    data["levels"] = levels
    return data


class ExpiryRules(_Section):
    # end_of_following_year: a lot earned in 2025 lapses at the end of 2026 (Shanghai)
    mode: Literal["end_of_following_year", "days", "never"] = "end_of_following_year"
    days: int = Field(default=365, ge=1, le=36500)


class Rules(_Section):
    """Read a stored document with `Rules.model_validate(doc, context=STORED)`: its old
    shape is converted the way that keeps charging what it charged."""

    earn: EarnRules = Field(default_factory=EarnRules)
    sign_in: SignInRules = Field(default_factory=SignInRules)
    levels: list[Level] = Field(default_factory=_default_levels, min_length=1, max_length=50)
    expiry: ExpiryRules = Field(default_factory=ExpiryRules)
    # member day, points as cash, shipping (see mall.pricing); level rates are in levels[]
    pricing: PricingSettings = Field(default_factory=PricingSettings)

    @model_validator(mode="before")
    @classmethod
    def _legacy_shape(cls, data: Any, info: ValidationInfo) -> Any:
        stored = bool(info.context and info.context.get("stored"))
        return _convert_legacy(data, stored)

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

    def pricing_rules(self) -> PricingRules:
        """What pricing charges with: the `pricing` section plus each level's rates."""
        return PricingRules(
            **self.pricing.model_dump(),
            level_percent_by_level={lv.level: lv.discount_percent for lv in self.levels},
            member_day_percent_by_level={
                lv.level: lv.member_day_percent or lv.discount_percent for lv in self.levels
            },
        )


STORED = {"stored": True}


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


class MemberDayOut(BaseModel):
    day_of_month: int = Field(description="31 means the month's last day")
    next_date: date = Field(description="the next member day (Asia/Shanghai), today if today")
    today: bool
    percent: int = Field(description="percent of list price this member pays on member day")
    policy: Literal["member_day", "better", "both"]


class PointsSummaryOut(BaseModel):
    balance: int
    expiring_soon: int = Field(description="points that lapse in the next 30 days")
    expiring_soon_at: datetime | None = Field(
        default=None, description="when the first of those lapse"
    )
    level: int
    level_name: str
    discount_percent: int = Field(description="percent of list price this level pays")
    member_day: MemberDayOut
    price_basis_today: Literal["list", "level", "member_day", "member_day+level"]
    price_percents_today: list[int] = Field(
        description="the rates applied to list prices today, in order (as checkout does)"
    )
    points_per_yuan: int = Field(description="points worth 1 yuan at checkout")
    points_max_share_percent: int = Field(description="points pay at most this share")
    points_worth_fen: int = Field(description="what the balance is worth at checkout")
    points_owed: int = Field(
        default=0,
        description="points clawed back by refunds after they were spent; new points pay "
        "this first",
    )
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
    refunded_fen: int | None = Field(
        default=None,
        ge=0,
        le=10**12,
        description="refunded so far (cumulative); empty: all of it when refunded or "
        "cancelled, else nothing",
    )

    @model_validator(mode="after")
    def _refund_within_paid(self) -> ExternalOrderRow:
        if self.refunded_fen is not None and self.refunded_fen > self.paid_fen:
            raise ValueError("refunded_fen cannot exceed paid_fen")
        return self

    @property
    def refund_fen(self) -> int:
        """What the marketplace has refunded of this order so far."""
        if self.refunded_fen is not None:
            return self.refunded_fen
        return self.paid_fen if self.status in ("refunded", "cancelled") else 0


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
    refunded: int = Field(
        default=0, description="claimed orders whose new refund clawed their points back"
    )
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
