from __future__ import annotations

import pytest

from mall import domains
from mall.errors import REGISTRY
from mall.i18n import catalog, translate
from mall.points import service
from mall.points.models import ExternalOrder


@pytest.mark.nodb
def test_check_and_jobs_are_discovered() -> None:
    assert "ledger" in domains.checks()
    names = {job.name for job in domains.jobs()}
    assert {"points.expire_lots", "points.birthday_gifts"} <= names


@pytest.mark.nodb
def test_every_points_error_has_a_chinese_message() -> None:
    ours = [e for e in REGISTRY.values() if getattr(service, e.code, None) is e]
    assert len(ours) >= 15
    zh = catalog("zh_CN")
    assert [e.code for e in ours if e.message not in zh] == []
    assert translate(service.NOT_ENOUGH_POINTS.message, "zh_CN", balance=3, cost=5) == (
        "您当前有 3 积分，需要 5 积分"
    )


@pytest.mark.nodb
def test_phone_matching() -> None:
    assert service.phone_matches("13800138000", "+86 138 0013 8000")
    assert service.phone_matches("138****8000", "13800138000")
    assert not service.phone_matches("138****8000", "13800138001")
    assert not service.phone_matches("138****8000", "138****8000")  # no wildcards from shoppers
    assert not service.phone_matches("13800138000", "3800138000")


async def test_demo_seed_is_idempotent() -> None:
    from mall.points import demo

    await demo.seed()
    await demo.seed()
    assert await ExternalOrder.all().count() == 6
