"""Known data for the dashboard, made through the domains' services (the clock is moved
to put entries in past months). Returns the members and the figures to expect."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from mall.coupons import service as coupons_service
from mall.kit import clock
from mall.members import service as members_service
from mall.members.models import Member
from mall.points import service as points_service
from mall.seckill import service as seckill_service
from mall.seckill.models import SeckillItem
from mall.seckill.schemas import ItemIn, SessionIn
from mall.wallet import service as wallet_service


@dataclass
class Seeded:
    members: list[int]
    # (issued, spent) per month, oldest first, for the months that have points
    points: dict[str, tuple[int, int]] = field(default_factory=dict)
    item_id: int = 0


def month_start(offset: int) -> date:
    """The first day of the month `offset` months from this one (Shanghai)."""
    day = clock.today().replace(day=1)
    for _ in range(-offset):
        day = (day - timedelta(days=1)).replace(day=1)
    return day


def label(day: date) -> str:
    return f"{day.year}-{day.month:02d}"


def in_month(offset: int) -> datetime:
    """Noon on the 10th of a past month; now for this month."""
    if offset == 0:
        return clock.now()
    d = month_start(offset) + timedelta(days=9)
    return clock.start_of_local_day(d) + timedelta(hours=12)


async def _member(name: str, joined_months_ago: int) -> int:
    member, _new = await members_service.login_with_wechat(f"dev:{name}")
    if joined_months_ago:
        # created_at is set by the database on insert; move it back for the sign-up figures
        await Member.filter(id=member.id).update(created_at=in_month(-joined_months_ago))
    return int(member.id)


async def _points(member_id: int, offset: int, issued: int, spent: int) -> None:
    key = secrets.token_hex(6)
    with clock.frozen_at(in_month(offset)):
        if issued:
            await points_service.earn(member_id, issued, idempotency_key=f"e{key}", reason="seed")
        if spent:
            await points_service.spend(member_id, spent, idempotency_key=f"s{key}", reason="seed")


async def seed(*, rich: bool = False) -> Seeded:
    m1 = await _member("dash_m1", 2)
    m2 = await _member("dash_m2", 2)
    m3 = await _member("dash_m3", 0)
    out = Seeded(members=[m1, m2, m3])

    # points: 2 months ago 40% (in the band), last month 10% (idle), this month 60% (cheap)
    plan = [(m1, -2, 1000, 400), (m2, -1, 1000, 100), (m3, 0, 500, 300)]
    if rich:
        extra = [(-11, 800, 150), (-10, 900, 250), (-9, 1200, 420), (-8, 1500, 600)]
        extra += [(-7, 1100, 500), (-6, 1300, 480), (-5, 1600, 560), (-4, 1400, 700)]
        extra += [(-3, 1700, 680)]
        for i, (offset, issued, spent) in enumerate(extra):
            member = await _member(f"dash_old_{i}", -offset)
            for j in range(i % 3):
                await _member(f"dash_old_{i}_{j}", -offset)
            plan.append((member, offset, issued, spent))
    for member, offset, issued, spent in plan:
        await _points(member, offset, issued, spent)
        out.points[label(month_start(offset))] = (issued, spent)

    # marketplace orders: 4 imported this month, 3 bound (m1 twice, m2 once); 900 fen
    # earns no points, so the points figures above stay exact
    paid_at = (clock.now() - timedelta(seconds=5)).isoformat()
    rows = [
        {"platform": "tmall", "order_no": f"TM{i}", "phone": f"1380000000{i}", "paid_fen": 900,
         "paid_at": paid_at, "status": "completed"}
        for i in range(4)
    ]  # fmt: skip
    parsed = points_service.parse_import(json.dumps(rows).encode(), "application/json")
    await points_service.import_external_orders(parsed)
    for member, i in ((m1, 0), (m1, 1), (m2, 2)):
        await points_service.bind_order(member, "tmall", f"TM{i}", f"1380000000{i}")

    # coupons: a pack of one cash coupon to all three; m1 uses it
    template = await coupons_service.create_template(
        {"name": "无门槛5元", "kind": "cash", "face_value_fen": 500}
    )
    pack = await coupons_service.create_pack(
        {"name": "回馈礼包", "items": [{"template_id": template.id, "quantity": 1}]}
    )
    _pack, results = await coupons_service.issue_pack_to_members(
        pack.id, member_ids=[m1, m2, m3], tag=None, min_level=None, request_key="seed",
        staff_id=None,
    )  # fmt: skip
    coupon_id = next(r["coupon_ids"][0] for r in results if r["member_id"] == m1)
    await coupons_service.lock(coupon_id, m1, "order-seed")
    await coupons_service.use(coupon_id, "order-seed")

    # a live flash sale of 10 units: two members win one each
    start = clock.now() - timedelta(minutes=5)
    session = await seckill_service.create_session(
        SessionIn(
            name="本周秒杀",
            starts_at=start,
            ends_at=start + timedelta(hours=1),
            items=[ItemIn(title="礼盒", stock=10, points_price=0)],
        ),
        None,
    )
    await seckill_service.warm_session(session.id)
    item = await SeckillItem.get(session_id=session.id)
    out.item_id = int(item.id)
    for member in (m1, m2):
        assert (await seckill_service.attempt(item.id, member)).result == "won"
    await seckill_service.drain()
    if rich:
        for n, (stock, sold) in enumerate(((200, 200), (300, 240), (150, 90))):
            begin = clock.now() - timedelta(days=7 * (3 - n))
            past = await seckill_service.create_session(
                SessionIn(
                    name=f"第{n + 1}期积分秒杀",
                    starts_at=begin,
                    ends_at=begin + timedelta(hours=1),
                    items=[ItemIn(title="限量礼盒", stock=stock)],
                ),
                None,
            )
            # history for the chart only: what the winners' orders would have counted
            await SeckillItem.filter(session_id=past.id).update(sold=sold)

    # stored value: m2 was given 50 yuan last month, m1 100 + 10 bonus this month
    staff = await members_service.create_staff(f"seed_{secrets.token_hex(3)}", "x" * 12, "admin")
    with clock.frozen_at(in_month(-1)):
        await wallet_service.adjust(
            m2, principal_fen=5000, bonus_fen=0, reason="seed", staff=staff, idempotency_key="w2"
        )
    await wallet_service.adjust(
        m1, principal_fen=10000, bonus_fen=1000, reason="seed", staff=staff, idempotency_key="w1"
    )
    return out
