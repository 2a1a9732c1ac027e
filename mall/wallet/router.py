"""Shopper routes for stored value, and WeChat Pay's notification endpoint."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from mall.config import get_settings
from mall.deps import CurrentMember, IdempotencyKey, RedisClient
from mall.errors import ErrorCode, MallError
from mall.kit import idempotency, ratelimit
from mall.kit.bounds import Cursor, Id, Limit
from mall.wallet import service
from mall.wallet.schemas import (
    EntryOut,
    PlanOut,
    RequestPaymentOut,
    ShopperPlanOut,
    TopUpCreatedOut,
    TopUpIn,
    TopUpOut,
    WalletOut,
)
from mall.wechat import pay as wechat_pay

log = logging.getLogger("mall.wallet")

router = APIRouter(prefix="/api/v1", tags=["wallet"])


@router.get("/wallet", response_model=WalletOut)
async def my_wallet(
    member: CurrentMember,
    cursor: Cursor | None = None,
    size: Limit = 20,
) -> WalletOut:
    """Stored-value balance (principal and bonus apart) and the entries, newest first."""
    balance = await service.get_balance(member.id)
    entries, next_cursor = await service.entries_page(member.id, cursor, size)
    return WalletOut(
        principal_fen=balance.principal_fen,
        bonus_fen=balance.bonus_fen,
        total_fen=balance.total_fen,
        spend_order=get_settings().wallet_spend_order,
        entries=[EntryOut.model_validate(e) for e in entries],
        next_cursor=next_cursor,
    )


@router.get("/wallet/plans", response_model=list[ShopperPlanOut])
async def plans(member: CurrentMember) -> list[ShopperPlanOut]:
    """Top-up plans on offer (pay `amount_fen`, get `bonus_fen` on top)."""
    return [
        ShopperPlanOut(**PlanOut.model_validate(plan).model_dump(), left_for_you=left)
        for plan, left in await service.plans_for_member(member.id)
    ]


@router.post("/wallet/top-ups", response_model=TopUpCreatedOut, status_code=201)
async def create_top_up(
    body: TopUpIn, member: CurrentMember, key: IdempotencyKey = None
) -> TopUpCreatedOut:
    """Start a top-up: returns the parameters for `wx.requestPayment`. The balance is
    credited once WeChat Pay confirms the payment (poll `GET /wallet/top-ups/{id}`).
    Asking again for the same plan while a top-up is open returns that one."""
    await ratelimit.hit(f"wallet.topup:{member.id}", 10, 60)

    async def work() -> TopUpCreatedOut:
        top_up, params = await service.create_top_up(member.id, body.plan_id)
        return TopUpCreatedOut(
            top_up=TopUpOut.model_validate(top_up), payment=RequestPaymentOut(**params)
        )

    answer = await idempotency.run(
        f"wallet.topup:{member.id}", key, idempotency.fingerprint(body.plan_id), work
    )
    return TopUpCreatedOut.model_validate(answer)


@router.get("/wallet/top-ups/{top_up_id}", response_model=TopUpOut)
async def top_up_status(top_up_id: Id, member: CurrentMember, redis: RedisClient) -> TopUpOut:
    """A top-up's state. While pending, WeChat Pay is asked (at most every few seconds),
    so a payment whose notification is late is credited now."""
    top_up = await service.get_top_up(top_up_id, member_id=member.id)
    if top_up.status == "pending" and await redis.set(
        f"wallet:ask:{top_up.id}", "1", nx=True, ex=3
    ):
        try:
            top_up = await service.refresh_top_up(top_up)
        except Exception as exc:  # the stored state is still a correct answer
            log.warning("top-up %s not refreshed: %s", top_up.out_trade_no, type(exc).__name__)
    return TopUpOut.model_validate(top_up)


def _fail(error: ErrorCode) -> JSONResponse:
    """WeChat Pay's failure shape (`code` FAIL makes it retry), with our stable code."""
    body = MallError(error).body()
    return JSONResponse(
        {"code": "FAIL", "message": body["error"]["message"], **body}, status_code=error.status
    )


# WeChat Pay's own answer format, not the API's error envelope
_FAIL_SCHEMA = {
    "application/json": {
        "schema": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "enum": ["FAIL"]},
                "message": {"type": "string"},
                "error": {"$ref": "#/components/schemas/ErrorEnvelope/properties/error"},
            },
        }
    }
}


@router.post(
    "/wechat/pay-notify",
    tags=["wechat"],
    status_code=204,
    responses={
        204: {"description": "verified and handled"},
        401: {
            "description": '`{"code": "FAIL", "message", "error": {"code", "message"}}`: '
            "`PAY_NOTIFY_SIGNATURE_INVALID` (signature, timestamp, serial) or "
            "`PAY_NOTIFY_UNDECRYPTABLE` (signed, but the resource does not decrypt)",
            "content": _FAIL_SCHEMA,
        },
        413: {"description": "`PAYLOAD_TOO_LARGE`: over `MALL_PAY_NOTIFY_MAX_BODY_BYTES`"},
        500: {
            "description": "`PAY_NOTIFY_NOT_HANDLED`: verified but not handled; WeChat retries",
            "content": _FAIL_SCHEMA,
        },
    },
)
async def pay_notify(request: Request) -> Response:
    """WeChat Pay v3 notifications (payments and refunds). No bearer token: the
    `Wechatpay-*` signature is verified, stale or probe requests are refused, the
    resource is decrypted and handed to the domain the `out_trade_no` belongs to."""
    body = await request.body()
    try:
        notification = await wechat_pay.receive_notification(request.headers, body)
    except wechat_pay.DecryptionError as exc:
        # signed by WeChat Pay, yet it does not open: most likely our APIv3 key is wrong
        log.error("wechatpay notification does not decrypt (check the APIv3 key): %s", exc)
        return _fail(wechat_pay.PAY_NOTIFY_UNDECRYPTABLE)
    except wechat_pay.VerificationError as exc:
        log.warning("wechatpay notification refused: %s", exc)
        return _fail(wechat_pay.PAY_NOTIFY_SIGNATURE_INVALID)
    except Exception:
        log.exception("wechatpay notification could not be read")
        return _fail(wechat_pay.PAY_NOTIFY_NOT_HANDLED)
    try:
        await wechat_pay.dispatch(notification)
    except Exception:
        log.exception("wechatpay notification %s not handled", notification.id)
        return _fail(wechat_pay.PAY_NOTIFY_NOT_HANDLED)
    return Response(status_code=204)
