from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest

from mall.blindbox import service
from mall.blindbox.models import BlindBoxSeries
from mall.blindbox.schemas import PrizeIn, SeriesIn
from mall.members.models import Member
from mall.points import service as points_service


@dataclass
class Ops:
    id: int = 0
    username: str = "ops-test"


OPS = Ops()

MakeSeries = Callable[..., Awaitable[BlindBoxSeries]]
MakeMember = Callable[..., Awaitable[Member]]


def prize(name: str, weight: int, tier: str = "common", stock: int | None = None) -> PrizeIn:
    return PrizeIn(name=name, tier=tier, weight=weight, stock=stock, value_fen=990)


@pytest.fixture(autouse=True)
def _fresh_local_state() -> None:
    """Each test's members reuse ids: forget the birthdays and prizes read before."""
    service.forget_local_state()


@pytest.fixture
def make_series() -> MakeSeries:
    """`await make_series([prize(...), ...], daily_draw_cap=3, ...)`: on sale, warmed."""

    async def make(prizes: list[PrizeIn], **fields: Any) -> BlindBoxSeries:
        fields.setdefault("name", "Spring box")
        fields.setdefault("points_cost", 100)
        fields.setdefault("status", "on_sale")
        return await service.create_series(OPS, SeriesIn(prizes=prizes, **fields))

    return make


@pytest.fixture
def make_member() -> MakeMember:
    """`await make_member(points=1000, birthday=date(1990, 1, 1))`."""

    async def make(points: int = 1000, birthday: date | None = date(1990, 1, 1)) -> Member:
        member = await Member.create(openid=f"dev_bb_{secrets.token_hex(6)}", birthday=birthday)
        if points:
            await points_service.earn(
                member.id, points, idempotency_key=f"test-grant:{member.id}", reason="test"
            )
        return member

    return make
