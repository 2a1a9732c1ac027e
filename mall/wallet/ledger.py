"""The wallet ledger core, its error codes and the balance types.

Every balance change locks the wallet row (FOR UPDATE on PostgreSQL), moves the
balances with a conditional UPDATE (never below zero) and writes an append-only
WalletEntry with a unique idempotency key, all in one transaction. Principal and bonus
are kept apart; only principal is ever paid back out (rules in mall.wallet.service)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from mall.errors import ErrorCode
from mall.i18n import _
from mall.kit import clock
from mall.kit.money import fmt_yuan
from mall.kit.pagination import cursor_page
from mall.members import service as members_service
from mall.members.models import Member
from mall.wallet.models import (
    Wallet,
    WalletEntry,
)

WALLET_INSUFFICIENT = ErrorCode(
    "WALLET_INSUFFICIENT", 409, _("Your stored value ({balance}) is not enough to pay {amount}")
)
WALLET_AMOUNT_INVALID = ErrorCode(
    "WALLET_AMOUNT_INVALID", 422, _("The amount must be a positive whole number of fen")
)
WALLET_PAYMENT_NOT_FOUND = ErrorCode(
    "WALLET_PAYMENT_NOT_FOUND", 404, _("Stored-value payment not found")
)
WALLET_REFUND_TOO_LARGE = ErrorCode(
    "WALLET_REFUND_TOO_LARGE", 409, _("At most {left} of this payment can still be refunded")
)
WALLET_PLAN_NOT_FOUND = ErrorCode("WALLET_PLAN_NOT_FOUND", 404, _("Top-up plan not found"))
WALLET_PLAN_OFF = ErrorCode("WALLET_PLAN_OFF", 409, _("This top-up plan is no longer offered"))
WALLET_PLAN_LIMIT = ErrorCode(
    "WALLET_PLAN_LIMIT", 409, _("This top-up plan can be bought {limit} times per member")
)
WALLET_PLAN_IN_USE = ErrorCode(
    "WALLET_PLAN_IN_USE", 409, _("This plan already has top-ups; switch it off instead")
)
WALLET_TOPUP_NOT_FOUND = ErrorCode("WALLET_TOPUP_NOT_FOUND", 404, _("Top-up not found"))
WALLET_TOPUP_NOT_REFUNDABLE = ErrorCode(
    "WALLET_TOPUP_NOT_REFUNDABLE", 409, _("Only a paid top-up can be refunded")
)
WALLET_TOPUP_REFUND_TOO_LARGE = ErrorCode(
    "WALLET_TOPUP_REFUND_TOO_LARGE",
    409,
    _("At most {left} of this top-up's principal can be refunded now"),
)
WALLET_TOPUP_NOTHING_TO_REFUND = ErrorCode(
    "WALLET_TOPUP_NOTHING_TO_REFUND",
    409,
    _("Nothing would be paid back: the bonus already spent is worth as much as this refund"),
)
WALLET_ADJUST_INVALID = ErrorCode(
    "WALLET_ADJUST_INVALID", 422, _("Give a non-zero change of principal or bonus")
)
WALLET_ADJUST_BELOW_ZERO = ErrorCode(
    "WALLET_ADJUST_BELOW_ZERO", 409, _("This adjustment would take the balance below zero")
)
WALLET_REFUND_NOT_FOUND = ErrorCode("WALLET_REFUND_NOT_FOUND", 404, _("Top-up refund not found"))
WALLET_REFUND_NOT_ABNORMAL = ErrorCode(
    "WALLET_REFUND_NOT_ABNORMAL",
    409,
    _("Only a refund WeChat Pay could not pay out (abnormal) can be resolved this way"),
)
WALLET_REFUND_RETRY_REFUSED = ErrorCode(
    "WALLET_REFUND_RETRY_REFUSED",
    409,
    _(
        "WeChat Pay would not pay this refund to the original account again "
        "({wechat_code}); pay it out another way and mark it paid offline"
    ),
)
_KEY_MAX = 191


class PaymentMismatch(Exception):
    """A verified payment that does not match our record; answered 5xx and logged."""


@dataclass(frozen=True)
class WalletBalance:
    principal_fen: int
    bonus_fen: int

    @property
    def total_fen(self) -> int:
        return self.principal_fen + self.bonus_fen


@dataclass(frozen=True)
class WalletPayment:
    """Money taken from (pay) or returned to (refund) a wallet, by part; all positive."""

    entry_id: int
    idempotency_key: str
    principal_fen: int
    bonus_fen: int

    @property
    def amount_fen(self) -> int:
        return self.principal_fen + self.bonus_fen


# --- the ledger core -------------------------------------------------------------------


def _key(kind: str, key: str) -> str:
    if not key:
        raise ValueError("an idempotency key is required")
    full = f"{kind}:{key}"
    if len(full) <= _KEY_MAX:
        return full
    return full[:150] + ":" + hashlib.sha256(full.encode()).hexdigest()[:32]


def _positive(amount_fen: int) -> None:
    if not isinstance(amount_fen, int) or isinstance(amount_fen, bool) or amount_fen <= 0:
        raise WALLET_AMOUNT_INVALID()


async def _ensure_wallet(member_id: int) -> None:
    if await Wallet.filter(member_id=member_id).exists():
        return
    if not await Member.filter(id=member_id).exists():
        raise members_service.MEMBER_NOT_FOUND()
    try:
        async with in_transaction():
            await Wallet.create(member_id=member_id)
    except IntegrityError:  # created by a concurrent call
        pass


async def _lock(member_id: int) -> Wallet:
    """The member's wallet row, locked until the transaction ends. Call in a transaction."""
    wallet = await Wallet.filter(member_id=member_id).select_for_update().first()
    if wallet is None:
        raise RuntimeError(f"member {member_id} has no wallet; call _ensure_wallet first")
    return wallet


async def _append(
    wallet: Wallet,
    principal_delta: int,
    bonus_delta: int,
    kind: str,
    key: str,
    *,
    reference: str = "",
    reason: str = "",
    original_id: int | None = None,
    staff_id: int | None = None,
) -> WalletEntry:
    """Move the balances (never below zero) and write the entry. Wallet locked."""
    query = Wallet.filter(id=wallet.id)
    if principal_delta < 0:
        query = query.filter(principal_fen__gte=-principal_delta)
    if bonus_delta < 0:
        query = query.filter(bonus_fen__gte=-bonus_delta)
    moved = await query.update(
        principal_fen=F("principal_fen") + principal_delta,
        bonus_fen=F("bonus_fen") + bonus_delta,
    )
    if not moved:
        raise WALLET_INSUFFICIENT(
            balance=fmt_yuan(wallet.principal_fen + wallet.bonus_fen),
            amount=fmt_yuan(-min(principal_delta, 0) - min(bonus_delta, 0)),
        )
    wallet.principal_fen += principal_delta
    wallet.bonus_fen += bonus_delta
    return await WalletEntry.create(
        member_id=wallet.member_id,
        kind=kind,
        principal_delta=principal_delta,
        bonus_delta=bonus_delta,
        principal_after=wallet.principal_fen,
        bonus_after=wallet.bonus_fen,
        reference=reference[:128],
        reason=reason[:255],
        idempotency_key=key,
        original_id=original_id,
        staff_id=staff_id,
        created_at=clock.now(),
    )


async def get_balance(member_id: int) -> WalletBalance:
    row = await Wallet.filter(member_id=member_id).values("principal_fen", "bonus_fen")
    if not row:
        return WalletBalance(0, 0)
    return WalletBalance(int(row[0]["principal_fen"]), int(row[0]["bonus_fen"]))


async def entries_page(
    member_id: int, cursor: str | None, size: int
) -> tuple[list[WalletEntry], str | None]:
    return await cursor_page(WalletEntry.filter(member_id=member_id), cursor, size)
