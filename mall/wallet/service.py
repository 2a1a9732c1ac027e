"""Stored value: wallet balances, top-ups through WeChat Pay, paying and refunding orders.

Rules (documented for ops and the front end):
- **Principal and bonus are kept apart.** Principal is money the member paid in; bonus
  is what a top-up plan added on top. Only principal is ever paid back out.
- **Spending order** is `MALL_WALLET_SPEND_ORDER`: `principal_first` (default; bonus is
  used once the principal is gone) or `bonus_first`.
- **An order refund** returns to the wallet in the proportion the payment was made,
  counted cumulatively over partial refunds (principal share rounded up), so a full
  refund returns exactly what was taken from each.
- **A top-up refund** (ops) sends back principal only, at most what is unspent: the
  top-up's principal not yet refunded, capped by the wallet's principal now. The
  top-up's bonus is forfeited in the same proportion (rounded up, cumulatively): if
  that much bonus is no longer in the wallet (it was spent), the part spent is kept
  back from the cash refund ("clawback"), since it was spent as if it were money.
- **A top-up is credited only** by a verified WeChat Pay notification or by the poll
  job's query, exactly once (a conditional status change plus a unique ledger key).

Every balance change locks the wallet row (FOR UPDATE on PostgreSQL), moves the
balances with a conditional UPDATE (never below zero) and writes an append-only
WalletEntry with a unique idempotency key, all in one transaction."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.functions import Sum
from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.errors import MallError
from mall.kit.pagination import cursor_page
from mall.members import service as members_service
from mall.members.models import Member
from mall.wallet.ledger import WALLET_ADJUST_BELOW_ZERO as WALLET_ADJUST_BELOW_ZERO
from mall.wallet.ledger import WALLET_ADJUST_INVALID as WALLET_ADJUST_INVALID
from mall.wallet.ledger import WALLET_AMOUNT_INVALID as WALLET_AMOUNT_INVALID
from mall.wallet.ledger import WALLET_INSUFFICIENT as WALLET_INSUFFICIENT
from mall.wallet.ledger import WALLET_PAYMENT_NOT_FOUND as WALLET_PAYMENT_NOT_FOUND
from mall.wallet.ledger import WALLET_PLAN_IN_USE as WALLET_PLAN_IN_USE
from mall.wallet.ledger import WALLET_PLAN_LIMIT as WALLET_PLAN_LIMIT
from mall.wallet.ledger import WALLET_PLAN_NOT_FOUND as WALLET_PLAN_NOT_FOUND
from mall.wallet.ledger import WALLET_PLAN_OFF as WALLET_PLAN_OFF
from mall.wallet.ledger import WALLET_REFUND_NOT_ABNORMAL as WALLET_REFUND_NOT_ABNORMAL
from mall.wallet.ledger import WALLET_REFUND_NOT_FOUND as WALLET_REFUND_NOT_FOUND
from mall.wallet.ledger import WALLET_REFUND_RETRY_REFUSED as WALLET_REFUND_RETRY_REFUSED
from mall.wallet.ledger import WALLET_REFUND_TOO_LARGE as WALLET_REFUND_TOO_LARGE
from mall.wallet.ledger import WALLET_TOPUP_NOT_FOUND as WALLET_TOPUP_NOT_FOUND
from mall.wallet.ledger import WALLET_TOPUP_NOT_REFUNDABLE as WALLET_TOPUP_NOT_REFUNDABLE
from mall.wallet.ledger import WALLET_TOPUP_NOTHING_TO_REFUND as WALLET_TOPUP_NOTHING_TO_REFUND
from mall.wallet.ledger import WALLET_TOPUP_REFUND_TOO_LARGE as WALLET_TOPUP_REFUND_TOO_LARGE
from mall.wallet.ledger import PaymentMismatch as PaymentMismatch
from mall.wallet.ledger import WalletBalance as WalletBalance
from mall.wallet.ledger import WalletPayment as WalletPayment
from mall.wallet.ledger import _append, _ensure_wallet, _key, _lock
from mall.wallet.ledger import entries_page as entries_page
from mall.wallet.ledger import get_balance as get_balance
from mall.wallet.models import (
    ADJUST,
    PAID,
    PENDING,
    REFUND_PENDING,
    REFUND_PROCESSING,
    TOPUP,
    TopUp,
    TopUpRefund,
    Wallet,
    WalletEntry,
)
from mall.wallet.payments import paid_from_wallet as paid_from_wallet
from mall.wallet.payments import pay as pay
from mall.wallet.payments import refund as refund
from mall.wallet.refunds import abnormal_refunds as abnormal_refunds
from mall.wallet.refunds import apply_refund_result as apply_refund_result
from mall.wallet.refunds import on_top_up_refund as on_top_up_refund
from mall.wallet.refunds import poll_refunds as poll_refunds
from mall.wallet.refunds import refund_top_up as refund_top_up
from mall.wallet.refunds import refundable_fen as refundable_fen
from mall.wallet.refunds import resolve_abnormal_refund as resolve_abnormal_refund
from mall.wallet.refunds import wechat_refund_no as wechat_refund_no
from mall.wallet.top_ups import create_plan as create_plan
from mall.wallet.top_ups import create_top_up as create_top_up
from mall.wallet.top_ups import delete_plan as delete_plan
from mall.wallet.top_ups import get_plan as get_plan
from mall.wallet.top_ups import get_top_up as get_top_up
from mall.wallet.top_ups import list_plans as list_plans
from mall.wallet.top_ups import on_top_up_paid as on_top_up_paid
from mall.wallet.top_ups import plans_for_member as plans_for_member
from mall.wallet.top_ups import poll_top_ups as poll_top_ups
from mall.wallet.top_ups import refresh_top_up as refresh_top_up
from mall.wallet.top_ups import update_plan as update_plan
from mall.wechat import pay as wechat_pay

# --- ops -------------------------------------------------------------------------------


async def adjust(
    member_id: int,
    *,
    principal_fen: int,
    bonus_fen: int,
    reason: str,
    staff: Any,
    idempotency_key: str | None,
) -> WalletEntry:
    """A manual change with a reason; audited; never below zero."""
    if principal_fen == 0 and bonus_fen == 0:
        raise WALLET_ADJUST_INVALID()
    key = _key(ADJUST, idempotency_key or secrets.token_hex(16))
    found = await WalletEntry.get_or_none(idempotency_key=key)
    if found is not None:
        return found
    await _ensure_wallet(member_id)
    try:
        async with in_transaction():
            wallet = await _lock(member_id)
            try:
                entry = await _append(
                    wallet,
                    principal_fen,
                    bonus_fen,
                    ADJUST,
                    key,
                    reason=reason,
                    staff_id=getattr(staff, "id", None),
                )
            except MallError as exc:
                if exc.error is WALLET_INSUFFICIENT:
                    raise WALLET_ADJUST_BELOW_ZERO() from None
                raise
            await audit_service.record(
                staff,
                "wallet.adjust",
                f"member:{member_id}",
                principal_fen=principal_fen,
                bonus_fen=bonus_fen,
                reason=reason,
                entry_id=entry.id,
            )
    except IntegrityError:
        found = await WalletEntry.get_or_none(idempotency_key=key)
        if found is None:
            raise
        return found
    return entry


@dataclass(frozen=True)
class Liability:
    principal_fen: int
    bonus_fen: int
    wallets_with_balance: int
    pending_top_ups: int
    refunds_in_flight_fen: int


async def liability() -> Liability:
    """Stored value owed to members, principal and bonus apart."""
    rows = await Wallet.all().annotate(p=Sum("principal_fen"), b=Sum("bonus_fen")).values("p", "b")
    principal = int(rows[0]["p"] or 0) if rows else 0
    bonus = int(rows[0]["b"] or 0) if rows else 0
    holders = await Wallet.filter(Q(principal_fen__gt=0) | Q(bonus_fen__gt=0)).count()
    pending = await TopUp.filter(status=PENDING).count()
    in_flight = (
        await TopUpRefund.filter(status__in=[REFUND_PENDING, REFUND_PROCESSING])
        .annotate(c=Sum("cash_fen"))
        .values("c")
    )
    return Liability(
        principal_fen=principal,
        bonus_fen=bonus,
        wallets_with_balance=holders,
        pending_top_ups=pending,
        refunds_in_flight_fen=int(in_flight[0]["c"] or 0) if in_flight else 0,
    )


async def list_top_ups(
    *, member_id: int | None, status: str | None, cursor: str | None, size: int
) -> tuple[list[TopUp], str | None]:
    query = TopUp.all()
    if member_id is not None:
        query = query.filter(member_id=member_id)
    if status:
        query = query.filter(status=status)
    return await cursor_page(query, cursor, size)


async def refunds_of(top_up_id: int) -> list[TopUpRefund]:
    return await TopUpRefund.filter(top_up_id=top_up_id).order_by("-id")


# --- the check ---------------------------------------------------------------------------


async def check_ledger() -> list[str]:
    """Problems found (empty = the ledger and the balances agree)."""
    problems: list[str] = []
    sums = {
        int(r["member_id"]): (int(r["p"] or 0), int(r["b"] or 0))
        for r in await WalletEntry.annotate(p=Sum("principal_delta"), b=Sum("bonus_delta"))
        .group_by("member_id")
        .values("member_id", "p", "b")
    }
    wallets = {
        int(r["member_id"]): (int(r["principal_fen"]), int(r["bonus_fen"]))
        for r in await Wallet.all().values("member_id", "principal_fen", "bonus_fen")
    }
    for member_id in sorted(set(sums) | set(wallets)):
        entries = sums.get(member_id, (0, 0))
        balance = wallets.get(member_id)
        if balance is None:
            problems.append(f"member {member_id}: entries {entries} but no wallet")
            continue
        if entries[0] != balance[0]:
            problems.append(
                f"member {member_id}: principal entries {entries[0]} != balance {balance[0]}"
            )
        if entries[1] != balance[1]:
            problems.append(
                f"member {member_id}: bonus entries {entries[1]} != balance {balance[1]}"
            )
        if balance[0] < 0 or balance[1] < 0:
            problems.append(f"member {member_id}: negative balance {balance}")
    paid = set(await TopUp.filter(status=PAID).values_list("out_trade_no", flat=True))
    credited = [
        str(ref) for ref in await WalletEntry.filter(kind=TOPUP).values_list("reference", flat=True)
    ]
    if len(credited) != len(set(credited)):
        problems.append("a top-up was credited more than once")
    if set(credited) != paid:
        problems.append(
            f"paid top-ups without credit {sorted(paid - set(credited))[:5]}, "
            f"credits without a paid top-up {sorted(set(credited) - paid)[:5]}"
        )
    return problems


async def _profile_extra(member: Member) -> dict[str, object]:
    return {"wallet_balance": (await get_balance(member.id)).total_fen}


members_service.profile_extras.append(_profile_extra)
# registered with WeChat Pay by the composition root (mall.app)
PAYMENTS = wechat_pay.Handlers("T", on_top_up_paid, on_top_up_refund)
