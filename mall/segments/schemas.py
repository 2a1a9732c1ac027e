"""The segment rule document and the shapes of the segment routes.

A rule document is `{"all": [predicate, ...]}`: a member is in the segment when every
predicate holds (an empty list is every member). Each predicate names its `field`."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mall.kit.bounds import Count, Id, MemberLevel, Points
from mall.kit.text import SafeLine, SafeText

Source = Literal["all", "mall", "marketplace"]


class _Predicate(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _range_check(gte: int | None, lte: int | None) -> None:
    if gte is None and lte is None:
        raise ValueError("give gte and/or lte")
    if gte is not None and lte is not None and gte > lte:
        raise ValueError("gte must not be greater than lte")


class PurchaseCount(_Predicate):
    """Paid purchases (paid, shipped or completed; not cancelled or refunded). `source`:
    mall orders, marketplace orders the member bound, or both."""

    field: Literal["purchase_count"]
    gte: Count | None = None
    lte: Count | None = None
    source: Source = "all"

    @model_validator(mode="after")
    def _range(self) -> Self:
        _range_check(self.gte, self.lte)
        return self


class LastPurchase(_Predicate):
    """The member's latest paid purchase was before `before` (a day, Asia/Shanghai) and/or
    on or after `after`. Members who never bought are left out unless `include_never`."""

    field: Literal["last_purchase"]
    before: date | None = None
    after: date | None = None
    include_never: bool = False
    source: Source = "all"

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.before is None and self.after is None:
            raise ValueError("give before and/or after")
        if self.before is not None and self.after is not None and self.after >= self.before:
            raise ValueError("after must be earlier than before")
        return self


class BoundPlatform(_Predicate):
    """The member bound a marketplace order from one of `platforms` (empty = any platform);
    with `bound: false`, the members who have not."""

    field: Literal["bound_platform"]
    platforms: list[Annotated[SafeLine, Field(min_length=1, max_length=32)]] = Field(
        default_factory=list, max_length=20
    )
    bound: bool = True


class Level(_Predicate):
    field: Literal["level"]
    gte: MemberLevel | None = None
    lte: MemberLevel | None = None
    values: list[MemberLevel] | None = Field(default=None, alias="in", min_length=1, max_length=50)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _given(self) -> Self:
        if self.values is None:
            _range_check(self.gte, self.lte)
        return self


class BirthdayMonth(_Predicate):
    """Birthday in one of `months` (1-12), or in the current Asia/Shanghai month."""

    field: Literal["birthday_month"]
    months: list[Annotated[int, Field(ge=1, le=12)]] = Field(default_factory=list, max_length=12)
    this_month: bool = False

    @model_validator(mode="after")
    def _given(self) -> Self:
        if not self.months and not self.this_month:
            raise ValueError("give months or this_month")
        return self


class PointsBalance(_Predicate):
    field: Literal["points_balance"]
    gte: Points | None = None
    lte: Points | None = None

    @model_validator(mode="after")
    def _range(self) -> Self:
        _range_check(self.gte, self.lte)
        return self


Tag = Annotated[SafeLine, Field(min_length=1, max_length=69)]


class Tags(_Predicate):
    """Ops tags as set on the member; auto tags (from the auto-tag job) as "auto:<tag>",
    e.g. "auto:repeat_buyer". `any`: at least one; `all`: every one; `none`: not one."""

    field: Literal["tags"]
    any: list[Tag] = Field(default_factory=list, max_length=50)
    all: list[Tag] = Field(default_factory=list, max_length=50)
    none: list[Tag] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _given(self) -> Self:
        if not (self.any or self.all or self.none):
            raise ValueError("give any, all or none")
        return self


Predicate = Annotated[
    PurchaseCount | LastPurchase | BoundPlatform | Level | BirthdayMonth | PointsBalance | Tags,
    Field(discriminator="field"),
]

RULES_EXAMPLE: dict[str, Any] = {
    "all": [
        {"field": "purchase_count", "gte": 5},
        {"field": "bound_platform", "platforms": ["tmall"]},
        {"field": "level", "gte": 2},
        {"field": "birthday_month", "this_month": True},
        {"field": "points_balance", "gte": 1000},
        {"field": "last_purchase", "after": "2025-01-01"},
        {"field": "tags", "any": ["vip", "auto:repeat_buyer"]},
    ]
}


class Rules(BaseModel):
    """Every predicate must hold (all-of). An empty list means every member."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [RULES_EXAMPLE]})

    all: list[Predicate] = Field(default_factory=list, max_length=20)


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: Rules
    sample_size: int = Field(default=20, ge=0, le=100)


class MemberBrief(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    nickname: str
    level: int
    points_balance: int
    birthday: date | None
    tags: list[str]
    created_at: datetime


class PreviewOut(BaseModel):
    count: int
    sample: list[MemberBrief]


class SegmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SafeLine = Field(min_length=1, max_length=64, examples=["复购5次以上的天猫会员"])
    description: SafeText = Field(default="", max_length=255)
    rules: Rules


class SegmentPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SafeLine | None = Field(default=None, min_length=1, max_length=64)
    description: SafeText | None = Field(default=None, max_length=255)
    rules: Rules | None = None
    active: bool | None = None


class SegmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    rules: dict[str, Any] = Field(description="the rule document as saved (see SegmentIn)")
    active: bool
    last_count: int | None = Field(description="size when last counted")
    counted_at: datetime | None
    created_at: datetime
    updated_at: datetime


class CampaignIn(BaseModel):
    """`subscribe_message`: `template_id`, `data` (key -> value, e.g. {"thing1": "..."}),
    optional `page`. `gift_pack`: `gift_pack_id`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "subscribe_message",
                    "template_id": "tmpl-activity-1",
                    "data": {"thing1": "会员日活动", "date2": "2025年3月18日"},
                    "page": "pages/index/index",
                },
                {"kind": "gift_pack", "gift_pack_id": 3},
            ]
        },
    )

    kind: Literal["subscribe_message", "gift_pack"]
    template_id: SafeLine | None = Field(default=None, min_length=1, max_length=128)
    data: dict[
        Annotated[SafeLine, Field(max_length=32)], Annotated[SafeLine, Field(max_length=64)]
    ] = Field(default_factory=dict, max_length=20)
    page: SafeLine | None = Field(default=None, max_length=256)
    gift_pack_id: Id | None = None

    @model_validator(mode="after")
    def _fits_kind(self) -> Self:
        if self.kind == "subscribe_message":
            if not self.template_id or not self.data:
                raise ValueError("a subscribe_message needs template_id and data")
            if self.gift_pack_id is not None:
                raise ValueError("gift_pack_id is for gift_pack campaigns")
        else:
            if self.gift_pack_id is None:
                raise ValueError("a gift_pack campaign needs gift_pack_id")
            if self.template_id or self.data or self.page:
                raise ValueError("template_id, data and page are for subscribe_message")
        return self


class CampaignOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    segment_id: int
    kind: str
    payload: dict[str, Any]
    status: str = Field(description="queued | running | done")
    members: int
    sent: int
    skipped_by_cap: int = Field(description="not sent: the member's monthly touches are used")
    no_grant: int = Field(description="not sent: the member has not accepted this template")
    refused: int = Field(description="WeChat answered 43101 (refused or unsubscribed)")
    failed: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RecipientOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    member_id: int
    status: str
    error: str
    updated_at: datetime | None


class AutoTagCount(BaseModel):
    tag: str = Field(examples=["auto:repeat_buyer"])
    members: int


class AutoTagRefreshOut(BaseModel):
    added: int
    removed: int
    total: int
