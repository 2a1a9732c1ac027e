"""Refunds of top-ups (ops): sent to WeChat Pay, results applied once, abnormal ones resolved."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from typing import Any

from tortoise.expressions import F
from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.config import get_settings
from mall.errors import MallError
from mall.kit import clock
from mall.kit.money import fmt_yuan
from mall.wallet.ledger import (
    WALLET_REFUND_NOT_ABNORMAL,
    WALLET_REFUND_NOT_FOUND,
    WALLET_REFUND_RETRY_REFUSED,
    WALLET_TOPUP_NOT_REFUNDABLE,
    WALLET_TOPUP_NOTHING_TO_REFUND,
    WALLET_TOPUP_REFUND_TOO_LARGE,
    PaymentMismatch,
    WalletBalance,
    _append,
    _key,
    _lock,
    _positive,
)
from mall.wallet.models import (
    PAID,
    REFUND_ABNORMAL,
    REFUND_FAILED,
    REFUND_OFFLINE,
    REFUND_PENDING,
    REFUND_PROCESSING,
    REFUND_SUCCEEDED,
    TOPUP_REFUND,
    TOPUP_REFUND_RETURN,
    TopUp,
    TopUpRefund,
)
from mall.wallet.top_ups import _new_number, get_top_up
from mall.wechat import pay as wechat_pay

log = logging.getLogger("mall.wallet")


# --- top-up refunds (ops) --------------------------------------------------------------


def refundable_fen(top_up: TopUp, balance: WalletBalance) -> int:
    """Principal of this top-up that can go back now: not yet refunded and unspent."""
    if top_up.status != PAID:
        return 0
    return max(0, min(top_up.amount_fen - top_up.refunded_principal_fen, balance.principal_fen))


async def refund_top_up(
    top_up_id: int,
    *,
    principal_fen: int | None,
    reason: str,
    staff: Any,
    idempotency_key: str | None,
) -> TopUpRefund:
    """Refund principal of a paid top-up through WeChat Pay (see the module rules)."""
    key = _key("topup_refund_request", idempotency_key or secrets.token_hex(16))
    found = await TopUpRefund.get_or_none(idempotency_key=key)
    if found is not None:
        return found
    top_up = await get_top_up(top_up_id)
    if top_up.status != PAID:
        raise WALLET_TOPUP_NOT_REFUNDABLE()
    if principal_fen is not None:
        _positive(principal_fen)
    now = clock.now()
    async with in_transaction():
        wallet = await _lock(top_up.member_id)
        top_up = await get_top_up(top_up_id)
        left = refundable_fen(top_up, WalletBalance(wallet.principal_fen, wallet.bonus_fen))
        want = left if principal_fen is None else principal_fen
        if want <= 0 or want > left:
            raise WALLET_TOPUP_REFUND_TOO_LARGE(left=fmt_yuan(left))
        refunded_after = top_up.refunded_principal_fen + want
        bonus_due = (
            -(-top_up.bonus_fen * refunded_after // top_up.amount_fen) - top_up.forfeited_bonus_fen
        )
        bonus_taken = min(bonus_due, wallet.bonus_fen)
        clawback = bonus_due - bonus_taken
        cash = want - clawback
        if cash <= 0:
            raise WALLET_TOPUP_NOTHING_TO_REFUND()
        out_refund_no = _new_number("RT")
        entry = await _append(
            wallet,
            -want,
            -bonus_taken,
            TOPUP_REFUND,
            _key(TOPUP_REFUND, out_refund_no),
            reference=top_up.out_trade_no,
            reason=reason,
            staff_id=getattr(staff, "id", None),
        )
        await TopUp.filter(id=top_up.id).update(
            refunded_principal_fen=F("refunded_principal_fen") + want,
            forfeited_bonus_fen=F("forfeited_bonus_fen") + bonus_due,
        )
        refund_row = await TopUpRefund.create(
            top_up_id=top_up.id,
            member_id=top_up.member_id,
            out_refund_no=out_refund_no,
            idempotency_key=key,
            principal_fen=want,
            bonus_fen=bonus_taken,
            clawback_fen=clawback,
            cash_fen=cash,
            status=REFUND_PENDING,
            reason=reason[:255],
            staff_id=getattr(staff, "id", None),
            entry_id=entry.id,
            created_at=now,
            updated_at=now,
        )
        await audit_service.record(
            staff,
            "wallet.topup.refund",
            f"topup:{top_up.id}",
            out_refund_no=out_refund_no,
            principal_fen=want,
            bonus_fen=bonus_taken,
            clawback_fen=clawback,
            cash_fen=cash,
            reason=reason,
        )
    await _send_refund(refund_row, top_up)
    return await TopUpRefund.get(id=refund_row.id)


def wechat_refund_no(refund_row: TopUpRefund) -> str:
    """The number WeChat Pay knows the refund's current attempt by."""
    return wechat_pay.attempt_refund_no(refund_row.out_refund_no, refund_row.attempt)


async def _find_refund(wechat_no: str) -> TopUpRefund | None:
    """The refund row of a number WeChat reports, if it is the row's current attempt
    (an answer about an attempt ops have since replaced is old news)."""
    for number, attempt in wechat_pay.refund_attempts(wechat_no):
        found = await TopUpRefund.get_or_none(out_refund_no=number)
        if found is not None:
            return found if found.attempt == attempt else None
    return None


async def _send_refund(refund_row: TopUpRefund, top_up: TopUp) -> None:
    """Ask WeChat Pay to pay the refund out (again: out_refund_no makes it one refund)."""
    await TopUpRefund.filter(id=refund_row.id).update(updated_at=clock.now())
    try:
        result = await wechat_pay.refund(
            out_trade_no=top_up.out_trade_no,
            out_refund_no=wechat_refund_no(refund_row),
            refund_fen=refund_row.cash_fen,
            total_fen=top_up.amount_fen,
            reason=refund_row.reason,
        )
    except MallError as exc:
        final = exc.error in wechat_pay.FINAL_ERRORS or exc.error is wechat_pay.PAY_NOT_ENOUGH
        if final and refund_row.attempt > 0:
            # a retry of an abnormal refund: the money is still out, back to abnormal
            await TopUpRefund.filter(id=refund_row.id, status=REFUND_PENDING).update(
                status=REFUND_ABNORMAL, error_code=exc.code, updated_at=clock.now()
            )
            raise WALLET_REFUND_RETRY_REFUSED(
                wechat_code=str(exc.params.get("wechat_code") or exc.code)
            ) from None
        if final:
            await _return_refund(refund_row, exc.code)
            raise
        # busy, rate-limited, unverifiable, misconfigured: the poll job sends it again
        log.warning("top-up refund %s not sent yet: %s", refund_row.out_refund_no, exc.code)
        await TopUpRefund.filter(id=refund_row.id, status=REFUND_PENDING).update(
            error_code=exc.code
        )
        return
    await apply_refund_result(refund_row, result)


async def apply_refund_result(refund_row: TopUpRefund, result: wechat_pay.RefundResult) -> None:
    if result.refund_fen and result.refund_fen != refund_row.cash_fen:
        log.error(
            "top-up refund %s: WeChat reports %s fen, we asked %s",
            refund_row.out_refund_no,
            result.refund_fen,
            refund_row.cash_fen,
        )
        raise PaymentMismatch(f"refund {refund_row.out_refund_no}: amount differs")
    open_states = [REFUND_PENDING, REFUND_PROCESSING]
    now = clock.now()
    if result.status == "SUCCESS":
        await TopUpRefund.filter(id=refund_row.id, status__in=open_states).update(
            status=REFUND_SUCCEEDED, refund_id=result.refund_id[:64], error_code="", updated_at=now
        )
    elif result.status == "PROCESSING":
        await TopUpRefund.filter(id=refund_row.id, status=REFUND_PENDING).update(
            status=REFUND_PROCESSING, refund_id=result.refund_id[:64], error_code="", updated_at=now
        )
    elif result.status == "ABNORMAL":
        log.error("top-up refund %s is ABNORMAL: settle it by hand", refund_row.out_refund_no)
        await TopUpRefund.filter(id=refund_row.id, status__in=open_states).update(
            status=REFUND_ABNORMAL, refund_id=result.refund_id[:64], updated_at=now
        )
    elif result.status == "CLOSED":
        await _return_refund(refund_row, "REFUND_CLOSED")


async def _return_refund(refund_row: TopUpRefund, error_code: str) -> None:
    """WeChat Pay will not pay this refund out: put the money back in the wallet."""
    async with in_transaction():
        wallet = await _lock(refund_row.member_id)
        moved = await TopUpRefund.filter(
            id=refund_row.id, status__in=[REFUND_PENDING, REFUND_PROCESSING, REFUND_ABNORMAL]
        ).update(status=REFUND_FAILED, error_code=error_code[:64], updated_at=clock.now())
        if not moved:
            return
        top_up = await get_top_up(refund_row.top_up_id)
        await _append(
            wallet,
            refund_row.principal_fen,
            refund_row.bonus_fen,
            TOPUP_REFUND_RETURN,
            _key(TOPUP_REFUND_RETURN, refund_row.out_refund_no),
            reference=top_up.out_trade_no,
            reason=f"refund {refund_row.out_refund_no} failed: {error_code}",
        )
        await TopUp.filter(id=top_up.id).update(
            refunded_principal_fen=F("refunded_principal_fen") - refund_row.principal_fen,
            forfeited_bonus_fen=F("forfeited_bonus_fen")
            - (refund_row.bonus_fen + refund_row.clawback_fen),
        )
    log.warning(
        "top-up refund %s failed (%s); wallet restored", refund_row.out_refund_no, error_code
    )


async def on_top_up_refund(result: wechat_pay.RefundResult) -> None:
    """REFUND_HANDLERS["T"]: a refund notification for a top-up."""
    refund_row = await _find_refund(result.out_refund_no)
    if refund_row is None:
        if await TopUpRefund.filter(
            out_refund_no=result.out_refund_no.rpartition("-")[0] or result.out_refund_no
        ).exists():
            log.info("refund %s: an attempt since replaced; ignored", result.out_refund_no)
            return
        raise PaymentMismatch(f"unknown top-up refund {result.out_refund_no!r}")
    if result.mchid and result.mchid != get_settings().wechatpay_mchid:
        raise PaymentMismatch(f"refund {result.out_refund_no}: mchid differs")
    await apply_refund_result(refund_row, result)


async def poll_refunds(limit: int = 100) -> int:
    """The job: send again refunds WeChat never accepted, query those in flight."""
    now = clock.now()
    due = (
        await TopUpRefund.filter(
            status__in=[REFUND_PENDING, REFUND_PROCESSING],
            updated_at__lte=now - timedelta(seconds=get_settings().wallet_query_after_seconds),
        )
        .order_by("id")
        .limit(limit)
    )
    for refund_row in due:
        try:
            if refund_row.status == REFUND_PENDING:
                await _send_refund(refund_row, await get_top_up(refund_row.top_up_id))
                continue
            await TopUpRefund.filter(id=refund_row.id).update(updated_at=now)
            result = await wechat_pay.query_refund(wechat_refund_no(refund_row))
            if result is not None:
                await apply_refund_result(refund_row, result)
        except Exception:
            log.exception("top-up refund %s could not be settled", refund_row.out_refund_no)
    return len(due)


async def resolve_abnormal_refund(
    refund_id: int, *, action: str, note: str, staff: Any
) -> TopUpRefund:
    """Ops settle a refund WeChat Pay reported ABNORMAL (the member's account refused it,
    e.g. a closed bank card). Audited, and idempotent: asking again for what was done
    answers the row as it is.

    - `retry`: WeChat Pay is asked about the refund first (it may have gone through
      since); if it still did not, the refund is sent again to the original payment as
      a new attempt ("<out_refund_no>-<n>"). If WeChat Pay refuses (typically: the
      abnormal refund still holds the amount), the row stays abnormal and the answer
      says to pay it out another way.
    - `offline`: ops paid the member another way (bank transfer, cash); `note` says how.
      The wallet is not touched (the principal left it when the refund was made)."""
    refund_row = await TopUpRefund.get_or_none(id=refund_id)
    if refund_row is None:
        raise WALLET_REFUND_NOT_FOUND()
    if refund_row.resolution == action and refund_row.status != REFUND_ABNORMAL:
        return refund_row  # done already (a retry in flight or settled, or paid offline)
    if refund_row.status != REFUND_ABNORMAL:
        raise WALLET_REFUND_NOT_ABNORMAL(status=refund_row.status)
    now = clock.now()
    if action == "offline":
        async with in_transaction():
            moved = await TopUpRefund.filter(id=refund_row.id, status=REFUND_ABNORMAL).update(
                status=REFUND_OFFLINE,
                resolution="offline",
                resolution_note=note[:255],
                resolved_by=getattr(staff, "id", None),
                resolved_at=now,
                updated_at=now,
            )
            if not moved:
                return await _resolved_meanwhile(refund_row.id, action)
            await audit_service.record(
                staff,
                "wallet.topup_refund.offline",
                f"topup_refund:{refund_row.id}",
                out_refund_no=refund_row.out_refund_no,
                cash_fen=refund_row.cash_fen,
                note=note,
            )
        return await TopUpRefund.get(id=refund_row.id)

    # retry: first what WeChat Pay says now about the current attempt
    result = await wechat_pay.query_refund(wechat_refund_no(refund_row))
    if result is not None and result.status in ("SUCCESS", "PROCESSING"):
        async with in_transaction():
            moved = await TopUpRefund.filter(id=refund_row.id, status=REFUND_ABNORMAL).update(
                status=REFUND_SUCCEEDED if result.status == "SUCCESS" else REFUND_PROCESSING,
                error_code="",
                resolution="retry",
                resolved_by=getattr(staff, "id", None),
                resolved_at=now,
                updated_at=now,
            )
            if moved:
                await audit_service.record(
                    staff,
                    "wallet.topup_refund.retry",
                    f"topup_refund:{refund_row.id}",
                    out_refund_no=wechat_refund_no(refund_row),
                    wechat_status=result.status,
                )
        return await TopUpRefund.get(id=refund_row.id)
    attempt = refund_row.attempt + 1
    async with in_transaction():
        moved = await TopUpRefund.filter(
            id=refund_row.id, status=REFUND_ABNORMAL, attempt=refund_row.attempt
        ).update(
            status=REFUND_PENDING,
            attempt=attempt,
            error_code="",
            resolution="retry",
            resolution_note=note[:255],
            resolved_by=getattr(staff, "id", None),
            resolved_at=now,
            updated_at=now,
        )
        if not moved:
            return await _resolved_meanwhile(refund_row.id, action)
        await audit_service.record(
            staff,
            "wallet.topup_refund.retry",
            f"topup_refund:{refund_row.id}",
            out_refund_no=f"{refund_row.out_refund_no}-{attempt}",
            previous=wechat_refund_no(refund_row),
            previous_status=result.status if result is not None else "",
            cash_fen=refund_row.cash_fen,
        )
    refund_row = await TopUpRefund.get(id=refund_row.id)
    await _send_refund(refund_row, await get_top_up(refund_row.top_up_id))
    return await TopUpRefund.get(id=refund_row.id)


async def _resolved_meanwhile(refund_id: int, action: str) -> TopUpRefund:
    fresh = await TopUpRefund.get(id=refund_id)
    if fresh.resolution == action:
        return fresh
    raise WALLET_REFUND_NOT_ABNORMAL(status=fresh.status)


async def abnormal_refunds() -> list[TopUpRefund]:
    """Top-up refunds waiting for ops: WeChat Pay could not pay them out."""
    return await TopUpRefund.filter(status=REFUND_ABNORMAL).order_by("id")
