"""Demo blind box: a tea-party series on sale with a guarantee and a coupon prize
(idempotent by name)."""

from __future__ import annotations

from mall.blindbox import service
from mall.blindbox.models import BlindBoxSeries
from mall.blindbox.schemas import PrizeIn, SeriesIn
from mall.coupons import service as coupons_service
from mall.members.models import Staff

DEMO_NAME = "茶话会盲盒"

DEMO_COUPON_NAME = "茶话会满 99 减 10"


def demo_series(coupon_template_id: int) -> SeriesIn:
    return SeriesIn(
        name=DEMO_NAME,
        points_cost=200,
        status="on_sale",
        description="六款茶话会公仔，另有隐藏款。",
        rules=(
            "每次抽取消耗 200 积分，随机获得下列奖品之一；每人每天最多抽 5 次。"
            "自上次抽中隐藏款起，最迟第 30 次必得隐藏款。仅限 18 周岁及以上会员。"
        ),
        daily_draw_cap=5,
        guarantee_tier="secret",
        guarantee_every=30,
        prizes=[
            PrizeIn(name="茶杯公仔", tier="common", weight=300, value_fen=3900),
            PrizeIn(name="茶壶公仔", tier="common", weight=300, value_fen=3900),
            PrizeIn(name="点心公仔", tier="common", weight=250, value_fen=3900),
            PrizeIn(name="主人公仔", tier="rare", weight=100, stock=200, value_fen=5900),
            PrizeIn(name="金色茶壶（隐藏款）", tier="secret", weight=10, stock=20, value_fen=19900),
            PrizeIn(
                name="满 99 减 10 优惠券",
                kind="coupon",
                coupon_template_id=coupon_template_id,
                tier="common",
                weight=40,
                value_fen=1000,
            ),
        ],
    )


async def seed() -> None:
    staff = await Staff.filter(role="admin").order_by("id").first()
    if staff is None:
        return
    found = await BlindBoxSeries.get_or_none(name=DEMO_NAME)
    if found is None:
        await service.create_series(staff, demo_series(await _demo_coupon_template()))
    else:
        await service.warm(found.id)


async def _demo_coupon_template() -> int:
    """The coupon prize's template (prize-only: shoppers cannot claim it themselves)."""
    for template in await coupons_service.list_templates():
        if template.name == DEMO_COUPON_NAME:
            return template.id
    template = await coupons_service.create_template(
        {
            "name": DEMO_COUPON_NAME,
            "kind": "threshold",
            "face_value_fen": 1000,
            "threshold_fen": 9900,
            "total_quantity": 1000,
            "claimable": False,
        }
    )
    return template.id
