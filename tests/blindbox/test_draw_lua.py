"""The draw script on real Redis, driven directly (no database spend, no HTTP)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlparse

import pytest
from redis.asyncio.cluster import RedisCluster

from mall.blindbox import service
from mall.blindbox.models import BlindBoxDraw
from mall.blindbox.service import Decision
from mall.blindbox.stock import keys as Keys
from mall.config import get_settings
from mall.kit.stock import script
from mall.redis import get_redis
from tests.blindbox.conftest import OPS, MakeSeries, prize
from tests.blindbox.stats import chi2_sf, chi2_statistic

DAY = date(2025, 3, 1)


async def _raw_connection(key: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain socket to the test Redis (on a cluster: the master of `key`'s slot): 100k
    replies parsed by redis-py's pure-Python reader would take most of a minute; these
    are all bulk strings, read in bulk."""
    redis = get_redis()
    if isinstance(redis, RedisCluster):
        node = redis.get_node_from_key(key)
        return await asyncio.open_connection(node.host, node.port)
    url = urlparse(get_settings().redis_url or "")
    if url.scheme == "unix":
        return await asyncio.open_unix_connection(url.path)
    return await asyncio.open_connection(url.hostname, url.port or 6379)


def _bulk(part: object) -> bytes:
    data = str(part).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


async def _batch(series_id: int, draws: list[tuple[int, int]], day: date = DAY) -> list[str]:
    """Run many draws of the real script in one pipeline: (member, r) each. Returns the
    script's raw answers (`service.parse_decision` reads one)."""
    sha = await get_redis().script_load(script("mall.blindbox", "draw").script)
    now_ms = int(datetime.combine(day, datetime.min.time(), UTC).timestamp() * 1000)

    def command(member: int, r: int) -> bytes:
        keys, args = service.draw_args(
            series_id, member, r, f"{series_id}-f{member}", day, now_ms=now_ms, age=30
        )
        parts = ("EVALSHA", sha, len(keys), *keys, *args)
        return b"*%d\r\n" % len(parts) + b"".join(_bulk(p) for p in parts)

    first_key = Keys(series_id).meta
    reader, writer = await _raw_connection(first_key)
    try:
        writer.write(b"".join(command(member, r) for member, r in draws))
        await writer.drain()
        answers: list[str] = []
        while len(answers) < len(draws):
            header = await reader.readline()
            assert header.startswith(b"$"), header  # an error reply fails the test here
            body = await reader.readexactly(int(header[1:]) + 2)
            answers.append(body[:-2].decode())
        return answers
    finally:
        writer.close()
        await writer.wait_closed()


async def _draw_settled(series_id: int, member: int, r: int, day: date = DAY) -> Decision:
    return await service.decide(series_id, member, r, f"{series_id}-{secrets.token_hex(8)}", day)


async def test_100k_draws_match_the_disclosed_weights(make_series: MakeSeries) -> None:
    series = await make_series(
        [prize("a", 500), prize("b", 300), prize("c", 150, "rare"), prize("d", 50, "secret")]
    )
    detail = await service.disclose(series.id)
    disclosed = {p.id: p.probability for p in detail.prizes}
    n, size = 100_000, 10_000
    counts: Counter[int] = Counter()
    started = time.perf_counter()
    for start in range(0, n, size):
        rs = [secrets.randbelow(service.R_LIMIT) for _ in range(size)]
        answers = await _batch(series.id, [(start + i, r) for i, r in enumerate(rs)])
        assert all(a.startswith("ok|") for a in answers)
        counts.update(int(a.split("|", 3)[2]) for a in answers)
        # every 50th draw is re-derived from its random value and table
        for r, answer in list(zip(rs, answers, strict=True))[::50]:
            decision = service.parse_decision(answer)
            # the request's reading leaves out only the table (its answer never shows it)
            assert decision.table
            assert service.parse_decision(answer, table=False) == replace(decision, table=())
            logged = {
                "random_value": r,
                "probability_table": service.table_json(decision.table, forced=False, tier=None),
            }
            assert service.rederive(logged) == decision.prize_id
    elapsed = time.perf_counter() - started
    ids = sorted(disclosed)
    observed = [counts[i] for i in ids]
    assert sum(observed) == n
    statistic = chi2_statistic(observed, [n * disclosed[i] for i in ids])
    p_value = chi2_sf(statistic, len(ids) - 1)
    assert p_value > 0.001, (observed, statistic, p_value)
    # the test has teeth: the same draws are clearly not 45/35/15/5
    wrong = [0.45, 0.35, 0.15, 0.05]
    assert chi2_sf(chi2_statistic(observed, [n * w for w in wrong]), 3) < 1e-6
    print(f"100k draws in {elapsed:.2f}s, chi2={statistic:.2f}, p={p_value:.3f}")


async def test_limited_stock_never_goes_below_zero_under_concurrency(
    make_series: MakeSeries,
) -> None:
    series = await make_series([prize("a", 1, stock=30), prize("b", 5, stock=20)])
    results = await asyncio.gather(
        *(
            service.decide(series.id, member, secrets.randbelow(service.R_LIMIT), f"d{member}", DAY)
            for member in range(200)
        )
    )
    statuses = Counter(d.status for d in results)
    assert statuses == {"ok": 50, "sold_out": 150}
    won = Counter(d.prize_id for d in results if d.status == "ok")
    a, b = sorted(won)
    assert won == {a: 30, b: 20}
    left = await get_redis().hgetall(Keys(series.id).stock)
    assert left == {str(a): "0", str(b): "0"}
    detail = await service.disclose(series.id)
    assert detail.sold_out and all(p.sold_out and p.stock_left == 0 for p in detail.prizes)


async def test_guarantee_fires_exactly_on_the_nth_draw_since_the_last_hit(
    make_series: MakeSeries,
) -> None:
    series = await make_series(
        [prize("common", 1_000_000), prize("rare", 1, "rare")],
        guarantee_tier="rare",
        guarantee_every=10,
    )
    member = 7
    # r = 0 always lands on the first (common) prize unless the guarantee forces rare
    forced_at = []
    for n in range(1, 26):
        decision = await _draw_settled(series.id, member, 0)
        assert decision.pity_before == (n - 1) % 10
        if decision.tier == "rare":
            forced_at.append(n)
            assert decision.forced and decision.pity_after == 0
            assert decision.table and all(row.weight > 0 for row in decision.table)
        else:
            assert not decision.forced and decision.pity_after == decision.pity_before + 1
    assert forced_at == [10, 20]
    # a natural rare hit (x = 1_000_000 is the rare prize's slot) resets the count ...
    natural = await _draw_settled(series.id, member, 1_000_000)
    assert natural.tier == "rare" and not natural.forced
    assert (natural.pity_before, natural.pity_after) == (5, 0)
    # ... so the next guarantee is the 10th draw after it, not before
    tiers = [(await _draw_settled(series.id, member, 0)).tier for _ in range(10)]
    assert tiers == ["common"] * 9 + ["rare"]
    # another member's counter is their own
    assert (await _draw_settled(series.id, member + 1, 0)).pity_before == 0


async def test_guarantee_pauses_while_its_tier_is_sold_out(make_series: MakeSeries) -> None:
    series = await make_series(
        [prize("common", 100), prize("rare", 1, "rare", stock=1)],
        guarantee_tier="rare",
        guarantee_every=3,
    )
    picks = [await _draw_settled(series.id, 1, 0) for _ in range(3)]
    assert [p.tier for p in picks] == ["common", "common", "rare"] and picks[2].forced
    # the rare prize is gone: draws go on normally and the count keeps going
    more = [await _draw_settled(series.id, 1, 0) for _ in range(4)]
    assert [d.tier for d in more] == ["common"] * 4
    assert [d.pity_after for d in more] == [1, 2, 3, 4]
    assert not (await service.disclose(series.id)).guarantee.active  # type: ignore[union-attr]
    # restocked: the overdue guarantee fires on the next draw
    rare_id = max(row.prize_id for row in more[0].table)
    await service.adjust_stock(OPS, series.id, rare_id, 1, "restock")
    again = await _draw_settled(series.id, 1, 0)
    assert again.forced and again.tier == "rare" and again.pity_before == 4


async def test_sold_out_prizes_drop_out_and_the_rest_renormalize(
    make_series: MakeSeries,
) -> None:
    series = await make_series(
        [prize("a", 600, stock=1), prize("b", 300), prize("c", 100, "rare", stock=2)]
    )
    before = {p.name: p.probability for p in (await service.disclose(series.id)).prizes}
    assert before == {"a": 0.6, "b": 0.3, "c": 0.1}
    # x = 0 lands on "a" (first), taking its only unit
    first = await _draw_settled(series.id, 1, 0)
    assert [row.weight for row in first.table] == [600, 300, 100]
    detail = await service.disclose(series.id)
    after = {p.name: p.probability for p in detail.prizes}
    assert after == {"a": 0.0, "b": 0.75, "c": 0.25}
    assert detail.total_weight == 400
    # the script uses exactly the disclosed table: r = 0 now lands on "b"
    second = await _draw_settled(series.id, 2, 0)
    assert [row.weight for row in second.table] == [0, 300, 100]
    assert second.prize_id == next(p.id for p in detail.prizes if p.name == "b")


async def test_all_sold_out_answers_sold_out(make_series: MakeSeries) -> None:
    series = await make_series([prize("a", 1, stock=1), prize("b", 1, stock=0)])
    assert (await _draw_settled(series.id, 1, 0)).status == "ok"
    assert (await _draw_settled(series.id, 2, 0)).status == "sold_out"


@pytest.mark.clock
async def test_daily_cap_per_member_per_business_day(make_series: MakeSeries) -> None:
    series = await make_series([prize("a", 1)], daily_draw_cap=3)
    assert [(await _draw_settled(series.id, 1, 5)).status for _ in range(4)] == [
        "ok",
        "ok",
        "ok",
        "cap",
    ]
    capped = await _draw_settled(series.id, 1, 5)
    assert (capped.draws_today, capped.cap) == (3, 3)
    assert (await _draw_settled(series.id, 2, 5)).status == "ok"  # someone else
    assert (await _draw_settled(series.id, 1, 5, DAY + timedelta(days=1))).status == "ok"


async def test_draws_go_to_the_stream_and_a_give_back_restores_everything_once(
    make_series: MakeSeries,
) -> None:
    series = await make_series(
        [prize("a", 1, stock=5)], daily_draw_cap=5, guarantee_tier="rare", guarantee_every=4
    )
    keys = Keys(series.id)
    redis = get_redis()
    await _draw_settled(series.id, 1, 0)
    await _draw_settled(series.id, 1, 0)
    first = await service.decide(series.id, 1, 0, f"{series.id}-pending-1", DAY)
    assert first.status == "ok" and (first.pity_before, first.pity_after) == (2, 3)
    # no draw waits for the one before: each is an entry of the series' stream
    assert await redis.xlen(keys.draws) == 3
    assert await redis.hget(keys.stock, str(first.prize_id)) == "2"
    assert await redis.hget(keys.day("20250301"), "1") == "3"

    def released(rid: str, seq: int, pity_before: int) -> BlindBoxDraw:
        return BlindBoxDraw(
            draw_id=rid, series_id=series.id, member_id=1, prize_id=first.prize_id,
            business_day=DAY, seq=seq, pity_before=pity_before,
        )  # fmt: skip

    assert await service.give_back(released(first.rid, first.seq, 2)) is True
    assert await redis.hget(keys.stock, str(first.prize_id)) == "3"
    assert await redis.hget(keys.day("20250301"), "1") == "2"
    assert await redis.hget(keys.pity, "1") == "2"  # it was the member's latest draw
    # once only
    assert await service.give_back(released(first.rid, first.seq, 2)) is False
    assert await redis.hget(keys.stock, str(first.prize_id)) == "3"
    assert (await _draw_settled(series.id, 1, 0)).pity_before == 2
    # an earlier draw released after a later one: the unit goes back, the counter that
    # later draws built on stays
    later = await _draw_settled(series.id, 1, 0)
    assert await service.give_back(released("early-one", later.seq - 1, 0)) is True
    assert await redis.hget(keys.pity, "1") == str(later.pity_after)


async def test_lua_and_python_agree_on_large_random_values(make_series: MakeSeries) -> None:
    series = await make_series([prize("a", 1), prize("b", 999_999), prize("c", 3, "rare")])
    total = 1_000_003
    values = [0, 1, total - 1, total, 2**53 - 1, 2**53 - 2, 2**53 - total, 2**52 + 1]
    values += [secrets.randbelow(service.R_LIMIT) for _ in range(200)]
    for member, r in enumerate(values):
        decision = await _draw_settled(series.id, member, r)
        rows = list(decision.table)
        assert decision.prize_id == service.pick(r, rows), r
