"""Points jobs (lot expiry, birthday gifts, hold release, re-levelling) and
`mall check ledger`."""

from __future__ import annotations

from mall.cli import CheckFn, CheckReport
from mall.config import get_settings
from mall.kit.jobs import Job
from mall.points import service


async def check_ledger() -> CheckReport:
    """For every member: entries sum to the balance and to the lots' remaining points."""
    report = CheckReport("ledger")
    members, problems = await service.ledger_problems()
    report.lines.append(f"members checked: {members}")
    for problem in problems[:200]:
        report.fail(problem.text)
    if len(problems) > 200:
        report.fail(f"... and {len(problems) - 200} more")
    if not problems:
        report.lines.append("entries == balance == lots for every member")
    return report


async def _expire() -> int:
    return await service.expire_lapsed_lots()


async def _birthdays() -> int:
    return await service.grant_birthday_gifts()


async def _release_holds() -> int:
    return await service.release_expired_holds()


async def _relevel() -> int | None:
    return await service.relevel_if_rules_changed()


JOBS: list[Job] = [
    Job("points.expire_lots", get_settings().points_job_interval_seconds, _expire),
    Job("points.birthday_gifts", get_settings().points_job_interval_seconds, _birthdays),
    Job(
        "points.release_holds",
        get_settings().points_hold_release_interval_seconds,
        _release_holds,
    ),
    Job("points.relevel", get_settings().points_relevel_interval_seconds, _relevel),
]

CHECKS: dict[str, CheckFn] = {"ledger": check_ledger}
