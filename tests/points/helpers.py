from __future__ import annotations

import secrets

from mall.members.models import Member
from mall.points import service


async def new_member(**fields: object) -> Member:
    return await Member.create(openid=f"t_{secrets.token_hex(6)}", **fields)


async def assert_ledger_ok() -> None:
    _count, problems = await service.ledger_problems()
    assert not problems, [p.text for p in problems]
