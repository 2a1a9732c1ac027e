from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from mall.kit.bounds import MAX_COUNT, Fen, Id, SignedFen, SortOrder
from mall.kit.text import SafeLine


class BalanceOut(BaseModel):
    principal_fen: int = Field(description="topped-up money (refundable while unspent)")
    bonus_fen: int = Field(description="bonus received with top-ups (never paid out)")
    total_fen: int


class EntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str = Field(
        description="topup | pay | refund | topup_refund | topup_refund_return | adjust"
    )
    principal_delta: int
    bonus_delta: int
    principal_after: int
    bonus_after: int
    reference: str
    reason: str
    created_at: datetime


class WalletOut(BalanceOut):
    spend_order: str = Field(description="principal_first | bonus_first")
    entries: list[EntryOut]
    next_cursor: str | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "principal_fen": 90000,
                "bonus_fen": 10000,
                "total_fen": 100000,
                "spend_order": "principal_first",
                "entries": [
                    {
                        "id": 7,
                        "kind": "topup",
                        "principal_delta": 100000,
                        "bonus_delta": 10000,
                        "principal_after": 100000,
                        "bonus_after": 10000,
                        "reference": "T250518102233a1b2c3d4e5",
                        "reason": "Top-up 1000 get 100",
                        "created_at": "2025-05-18T10:22:40+08:00",
                    }
                ],
                "next_cursor": None,
            }
        }
    )


class PlanOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    amount_fen: int = Field(description="what the member pays")
    bonus_fen: int = Field(description="bonus credited on top")
    per_member_limit: int | None = Field(description="top-ups of this plan per member; null = any")
    active: bool
    sort: int


class ShopperPlanOut(PlanOut):
    left_for_you: int | None = Field(description="how many more times you may buy it; null = any")


class PlanIn(BaseModel):
    name: SafeLine = Field(min_length=1, max_length=64, examples=["Top up 1000 get 100"])
    amount_fen: int = Field(gt=0, le=10_000_000_00, examples=[100000])
    bonus_fen: int = Field(default=0, ge=0, le=10_000_000_00, examples=[10000])
    per_member_limit: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    active: bool = True
    sort: SortOrder = 0


class PlanPatch(BaseModel):
    name: SafeLine | None = Field(default=None, min_length=1, max_length=64)
    amount_fen: int | None = Field(default=None, gt=0, le=10_000_000_00)
    bonus_fen: int | None = Field(default=None, ge=0, le=10_000_000_00)
    per_member_limit: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    active: bool | None = None
    sort: SortOrder | None = None


class TopUpIn(BaseModel):
    plan_id: Id = Field(examples=[1])


class TopUpOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    plan_id: int
    out_trade_no: str
    amount_fen: int
    bonus_fen: int
    status: str = Field(description="pending | paid | closed")
    expires_at: datetime
    paid_at: datetime | None
    created_at: datetime


class RequestPaymentOut(BaseModel):
    """Pass these to `wx.requestPayment` as they are."""

    timeStamp: str
    nonceStr: str
    package: str
    signType: str
    paySign: str


class TopUpCreatedOut(BaseModel):
    top_up: TopUpOut
    payment: RequestPaymentOut

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "top_up": {
                    "id": 3,
                    "plan_id": 1,
                    "out_trade_no": "T250518102233a1b2c3d4e5",
                    "amount_fen": 100000,
                    "bonus_fen": 10000,
                    "status": "pending",
                    "expires_at": "2025-05-18T10:37:33+08:00",
                    "paid_at": None,
                    "created_at": "2025-05-18T10:22:33+08:00",
                },
                "payment": {
                    "timeStamp": "1747534953",
                    "nonceStr": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
                    "package": "prepay_id=wx201410272009395522657a690389285100",
                    "signType": "RSA",
                    "paySign": "oR9d8PuhnIc+YZ8cBHFCwfgpaK9gd7vaRvkYD7rthRAZ...",
                },
            }
        }
    )


class AdminTopUpOut(TopUpOut):
    member_id: int
    transaction_id: str
    refunded_principal_fen: int
    forfeited_bonus_fen: int
    refundable_fen: int = Field(description="principal that can still be refunded now")


class AdjustIn(BaseModel):
    principal_fen: SignedFen = Field(default=0, description="signed change of principal")
    bonus_fen: SignedFen = Field(default=0, description="signed change of bonus")
    reason: SafeLine = Field(min_length=2, max_length=255)


class AdjustOut(BaseModel):
    entry: EntryOut
    balance: BalanceOut


class MemberWalletOut(BalanceOut):
    member_id: int
    entries: list[EntryOut]
    next_cursor: str | None = None


class LiabilityOut(BaseModel):
    """Stored value owed to members: principal is refundable cash, bonus is not."""

    principal_fen: int
    bonus_fen: int
    total_fen: int
    wallets_with_balance: int
    pending_top_ups: int
    refunds_in_flight_fen: int = Field(description="top-up refunds not yet confirmed by WeChat")


class TopUpRefundIn(BaseModel):
    principal_fen: Fen | None = Field(
        default=None, gt=0, description="principal to refund; default all that is refundable"
    )
    reason: SafeLine = Field(min_length=2, max_length=80)


class TopUpRefundOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    top_up_id: int
    member_id: int
    out_refund_no: str
    principal_fen: int = Field(description="principal taken from the wallet")
    bonus_fen: int = Field(description="bonus forfeited from the wallet")
    clawback_fen: int = Field(description="bonus already spent, kept from the cash refund")
    cash_fen: int = Field(description="sent back through WeChat Pay")
    status: str = Field(
        description="pending | processing | succeeded | abnormal | failed | offline"
    )
    error_code: str
    reason: str
    attempt: int = Field(
        default=0, description="ops retries of an abnormal refund (sent as out_refund_no-n)"
    )
    resolution: str = Field(default="", description="'' | retry | offline")
    resolution_note: str = ""
    resolved_at: datetime | None = None
    created_at: datetime
