"""Wallet jobs and the `mall check wallet` consistency check."""

from __future__ import annotations

from mall.config import get_settings
from mall.kit.checks import CheckFn, CheckReport
from mall.kit.jobs import Job
from mall.wallet import service


async def settle_payments() -> None:
    """Credit top-ups whose notification never came, close expired ones, and push
    top-up refunds through to WeChat Pay."""
    await service.poll_top_ups()
    await service.poll_refunds()


async def check_wallet() -> CheckReport:
    """Entries == balances, principal and bonus separately; each paid top-up credited once."""
    report = CheckReport("wallet")
    problems = await service.check_ledger()
    for problem in problems:
        report.fail(problem)
    if not problems:
        owed = await service.liability()
        report.lines.append(
            f"balances agree with the ledger; owed principal {owed.principal_fen} fen, "
            f"bonus {owed.bonus_fen} fen in {owed.wallets_with_balance} wallets"
        )
    return report


JOBS: list[Job] = [
    Job("wallet.settle_payments", get_settings().wallet_poll_interval_seconds, settle_payments)
]
CHECKS: dict[str, CheckFn] = {"wallet": check_wallet}
