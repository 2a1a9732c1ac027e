"""Daily sign-in with streaks; one sign-in per member per Shanghai day (unique key)."""

from __future__ import annotations

from datetime import timedelta

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from mall.kit import clock
from mall.points.errors import ALREADY_SIGNED_IN
from mall.points.ledger import _earn, get_balance
from mall.points.models import (
    EARN,
    SignIn,
)
from mall.points.rules import get_rules
from mall.points.schemas import (
    SignInOut,
    SignInStatusOut,
)

# --- sign-in -----------------------------------------------------------------


async def sign_in(member_id: int) -> SignInOut:
    """Today's (Asia/Shanghai) sign-in. The unique (member, day) row decides races."""
    day = clock.today()
    rules = await get_rules()
    try:
        async with in_transaction():
            yesterday = await SignIn.get_or_none(member_id=member_id, day=day - timedelta(days=1))
            streak = yesterday.streak + 1 if yesterday else 1
            points = rules.sign_in.reward_for(streak)
            await SignIn.create(
                member_id=member_id, day=day, streak=streak, points=points, created_at=clock.now()
            )
            if points > 0:
                await _earn(
                    member_id,
                    points,
                    f"signin:{member_id}:{day.isoformat()}",
                    kind=EARN,
                    reason="sign_in",
                    reference=f"sign_in:{day.isoformat()}",
                    expires_at=None,
                    growth=points,
                )
    except IntegrityError:
        today = await SignIn.get_or_none(member_id=member_id, day=day)
        if today is None:
            raise
        raise ALREADY_SIGNED_IN(streak=today.streak) from None
    return SignInOut(
        points_awarded=points, streak=streak, day=day, balance=await get_balance(member_id)
    )


async def sign_in_status(member_id: int) -> SignInStatusOut:
    day = clock.today()
    rules = await get_rules()
    rows = {
        s.day: s
        for s in await SignIn.filter(
            member_id=member_id, day__gte=day - timedelta(days=1), day__lte=day
        )
    }
    today = rows.get(day)
    yesterday = rows.get(day - timedelta(days=1))
    if today is not None:
        streak = today.streak
        return SignInStatusOut(
            signed_in_today=True,
            streak=streak,
            today_reward=today.points,
            tomorrow_reward=rules.sign_in.reward_for(streak + 1),
        )
    streak = yesterday.streak if yesterday else 0
    return SignInStatusOut(
        signed_in_today=False,
        streak=streak,
        today_reward=rules.sign_in.reward_for(streak + 1),
        tomorrow_reward=rules.sign_in.reward_for(streak + 2),
    )
