from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

import pytest

from mall.members import service as members_service
from mall.members.models import Staff

StaffToken = Callable[..., Awaitable[dict[str, str]]]


@pytest.fixture
def ops_headers() -> StaffToken:
    """Headers of a fresh staff account (default role ops), without argon2's cost;
    `staff_headers` from tests/conftest.py exercises the real login."""

    async def make(role: str = "ops") -> dict[str, str]:
        staff = await Staff.create(
            username=f"{role}_{secrets.token_hex(4)}", password_hash="!", role=role
        )
        tokens = await members_service.staff_tokens(staff)
        return {"Authorization": f"Bearer {tokens.token}"}

    return make
