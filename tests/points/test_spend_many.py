"""`spend_many` is `spend` per request, in order: random batches (seeded) over members with
several lots leave exactly the balances, entries, lot remainders and lot uses that calling
`spend` one by one leaves, and answer the same in each slot."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from mall.errors import MallError
from mall.kit import clock, tx
from mall.members.models import Member
from mall.points import ledger, service
from mall.points.models import PointsEntry, PointsLot, PointsLotUse
from tests.points.helpers import assert_ledger_ok, new_member

MEMBERS = 4
GONE = 2**62  # a member id that does not exist


async def _world(name: str, rng: random.Random) -> list[int]:
    """MEMBERS members with the same lots (points, expiry) in every world built from the
    same `rng` state, and a spend done before the batch (a key the batch may repeat)."""
    ids = []
    for m in range(MEMBERS):
        member = await new_member()
        for n in range(rng.randint(0, 4)):
            days = rng.choice([None, 3, 10, 40, 40, "never"])
            earned = await service.earn(
                member.id,
                rng.randint(1, 60),
                idempotency_key=f"{name}:earn:{m}:{n}",
                reason="t",
                expires_at=clock.now() + timedelta(days=days) if isinstance(days, int) else None,
            )
            if days == "never":  # None above is the rules' expiry
                await PointsLot.filter(entry_id=earned.id).update(expires_at=None)
        ids.append(member.id)
    return ids


def _requests(name: str, ids: list[int], rng: random.Random) -> list[service.SpendRequest]:
    pool = [f"k{i}" for i in range(rng.randint(4, 25))]  # few keys: duplicates in a batch
    out = []
    for _ in range(rng.randint(1, 24)):
        pick = rng.random()
        member = GONE if pick < 0.05 else ids[rng.randrange(MEMBERS)]
        points = 0 if pick > 0.97 else rng.randint(1, 70)
        key = rng.choice([*pool, "pre", "x" * 200])  # "x"*200: hashed to fit the column
        out.append(
            service.SpendRequest(
                member, points, f"{name}:{key}", reason=f"r{rng.randint(0, 2)}", reference=key
            )
        )
    return out


async def _state(name: str, ids: list[int]) -> dict[str, Any]:
    """Everything a spend can change, with this world's ids and key prefix taken out."""
    index = {mid: i for i, mid in enumerate(ids)}
    members = await Member.filter(id__in=ids).order_by("id").values_list("id", "points_balance")
    entries = await PointsEntry.filter(member_id__in=ids).order_by("id")
    lots = await PointsLot.filter(member_id__in=ids).order_by("id")
    lot_index = {lot.id: n for n, lot in enumerate(lots)}
    entry_index = {e.id: n for n, e in enumerate(entries)}
    uses = await PointsLotUse.filter(entry_id__in=list(entry_index)).order_by("id")
    return {
        "balances": [b for _id, b in members],
        "entries": [
            (
                index[e.member_id],
                e.delta,
                e.balance_after,
                e.kind,
                e.reason,
                e.reference,
                _norm(name, e.idempotency_key),
            )
            for e in entries
        ],
        "lots": [(index[lot.member_id], lot.points, lot.remaining) for lot in lots],
        "uses": sorted((entry_index[u.entry_id], lot_index[u.lot_id], u.points) for u in uses),
    }


def _norm(name: str, key: str) -> str:
    # a hashed long key ends in a hash of the world's own key: compare what precedes it
    return key.removeprefix(name)[:60]


def _answer(name: str, result: PointsEntry | service.SpentEntry | MallError) -> tuple[Any, ...]:
    if isinstance(result, MallError):
        return ("error", result.code, sorted(result.params.items()))
    key = _norm(name, result.idempotency_key)
    return ("entry", key, result.delta, result.balance_after, result.kind, result.reason)


async def _assert_as_stored(answers: list[service.SpentEntry | MallError]) -> None:
    """Each entry `spend_many` answers with is the row under its id, field for field."""
    for answer in answers:
        if isinstance(answer, MallError):
            continue
        stored = await PointsEntry.get(id=answer.id)
        assert answer == service.SpentEntry(
            stored.id,
            stored.member_id,
            stored.delta,
            stored.balance_after,
            stored.kind,
            stored.reason,
            stored.reference,
            stored.idempotency_key,
        )


@pytest.mark.clock
@pytest.mark.parametrize("seed", range(12))
async def test_spend_many_equals_spend_in_order(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    clock.set_now(datetime(2025, 1, 1, 4, 0, tzinfo=UTC))
    if seed % 3 == 0:  # several set-based statements per batch
        monkeypatch.setattr(ledger, "_CHUNK", 2)
    worlds: dict[str, list[int]] = {}
    for name in ("one", "many"):
        rng = random.Random(seed)  # the same lots in both worlds
        worlds[name] = await _world(f"{seed}:{name}", rng)
        pre = worlds[name][rng.randrange(MEMBERS)]
        try:
            await service.spend(pre, 5, idempotency_key=f"{seed}:{name}:pre", reason="pre")
        except MallError:
            pass
        requests = _requests(f"{seed}:{name}", worlds[name], rng)
        answers: list[Any] = []
        if name == "one":
            for r in requests:
                try:
                    answers.append(
                        await service.spend(
                            r.member_id,
                            r.points,
                            idempotency_key=r.idempotency_key,
                            reason=r.reason,
                            reference=r.reference,
                        )
                    )
                except MallError as exc:
                    answers.append(exc)
            told_one = [_answer(f"{seed}:{name}", a) for a in answers]
        elif seed % 2:  # inside the caller's transaction (the consumers' case)
            async with tx.transaction():
                answers = list(await service.spend_many(requests))
        else:
            answers = list(await service.spend_many(requests))
    told_many = [_answer(f"{seed}:many", a) for a in answers]
    await _assert_as_stored(answers)
    assert told_many == told_one
    assert await _state(f"{seed}:many", worlds["many"]) == await _state(
        f"{seed}:one", worlds["one"]
    )
    await assert_ledger_ok()


async def test_a_member_twice_short_the_second_time_and_a_replay() -> None:
    member = await new_member()
    await service.earn(member.id, 50, idempotency_key="e1", reason="t")
    await service.earn(member.id, 30, idempotency_key="e2", reason="t")
    requests = [
        service.SpendRequest(member.id, 60, "s1", "r"),
        service.SpendRequest(member.id, 30, "s2", "r"),  # 20 left: refused, changes nothing
        service.SpendRequest(member.id, 20, "s3", "r"),
        service.SpendRequest(member.id, 99, "s1", "r"),  # the same key: s1's entry
    ]
    first = await service.spend_many(requests)
    assert isinstance(first[0], service.SpentEntry) and first[0].balance_after == 20
    assert isinstance(first[1], MallError) and first[1].code == "NOT_ENOUGH_POINTS"
    assert first[1].params == {"balance": 20, "cost": 30}
    assert isinstance(first[2], service.SpentEntry) and first[2].balance_after == 0
    assert isinstance(first[3], service.SpentEntry) and first[3].id == first[0].id
    assert await service.get_balance(member.id) == 0
    # replayed: the entries already written come back, nothing moves
    again = await service.spend_many(requests)
    assert [getattr(a, "id", None) for a in again] == [first[0].id, None, first[2].id, first[0].id]
    assert await PointsEntry.filter(member_id=member.id).count() == 4
    await assert_ledger_ok()


async def test_a_caller_rolling_back_undoes_the_batch() -> None:
    member = await new_member()
    await service.earn(member.id, 40, idempotency_key="e", reason="t")
    with pytest.raises(RuntimeError):
        async with tx.transaction():
            [entry] = await service.spend_many([service.SpendRequest(member.id, 15, "s", "r")])
            assert isinstance(entry, service.SpentEntry)
            raise RuntimeError("the caller's batch failed")
    assert await service.get_balance(member.id) == 40
    assert not await PointsEntry.filter(idempotency_key="s").exists()
    assert await service.spend_many([]) == []


@pytest.mark.clock
async def test_lots_taken_in_spend_order_whatever_the_offset_and_precision() -> None:
    # the batch orders the lots in SQL; `spend` sorts them in Python (`_spend_order`):
    # expiries at a whole second and a fraction of it, given at +08:00, equal, and none
    clock.set_now(datetime(2025, 1, 1, 4, 0, tzinfo=UTC))
    shanghai = timezone(timedelta(hours=8))
    t0 = datetime(2025, 1, 10, tzinfo=UTC)
    expiries = [
        None,
        t0 + timedelta(microseconds=1),
        t0,
        (t0 + timedelta(milliseconds=500)).astimezone(shanghai),
        (t0 - timedelta(seconds=1)).astimezone(shanghai),  # text at +08:00 sorts last
        t0,  # the same as an earlier lot: id order
        None,
        t0 + timedelta(days=400),
    ]
    member = await new_member()
    for n, expires_at in enumerate(expiries):
        earned = await service.earn(
            member.id, n + 1, idempotency_key=f"e{n}", reason="t", expires_at=expires_at
        )
        if expires_at is None:  # never expires (`earn` would give the rules' expiry)
            await PointsLot.filter(entry_id=earned.id).update(expires_at=None)
    lots = await PointsLot.filter(member_id=member.id)
    expected = [lot.id for lot in ledger._spend_order(lots)]
    total = sum(range(1, len(expiries) + 1))
    [entry] = await service.spend_many([service.SpendRequest(member.id, total, "s", "r")])
    assert isinstance(entry, service.SpentEntry)
    uses = await PointsLotUse.filter(entry_id=entry.id).order_by("id").values_list("lot_id")
    assert [lot_id for (lot_id,) in uses] == expected
    assert expected != sorted(expected)  # the order is not just the ids'
    await assert_ledger_ok()


@pytest.mark.parametrize("stale", ["balance", "lot"])
async def test_a_write_that_finds_a_row_changed_under_the_lock_rolls_the_batch_back(
    stale: str,
) -> None:
    # the conditional updates of `_write_planned` (`points_balance >= total`, `remaining
    # = expected`) are the batch's last guard: a plan made from rows that changed since
    # they were read moves fewer rows than it names, and nothing of the batch is kept
    first, second = await new_member(), await new_member()
    for m in (first, second):
        await service.earn(m.id, 40, idempotency_key=f"e{m.id}", reason="t")
    lots = {m.id: await PointsLot.get(member_id=m.id) for m in (first, second)}
    planned = [
        ledger._Planned(m.id, 10, 30, f"s{m.id}", "r", "", [(lots[m.id].id, 10)])
        for m in (first, second)
    ]
    open_lots = {m.id: [ledger._Lot(lots[m.id].id, 40, 30)] for m in (first, second)}
    if stale == "balance":  # the second member's balance fell below the batch's total
        await Member.filter(id=second.id).update(points_balance=5)
    else:  # the second member's lot no longer holds what the plan read
        await PointsLot.filter(id=lots[second.id].id).update(remaining=39)
    with pytest.raises(RuntimeError, match="changed under a member lock"):
        async with tx.transaction() as conn:
            await ledger._write_planned(conn, planned, open_lots)
    # the first member's writes went with the batch
    assert await service.get_balance(first.id) == 40
    assert (await PointsLot.get(id=lots[first.id].id)).remaining == 40
    assert not await PointsEntry.filter(idempotency_key__in=[p.key for p in planned]).exists()
