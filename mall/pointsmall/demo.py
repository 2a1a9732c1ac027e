"""Demo shelf: a gift, a voucher and a gated activity (idempotent by name)."""

from __future__ import annotations

from mall.members.models import Staff
from mall.pointsmall import service
from mall.pointsmall.models import PointsMallItem
from mall.pointsmall.schemas import ItemCreate

DEMO_ITEMS = [
    ItemCreate(
        name="保温杯 500ml",
        kind="gift",
        description="不锈钢真空保温杯，包邮到家。",
        points_price=1200,
        marked_value_fen=6900,
        total_stock=200,
        limit_per_member=2,
        on_shelf=True,
        sort_order=10,
    ),
    ItemCreate(
        name="洗衣液兑换券",
        kind="voucher",
        description="凭券到店兑换 2kg 洗衣液一瓶，只付运费。",
        points_price=300,
        marked_value_fen=6000,
        total_stock=1000,
        limit_per_member=1,
        on_shelf=True,
        sort_order=20,
    ),
    ItemCreate(
        name="会员训练营",
        kind="activity",
        description="持有 1000 积分以上的会员可报名，报名消耗 500 积分，限 30 人。",
        points_price=500,
        min_points_balance=1000,
        total_stock=30,
        limit_per_member=1,
        level_required=1,
        on_shelf=True,
    ),
]


async def seed() -> None:
    staff = await Staff.filter(role="admin").order_by("id").first()
    if staff is None:
        return
    for data in DEMO_ITEMS:
        if not await PointsMallItem.filter(name=data.name).exists():
            await service.create_item(data, staff)
