"""Demo flash sale: this week's points seckill, tomorrow 20:00 Shanghai (idempotent by name)."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from mall.kit import clock
from mall.seckill import service
from mall.seckill.models import SeckillSession
from mall.seckill.schemas import ItemIn, SessionIn

DEMO_NAME = "每周积分秒杀"


async def seed() -> None:
    if await SeckillSession.filter(name=DEMO_NAME).exists():
        return
    day = clock.today() + timedelta(days=1)
    starts = clock.as_utc(datetime.combine(day, time(20, 0)))  # 20:00 Shanghai
    await service.create_session(
        SessionIn(
            name=DEMO_NAME,
            starts_at=starts,
            ends_at=starts + timedelta(hours=1),
            items=[
                ItemIn(title="春茶礼盒", points_price=990, stock=200, per_member_limit=1),
                ItemIn(title="紫砂杯（积分 + 9.9 元）", points_price=300, cash_price_fen=990,
                       stock=100, per_member_limit=1),
            ],
        ),
        None,
    )  # fmt: skip
