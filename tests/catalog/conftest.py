from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

import pytest

from mall.kit.security import issue_token
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
        return {"Authorization": f"Bearer {issue_token(staff.id, 'staff', 3600, role=role)}"}

    return make
