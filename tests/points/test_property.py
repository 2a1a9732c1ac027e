"""Any interleaving of earn, spend, hold, capture, void, expire and reverse keeps
entries == balance == lots, and the balance never negative."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tortoise.functions import Sum

from mall.errors import MallError
from mall.kit import clock
from mall.members.models import Member
from mall.points import service
from mall.points.models import PointsEntry, PointsHold, PointsLot
from tests.points.helpers import new_member

# codes a legal call may answer with; anything else (or any other exception) fails
EXPECTED = {
    "NOT_ENOUGH_POINTS",
    "POINTS_HOLD_CLOSED",
    "POINTS_NOT_REVERSIBLE",
    "POINTS_REVERSE_TOO_LARGE",
}

op = st.one_of(
    st.tuples(st.just("earn"), st.integers(1, 80), st.sampled_from([None, 1, 5, 40])),
    st.tuples(st.just("spend"), st.integers(1, 80), st.none()),
    st.tuples(st.just("hold"), st.integers(1, 80), st.none()),
    st.tuples(st.just("capture"), st.integers(0, 7), st.none()),
    st.tuples(st.just("void"), st.integers(0, 7), st.none()),
    st.tuples(st.just("expire"), st.integers(0, 20), st.none()),
    st.tuples(st.just("reverse"), st.integers(0, 11), st.sampled_from([None, 1, 7, 30])),
)
# ops in one batch run concurrently; batches run one after another
batches = st.lists(st.lists(op, min_size=1, max_size=4), min_size=1, max_size=10)


async def _invariant(member_id: int) -> None:
    member = await Member.get(id=member_id)
    entries = await PointsEntry.filter(member_id=member_id).annotate(t=Sum("delta")).values("t")
    lots = await PointsLot.filter(member_id=member_id).annotate(t=Sum("remaining")).values("t")
    entry_sum = int(entries[0]["t"] or 0)
    lot_sum = int(lots[0]["t"] or 0)
    assert member.points_balance >= 0
    assert entry_sum == member.points_balance == lot_sum, (
        entry_sum,
        member.points_balance,
        lot_sum,
    )
    assert not await PointsLot.filter(member_id=member_id, remaining__lt=0).exists()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=batches)
async def test_any_interleaving_keeps_the_ledger_exact(plan: list[list[Any]]) -> None:
    clock.set_now(datetime(2025, 1, 1, 4, 0, tzinfo=UTC))
    member = await new_member()
    keys: list[str] = []  # entries that might be reversed
    holds: list[int] = []
    counter = 0

    async def run(step: tuple[str, int, Any]) -> None:
        nonlocal counter
        counter += 1
        key = f"{member.id}:{counter}"
        name, n, extra = step
        try:
            if name == "earn":
                expires = None if extra is None else clock.now() + timedelta(days=extra)
                await service.earn(
                    member.id, n, idempotency_key=key, reason="p", expires_at=expires
                )
                keys.append(key)
            elif name == "spend":
                await service.spend(member.id, n, idempotency_key=key, reason="p")
                keys.append(key)
            elif name == "hold":
                held = await service.hold(member.id, n, idempotency_key=key, reason="p")
                holds.append(held.id)
                keys.append(key)
            elif name == "capture" and holds:
                await service.capture(holds[n % len(holds)], idempotency_key=key)
            elif name == "void" and holds:
                await service.void(holds[n % len(holds)], idempotency_key=key)
            elif name == "expire":
                clock.advance(timedelta(days=n))
                await service.expire_member_lots(member.id)
            elif name == "reverse" and keys:
                await service.reverse(
                    keys[n % len(keys)], idempotency_key=key, reason="p", points=extra
                )
        except MallError as exc:
            assert exc.code in EXPECTED, exc.code

    for batch in plan:
        await asyncio.gather(*(run(step) for step in batch))
        await _invariant(member.id)
        if keys:  # replaying a used key returns the first entry and changes nothing
            first = await PointsEntry.get(idempotency_key=keys[-1])
            before = await service.get_balance(member.id)
            if first.kind == "earn":
                again = await service.earn(member.id, 99, idempotency_key=keys[-1], reason="r")
            else:
                again = await service.spend(member.id, 1, idempotency_key=keys[-1], reason="r")
            assert again.id == first.id
            assert await service.get_balance(member.id) == before
    # every hold is in a final or open state that matches its entries
    for held in await PointsHold.filter(member_id=member.id):
        voids = await PointsEntry.filter(kind="void", reverses_id=held.entry_id).count()
        assert voids == (1 if held.status == "voided" else 0)
