"""The points earning rules: versioned documents ops edit, and lot expiry derived from them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.kit import clock, versioned
from mall.points.errors import RULES_VERSION_CONFLICT
from mall.points.models import (
    PointsRulesVersion,
)
from mall.points.schemas import (
    STORED,
    Rules,
)

# --- rules -------------------------------------------------------------------


async def get_rules() -> Rules:
    """The earning rules in force (defaults until ops save a version)."""
    _version, rules, _at = await get_rules_version()
    return rules


async def get_rules_version() -> tuple[int, Rules, datetime | None]:
    version, document, saved_at = await versioned.latest(PointsRulesVersion)
    if document is None:
        return version, Rules(), saved_at
    return version, Rules.model_validate(document, context=STORED), saved_at


async def save_rules(rules: Rules, *, staff: Any, base_version: int | None) -> int:
    """Store a new version of the rules; audited. Refuses an edit based on a stale version."""
    async with in_transaction():
        current, old, _at = await get_rules_version()
        if base_version is not None and base_version != current:
            raise RULES_VERSION_CONFLICT(current=current)
        document = rules.model_dump(mode="json")
        if not await versioned.append(
            PointsRulesVersion, version=current + 1, document=document, staff=staff
        ):
            raise RULES_VERSION_CONFLICT(current=current + 1)
        await audit_service.record(
            staff,
            "points.rules.update",
            f"points_rules:{current + 1}",
            before=old.model_dump(mode="json"),
            after=document,
        )
    return current + 1


def lot_expiry(rules: Rules, earned_at: datetime) -> datetime | None:
    policy = rules.expiry
    if policy.mode == "never":
        return None
    if policy.mode == "days":
        return earned_at + timedelta(days=policy.days)
    # the end of the following calendar year, Shanghai time
    year = earned_at.astimezone(clock.SHANGHAI).year
    return datetime(year + 2, 1, 1, tzinfo=clock.SHANGHAI).astimezone(UTC)
