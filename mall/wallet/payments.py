"""Paying orders from the wallet and refunding them (called by orders).

Idempotent on the order's key; a refund never gives back more than the payment took,
principal and bonus in the payment's own split."""

from __future__ import annotations

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from mall.config import get_settings
from mall.errors import IDEMPOTENCY_KEY_REUSED
from mall.kit.money import fmt_yuan
from mall.wallet.ledger import (
    WALLET_INSUFFICIENT,
    WALLET_PAYMENT_NOT_FOUND,
    WALLET_REFUND_TOO_LARGE,
    WalletPayment,
    _append,
    _ensure_wallet,
    _key,
    _lock,
    _positive,
)
from mall.wallet.models import (
    PAY,
    REFUND,
    Wallet,
    WalletEntry,
)

# --- paying and refunding orders (called by orders) --------------------------------------


def _split(wallet: Wallet, amount_fen: int) -> tuple[int, int]:
    """(principal, bonus) to take for `amount_fen`, in the configured spending order."""
    if get_settings().wallet_spend_order == "bonus_first":
        bonus = min(amount_fen, wallet.bonus_fen)
        return amount_fen - bonus, bonus
    principal = min(amount_fen, wallet.principal_fen)
    return principal, amount_fen - principal


def _as_payment(entry: WalletEntry, sign: int) -> WalletPayment:
    return WalletPayment(
        entry_id=entry.id,
        idempotency_key=entry.idempotency_key,
        principal_fen=sign * entry.principal_delta,
        bonus_fen=sign * entry.bonus_delta,
    )


def _same(entry: WalletEntry, kind: str, member_id: int | None, amount_fen: int) -> None:
    """A repeated key must describe the same change."""
    total = abs(entry.principal_delta + entry.bonus_delta)
    if entry.kind != kind or total != amount_fen or (member_id and entry.member_id != member_id):
        raise IDEMPOTENCY_KEY_REUSED()


async def pay(
    member_id: int, amount_fen: int, *, idempotency_key: str, reference: str
) -> WalletPayment:
    """Take `amount_fen` from the wallet (principal/bonus in the configured order), or
    raise WALLET_INSUFFICIENT and change nothing. Idempotent on `idempotency_key`;
    joins the caller's transaction (as a savepoint) when there is one."""
    _positive(amount_fen)
    key = _key(PAY, idempotency_key)
    found = await WalletEntry.get_or_none(idempotency_key=key)
    if found is not None:
        _same(found, PAY, member_id, amount_fen)
        return _as_payment(found, -1)
    await _ensure_wallet(member_id)
    try:
        async with in_transaction():
            wallet = await _lock(member_id)
            found = await WalletEntry.get_or_none(idempotency_key=key)
            if found is None:
                principal, bonus = _split(wallet, amount_fen)
                if principal > wallet.principal_fen or bonus > wallet.bonus_fen:
                    raise WALLET_INSUFFICIENT(
                        balance=fmt_yuan(wallet.principal_fen + wallet.bonus_fen),
                        amount=fmt_yuan(amount_fen),
                    )
                found = await _append(wallet, -principal, -bonus, PAY, key, reference=reference)
    except IntegrityError:
        found = await WalletEntry.get_or_none(idempotency_key=key)
        if found is None:
            raise
    _same(found, PAY, member_id, amount_fen)
    return _as_payment(found, -1)


async def refund(
    original_idempotency_key: str, amount_fen: int, *, idempotency_key: str, reason: str
) -> WalletPayment:
    """Return `amount_fen` of a wallet payment (partial allowed) in the payment's
    principal/bonus proportion. Idempotent on `idempotency_key`."""
    _positive(amount_fen)
    key = _key(REFUND, idempotency_key)
    found = await WalletEntry.get_or_none(idempotency_key=key)
    if found is not None:
        _same(found, REFUND, None, amount_fen)
        return _as_payment(found, 1)
    original = await WalletEntry.get_or_none(
        idempotency_key=_key(PAY, original_idempotency_key), kind=PAY
    )
    if original is None:
        raise WALLET_PAYMENT_NOT_FOUND()
    try:
        async with in_transaction():
            wallet = await _lock(original.member_id)
            found = await WalletEntry.get_or_none(idempotency_key=key)
            if found is None:
                principal, bonus = await _refund_split(original, amount_fen)
                found = await _append(
                    wallet,
                    principal,
                    bonus,
                    REFUND,
                    key,
                    reference=original.reference,
                    reason=reason,
                    original_id=original.id,
                )
    except IntegrityError:
        found = await WalletEntry.get_or_none(idempotency_key=key)
        if found is None:
            raise
    _same(found, REFUND, original.member_id, amount_fen)
    return _as_payment(found, 1)


async def _refund_split(original: WalletEntry, amount_fen: int) -> tuple[int, int]:
    paid_principal, paid_bonus = -original.principal_delta, -original.bonus_delta
    paid = paid_principal + paid_bonus
    back = await WalletEntry.filter(original_id=original.id, kind=REFUND).values_list(
        "principal_delta", "bonus_delta"
    )
    back_principal = sum(int(p) for p, _b in back)
    back_total = back_principal + sum(int(b) for _p, b in back)
    left = paid - back_total
    if amount_fen > left:
        raise WALLET_REFUND_TOO_LARGE(left=fmt_yuan(left))
    # cumulative, principal rounded up: the refunds of one payment add up exactly
    principal_total = -(-paid_principal * (back_total + amount_fen) // paid)
    principal = principal_total - back_principal
    return principal, amount_fen - principal


async def paid_from_wallet(idempotency_key: str) -> WalletPayment | None:
    """The wallet payment made under `idempotency_key`, if any."""
    entry = await WalletEntry.get_or_none(idempotency_key=_key(PAY, idempotency_key), kind=PAY)
    return _as_payment(entry, -1) if entry else None
