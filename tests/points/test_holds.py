"""Points holds time out on their own: the release job voids a hold still open past its
deadline, once; captured holds are left alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mall.config import get_settings
from mall.kit import clock
from mall.points import service
from mall.points.models import VOID, PointsEntry, PointsHold
from mall.points.tasks import JOBS
from tests.points.helpers import assert_ledger_ok, new_member

NOON = datetime(2025, 2, 28, 4, tzinfo=UTC)  # 12:00 in Shanghai, the last day of February


async def test_an_open_hold_is_released_at_its_deadline_once() -> None:
    clock.set_now(NOON)
    member = await new_member()
    await service.earn(member.id, 1000, idempotency_key="e", reason="t")
    timeout = timedelta(seconds=get_settings().points_hold_timeout_seconds)
    default = await service.hold(member.id, 300, idempotency_key="h1", reason="order")
    assert default.expires_at == NOON + timeout
    soon = await service.hold(
        member.id, 200, idempotency_key="h2", reason="t", expires_at=NOON + timedelta(minutes=5)
    )
    kept = await service.hold(member.id, 100, idempotency_key="h3", reason="t")
    await service.capture(kept.id, idempotency_key="c3")
    assert await service.get_balance(member.id) == 400

    clock.set_now(NOON + timedelta(minutes=5) - timedelta(seconds=1))
    assert await service.release_expired_holds() == 0
    clock.set_now(NOON + timedelta(minutes=5))
    assert await service.release_expired_holds() == 1
    assert (await PointsHold.get(id=soon.id)).status == "voided"
    assert await service.get_balance(member.id) == 600

    clock.set_now(NOON + timeout)
    assert await service.release_expired_holds() == 1
    assert await service.release_expired_holds() == 0
    assert (await PointsHold.get(id=default.id)).status == "voided"
    assert (await PointsHold.get(id=kept.id)).status == "captured"
    assert await service.get_balance(member.id) == 900
    voids = await PointsEntry.filter(member_id=member.id, kind=VOID).order_by("id")
    assert [v.delta for v in voids] == [200, 300]
    assert voids[0].idempotency_key == f"hold:{soon.id}:timeout"
    await assert_ledger_ok()


async def test_holds_from_before_deadlines_existed_time_out_from_creation() -> None:
    clock.set_now(NOON)
    member = await new_member()
    await service.earn(member.id, 100, idempotency_key="e", reason="t")
    old = await service.hold(member.id, 100, idempotency_key="old", reason="t")
    await PointsHold.filter(id=old.id).update(expires_at=None)
    timeout = timedelta(seconds=get_settings().points_hold_timeout_seconds)
    clock.set_now(NOON + timeout - timedelta(seconds=1))
    assert await service.release_expired_holds() == 0
    clock.set_now(NOON + timeout)
    assert await service.release_expired_holds() == 1
    assert await service.get_balance(member.id) == 100
    await assert_ledger_ok()


async def test_the_release_job_is_registered() -> None:
    job = next(j for j in JOBS if j.name == "points.release_holds")
    clock.set_now(NOON)
    member = await new_member()
    await service.earn(member.id, 10, idempotency_key="e", reason="t")
    await service.hold(
        member.id, 10, idempotency_key="h", reason="t", expires_at=NOON - timedelta(seconds=1)
    )
    assert await job.run() == 1
    assert await service.get_balance(member.id) == 10
