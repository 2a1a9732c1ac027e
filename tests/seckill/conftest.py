from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from mall.kit import clock
from mall.seckill import service
from mall.seckill.models import SeckillItem
from mall.seckill.schemas import ItemIn, SessionIn
from tests.wallet.fake_pay import fake_pay, fake_pay_server
from tests.wechat.fake import fake_wechat, fake_wechat_server

__all__ = ["fake_pay", "fake_pay_server", "fake_wechat", "fake_wechat_server"]

MakeItem = Callable[..., Awaitable[SeckillItem]]


@pytest.fixture(autouse=True)
def _fresh_local_state() -> None:
    service.forget_local_state()


@pytest.fixture
def make_item() -> MakeItem:
    """`await make_item(stock=10, points_price=0, cash_price_fen=0, limit=1, starts_in=-60)`:
    a session (live by default) with one warm item."""

    async def make(
        *,
        stock: int = 10,
        points_price: int = 0,
        cash_price_fen: int = 0,
        limit: int = 1,
        starts_in: int = -60,
        lasts: int = 3600,
        warm: bool = True,
    ) -> SeckillItem:
        start = clock.now() + timedelta(seconds=starts_in)
        session = await service.create_session(
            SessionIn(
                name="weekly",
                starts_at=start,
                ends_at=start + timedelta(seconds=lasts),
                items=[
                    ItemIn(
                        title="gift box",
                        stock=stock,
                        points_price=points_price,
                        cash_price_fen=cash_price_fen,
                        per_member_limit=limit,
                    )
                ],
            ),
            None,
        )
        if warm:
            await service.warm_session(session.id)
        return await SeckillItem.get(session_id=session.id)

    return make
