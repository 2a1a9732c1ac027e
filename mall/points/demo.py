"""Demo marketplace orders to try order binding with (phone 13800138000)."""

from __future__ import annotations

from mall.points import service


async def seed() -> None:
    rows = [
        (
            i,
            {
                "platform": platform,
                "order_no": f"DEMO{platform.upper()}{1000 + i}",
                "phone": "13800138000",
                "paid_fen": 12_900 * i,
                "status": "completed",
            },
        )
        for i in range(1, 4)
        for platform in ("tmall", "jd")
    ]
    await service.import_external_orders(rows)  # idempotent on (platform, order_no)
