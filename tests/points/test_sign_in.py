from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from mall.kit import clock
from mall.points import service
from mall.points.models import PointsEntry, SignIn
from tests.conftest import MemberLogin
from tests.points.helpers import assert_ledger_ok, new_member

pytestmark = pytest.mark.clock


async def _sign(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/api/v1/points/sign-in", headers=headers)


async def test_streak_over_days_month_boundary_and_missed_day(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    headers = await member_headers("signer")
    # 2025-01-26 23:30 Shanghai (15:30 UTC)
    clock.set_now(datetime(2025, 1, 26, 15, 30, tzinfo=UTC))
    got = []
    for _ in range(8):  # Jan 26 .. Feb 2: across the month boundary
        r = await _sign(client, headers)
        assert r.status_code == 200, r.text
        got.append((r.json()["day"], r.json()["streak"], r.json()["points_awarded"]))
        clock.advance(timedelta(days=1))
    assert got == [
        ("2025-01-26", 1, 5), ("2025-01-27", 2, 5), ("2025-01-28", 3, 5), ("2025-01-29", 4, 5),
        ("2025-01-30", 5, 5), ("2025-01-31", 6, 5), ("2025-02-01", 7, 25), ("2025-02-02", 8, 5),
    ]  # fmt: skip
    # Feb 3 missed; Feb 4 starts over
    clock.advance(timedelta(days=1))
    r = await _sign(client, headers)
    assert (r.json()["day"], r.json()["streak"], r.json()["points_awarded"]) == ("2025-02-04", 1, 5)
    assert r.json()["balance"] == 5 * 8 + 25
    status = (await client.get("/api/v1/points/sign-in", headers=headers)).json()
    assert status == {
        "signed_in_today": True, "streak": 1, "today_reward": 5, "tomorrow_reward": 5,
    }  # fmt: skip
    await assert_ledger_ok()


async def test_the_day_is_the_shanghai_day(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    headers = await member_headers("nightowl")
    clock.set_now(datetime(2025, 3, 10, 15, 59, tzinfo=UTC))  # 23:59 Shanghai
    assert (await _sign(client, headers)).json()["day"] == "2025-03-10"
    clock.set_now(datetime(2025, 3, 10, 16, 0, tzinfo=UTC))  # 00:00 next day in Shanghai
    r = await _sign(client, headers)
    assert r.status_code == 200
    assert (r.json()["day"], r.json()["streak"]) == ("2025-03-11", 2)


async def test_second_sign_in_same_day_awards_nothing_and_says_so(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    headers = await member_headers("twice")
    assert (await _sign(client, headers)).status_code == 200
    r = await client.post("/api/v1/points/sign-in", headers={**headers, "Accept-Language": "en"})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "ALREADY_SIGNED_IN"
    assert "already signed in" in r.json()["error"]["message"]
    zh = await _sign(client, headers)
    assert zh.json()["error"]["message"] == "今天已经签到过了，明天再来吧"
    me = (await client.get("/api/v1/points", headers=headers)).json()
    assert me["balance"] == 5


async def test_parallel_sign_ins_award_once(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    headers = await member_headers("burst")
    answers = await asyncio.gather(*(_sign(client, headers) for _ in range(30)))
    codes = sorted(r.status_code for r in answers)
    assert codes.count(200) == 1 and codes.count(409) == 29
    assert {r.json()["error"]["code"] for r in answers if r.status_code == 409} == {
        "ALREADY_SIGNED_IN"
    }
    assert await PointsEntry.filter(reason="sign_in").count() == 1
    assert await SignIn.all().count() == 1
    me = (await client.get("/api/v1/points", headers=headers)).json()
    assert me["balance"] == 5


async def test_parallel_sign_ins_in_the_service() -> None:
    m = await new_member()
    results = await asyncio.gather(
        *(service.sign_in(m.id) for _ in range(20)), return_exceptions=True
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    assert len(wins) == 1
    assert all(getattr(r, "code", None) == "ALREADY_SIGNED_IN" for r in results if r not in wins)
    assert await service.get_balance(m.id) == 5


async def test_sign_in_retry_with_idempotency_key_replays(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    headers = {**(await member_headers("retry")), "Idempotency-Key": "sign-1"}
    first = await _sign(client, headers)
    again = await _sign(client, headers)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert await PointsEntry.all().count() == 1
