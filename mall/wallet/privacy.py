"""What the wallet holds about a member (see `mall.members.privacy`).

Stored value is money the brand owes: an account with principal left, a top-up being
paid or a top-up refund in flight is not deleted (the member asks for the refund
first), because after deletion nobody could claim or be paid that money. The bonus
is a gift that is forfeited, as it is on a top-up refund, by one ledger entry. The
ledger, top-ups and refunds stay for the accounts; the payer openid kept on top-ups
is cleared."""

from __future__ import annotations

from mall.errors import MallError
from mall.kit.money import fmt_yuan
from mall.members.privacy import PAYMENT_IN_PROGRESS, WALLET_BALANCE_NOT_REFUNDED, Section
from mall.wallet import service
from mall.wallet.models import (
    ADJUST,
    PENDING,
    REFUND_ABNORMAL,
    REFUND_PENDING,
    REFUND_PROCESSING,
    TopUp,
    TopUpRefund,
    Wallet,
    WalletEntry,
)

SECTIONS = [
    Section("wallet", Wallet),
    Section("wallet_entries", WalletEntry, exclude=("idempotency_key", "staff_id")),
    Section("top_ups", TopUp, exclude=("prepay_id",)),
    Section("top_up_refunds", TopUpRefund, exclude=("idempotency_key", "staff_id")),
]

# refunds whose money is still on its way (abnormal: WeChat could not pay it; ops settle)
_IN_FLIGHT = (REFUND_PENDING, REFUND_PROCESSING, REFUND_ABNORMAL)
FORFEIT_REASON = "account deleted"


def _principal_error(principal_fen: int) -> MallError:
    yuan = fmt_yuan(principal_fen).lstrip("¥")
    return WALLET_BALANCE_NOT_REFUNDED(yuan=yuan, principal_fen=principal_fen)


async def blockers(member_id: int) -> list[MallError]:
    found: list[MallError] = []
    balance = await service.get_balance(member_id)
    if balance.principal_fen > 0:
        found.append(_principal_error(balance.principal_fen))
    paying = await TopUp.filter(member_id=member_id, status=PENDING).exists()
    refunding = await TopUpRefund.filter(member_id=member_id, status__in=_IN_FLIGHT).exists()
    if paying or refunding:
        found.append(PAYMENT_IN_PROGRESS())
    return found


async def forfeits(member_id: int) -> dict[str, int]:
    return {"wallet_bonus_fen": (await service.get_balance(member_id)).bonus_fen}


async def erase(member_id: int) -> dict[str, int]:
    forfeited = 0
    if await Wallet.filter(member_id=member_id).exists():
        # under the wallet's lock (the deletion's transaction): nothing moves it meanwhile
        wallet = await service._lock(member_id)
        if wallet.principal_fen > 0:  # credited since the blockers were read
            raise _principal_error(wallet.principal_fen)
        if wallet.bonus_fen > 0:
            forfeited = wallet.bonus_fen
            await service._append(
                wallet,
                0,
                -forfeited,
                ADJUST,
                service._key(ADJUST, f"privacy:forfeit:{member_id}"),
                reason=FORFEIT_REASON,
                reference=f"member:{member_id}:deleted",
            )
    cleared = await TopUp.filter(member_id=member_id).exclude(openid="").update(openid="")
    return {"wallet_bonus_forfeited_fen": forfeited, "top_up_openids_cleared": cleared}
