"""Segment rules about days and months use the Asia/Shanghai calendar at any hour: a
purchase at 00:30 on the 1st is on the 1st; "this month" at 00:30 on 1 January is January."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pytest

from mall.kit import clock
from mall.segments import service
from mall.segments.schemas import Rules
from tests.segments.helpers import member

pytestmark = pytest.mark.clock


async def _names(rule: dict[str, Any], name_of: dict[int, str]) -> set[str]:
    return {name_of[i] for i in await service.evaluate(Rules.model_validate({"all": [rule]}))}


async def test_last_purchase_and_birthday_month_at_shanghai_midnight() -> None:
    from mall.orders.models import Order
    from mall.points.models import ExternalOrder

    clock.set_now(datetime(2027, 1, 1, 0, 30, tzinfo=clock.SHANGHAI))
    early = await member("early", birthday=date(1990, 1, 1))
    late = await member("late", birthday=date(1990, 12, 31))
    shop = await member("shop")
    await Order.create(
        number="N-early",
        member_id=early.id,
        delivery="express",
        status="completed",
        paid_at=datetime(2026, 12, 1, 0, 30, tzinfo=clock.SHANGHAI),
    )
    await Order.create(
        number="N-late",
        member_id=late.id,
        delivery="express",
        status="completed",
        paid_at=datetime(2026, 11, 30, 23, 59, tzinfo=clock.SHANGHAI),
    )
    moment = datetime(2026, 12, 1, 0, 0, tzinfo=clock.SHANGHAI)  # exactly the bound
    await ExternalOrder.create(
        platform="tmall",
        order_no="X-shop",
        phone="13800000000",
        paid_fen=9900,
        paid_at=moment,
        status="completed",
        member_id=shop.id,
        bound_at=moment,
        imported_at=moment,
        updated_at=moment,
    )
    name_of = {early.id: "early", late.id: "late", shop.id: "shop"}
    assert await _names({"field": "last_purchase", "after": "2026-12-01"}, name_of) == {
        "early",
        "shop",
    }
    assert await _names({"field": "last_purchase", "before": "2026-12-01"}, name_of) == {"late"}
    assert await _names({"field": "birthday_month", "this_month": True}, name_of) == {"early"}
