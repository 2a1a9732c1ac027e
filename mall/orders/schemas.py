from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from mall.addresses.schemas import AddressSnapshot
from mall.kit.bounds import Id, Points
from mall.kit.text import SafeLine
from mall.pricing import Breakdown
from mall.pricing.calc import Delivery


class OrderItemIn(BaseModel):
    sku_id: Id
    quantity: int = Field(ge=1, le=99)


class PreviewIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"items": [{"sku_id": 3, "quantity": 2}], "coupon_id": 15, "points": 500,
                 "use_wallet": True, "delivery": "express", "address_id": 7}
            ]
        },
    )  # fmt: skip

    items: list[OrderItemIn] = Field(min_length=1, max_length=50)
    coupon_id: Id | None = None
    points: Points = Field(default=0, description="points to pay with (capped by the rules)")
    use_wallet: bool = Field(default=False, description="pay what the wallet covers from it")
    delivery: Delivery = "express"
    address_id: Id | None = Field(
        default=None, description="required to place an express or same-city order"
    )


OrderIn = PreviewIn


class CheckoutBreakdown(Breakdown):
    """The pricing breakdown plus how the amount due is paid: stored value, then cash."""

    use_wallet: bool = False
    wallet_balance_fen: int | None = Field(
        default=None, description="the member's stored value (None: wallet not available)"
    )
    wallet_fen: int = 0
    cash_fen: int = Field(default=0, description="paid through WeChat Pay")


class OrderLineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    sku_id: int
    product_id: int
    name: str
    specs: dict[str, str]
    quantity: int
    is_gift: bool
    unit_list_fen: int
    unit_member_fen: int
    list_total_fen: int
    member_total_fen: int
    coupon_fen: int
    points_fen: int
    points_used: int
    due_fen: int
    refunded_quantity: int
    refunded_due_fen: int
    refunded_points: int


class RefundOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    order_id: int
    out_refund_no: str
    kind: str
    lines: list[dict[str, int]]
    goods_fen: int
    shipping_fen: int
    money_fen: int
    wallet_fen: int
    cash_fen: int
    points: int
    earned_points_reversed: int
    coupon_status: str
    restocked: bool
    reason: str
    cash_status: str = Field(
        description="none | pending | processing | succeeded | failed | abnormal | offline"
    )
    cash_attempt: int = Field(default=0, description="ops retries of an abnormal cash refund")
    cash_error: str = Field(default="", description="what WeChat Pay answered, when it failed")
    resolution: str = Field(default="", description="'' | retry | offline")
    resolution_note: str = ""
    resolved_at: datetime | None = None
    created_at: datetime


class AdminRefundOut(RefundOut):
    """A refund as ops see it: whose order it is, for a link to the member."""

    member_id: int | None = Field(default=None, description="the order's member")


class PaymentParams(BaseModel):
    """Pass these to `wx.requestPayment`."""

    timeStamp: str  # WeChat's names
    nonceStr: str
    package: str
    signType: str
    paySign: str


class OrderSummary(BaseModel):
    id: int
    number: str
    status: str
    delivery: str
    amount_due_fen: int
    cash_fen: int
    wallet_fen: int
    points_used: int
    item_count: int
    first_item_name: str
    pay_deadline: datetime | None
    created_at: datetime


class OrderPage(BaseModel):
    items: list[OrderSummary]
    next_cursor: str | None = None


class OrderOut(BaseModel):
    id: int
    number: str
    status: str
    delivery: str
    address: AddressSnapshot | None
    lines: list[OrderLineOut]
    breakdown: CheckoutBreakdown
    list_total_fen: int
    member_total_fen: int
    coupon_id: int | None
    coupon_fen: int
    goods_fen: int
    points_used: int
    points_fen: int
    shipping_fen: int
    amount_due_fen: int
    wallet_fen: int
    cash_fen: int
    pay_deadline: datetime | None
    payment: PaymentParams | None = Field(
        default=None, description="while cash is due: the wx.requestPayment parameters"
    )
    payment_error: str | None = Field(
        default=None,
        description="WeChat Pay could not be reached; retry with POST /orders/{id}/pay",
    )
    paid_at: datetime | None
    shipping_company: str
    tracking_no: str
    shipped_at: datetime | None
    completed_at: datetime | None
    cancelled_at: datetime | None
    closed_at: datetime | None
    refunded_fen: int
    refunded_points: int
    earned_points: int
    earned_points_reversed: int
    refunds: list[RefundOut]
    source: str = Field(default="", description="'' | seckill (a flash-sale win being paid)")
    source_ref: str | None = Field(default=None, description="e.g. seckill:<reservation id>")
    created_at: datetime


class AdminOrderOut(OrderOut):
    member_id: int
    transaction_id: str | None
    refunded_cash_fen: int
    refunded_wallet_fen: int


class AdminOrderPage(BaseModel):
    items: list[OrderSummary]
    next_cursor: str | None = None


class RefundLineIn(BaseModel):
    line_id: Id
    quantity: int = Field(ge=1, le=99)


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: list[RefundLineIn] | None = Field(
        default=None, max_length=50, description="lines and quantities; omit for everything left"
    )
    reason: SafeLine = Field(default="", max_length=128)


class AdminRefundIn(RefundIn):
    restock: bool = Field(default=True, description="put the refunded units back on sale")


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: SafeLine = Field(default="", max_length=128)


class ShipIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    shipping_company: SafeLine = Field(default="", max_length=32, examples=["顺丰速运"])
    tracking_no: SafeLine = Field(default="", max_length=64, examples=["SF1234567890"])
