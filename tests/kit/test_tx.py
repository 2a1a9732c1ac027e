"""mall.kit.tx: after-commit and rollback hooks on a real database."""

from __future__ import annotations

import asyncio
import logging

import pytest
from tortoise.transactions import in_transaction

from mall.audit.models import AuditLog
from mall.kit import tx


class Boom(Exception):
    pass


async def _write(action: str) -> None:
    await AuditLog.create(action=action)


async def _actions() -> list[str]:
    return list(await AuditLog.all().order_by("id").values_list("action", flat=True))


async def test_after_commit_runs_once_the_commit_is_visible() -> None:
    seen: list[list[str]] = []

    async def hook() -> None:
        seen.append(await _actions())

    async with tx.transaction():
        await _write("a")
        await tx.after_commit(hook)
        await tx.on_rollback(lambda: seen.append(["rolled back"]))
        assert seen == []  # not before the commit
    assert seen == [["a"]]


async def test_rollback_runs_rollback_hooks_newest_first_and_no_after_commit() -> None:
    ran: list[str] = []
    with pytest.raises(Boom):
        async with tx.transaction():
            await _write("a")
            await tx.after_commit(lambda: ran.append("committed"))
            await tx.on_rollback(lambda: ran.append("undo 1"))
            await tx.on_rollback(lambda: ran.append("undo 2"))
            raise Boom
    assert ran == ["undo 2", "undo 1"]
    assert await _actions() == []


async def test_nested_savepoints_join_the_outermost_commit() -> None:
    ran: list[str] = []
    async with tx.transaction():
        await tx.after_commit(lambda: ran.append("outer 1"))
        async with tx.transaction():
            await _write("inner")
            await tx.after_commit(lambda: ran.append("inner"))
        assert ran == []  # the savepoint's release is no commit
        await tx.after_commit(lambda: ran.append("outer 2"))
    assert ran == ["outer 1", "inner", "outer 2"]
    assert await _actions() == ["inner"]


async def test_a_rolled_back_savepoint_drops_its_after_commit_hooks() -> None:
    ran: list[str] = []
    async with tx.transaction():
        await _write("outer")
        await tx.after_commit(lambda: ran.append("outer committed"))
        with pytest.raises(Boom):
            async with tx.transaction():
                await _write("inner")
                await tx.after_commit(lambda: ran.append("inner committed"))
                await tx.on_rollback(lambda: ran.append("inner undone"))
                raise Boom
        assert ran == ["inner undone"]  # at once: the savepoint is gone
    assert ran == ["inner undone", "outer committed"]
    assert await _actions() == ["outer"]


async def test_an_outer_rollback_undoes_a_released_savepoint_too() -> None:
    ran: list[str] = []
    with pytest.raises(Boom):
        async with tx.transaction():
            await tx.on_rollback(lambda: ran.append("outer undone"))
            async with tx.transaction():
                await _write("inner")
                await tx.after_commit(lambda: ran.append("inner committed"))
                await tx.on_rollback(lambda: ran.append("inner undone"))
            raise Boom
    assert ran == ["inner undone", "outer undone"]
    assert await _actions() == []


async def test_a_failing_hook_is_logged_not_raised_and_the_others_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    async def broken() -> None:
        raise RuntimeError("hook broke")

    with caplog.at_level(logging.ERROR, logger="mall.tx"):
        async with tx.transaction():
            await _write("a")
            await tx.after_commit(broken)
            await tx.after_commit(lambda: ran.append("after"))
        assert ran == ["after"]
        assert await _actions() == ["a"]

        with pytest.raises(Boom):  # the transaction's own error, not the hook's
            async with tx.transaction():
                await tx.on_rollback(lambda: ran.append("undone"))
                await tx.on_rollback(broken)
                raise Boom
        assert ran == ["after", "undone"]
    failures = [r for r in caplog.records if r.exc_info and "hook broke" in str(r.exc_info[1])]
    assert len(failures) == 2


async def test_outside_a_transaction_after_commit_runs_at_once() -> None:
    ran: list[str] = []
    await tx.after_commit(lambda: ran.append("now"))
    assert ran == ["now"]
    await tx.on_rollback(lambda: ran.append("never"))
    async with tx.transaction():
        pass
    assert ran == ["now"]


async def test_hooks_may_open_their_own_transaction() -> None:
    async def follow_up() -> None:
        async with tx.transaction():
            await _write("follow-up")

    async with tx.transaction():
        await _write("first")
        await tx.after_commit(follow_up)
    assert await _actions() == ["first", "follow-up"]


async def test_hooks_refuse_a_transaction_they_cannot_see_commit() -> None:
    ran: list[str] = []
    async with in_transaction():
        with pytest.raises(RuntimeError, match=r"mall\.kit\.tx\.transaction"):
            await tx.after_commit(lambda: ran.append("too early"))
        async with tx.transaction():  # a savepoint of the raw transaction
            with pytest.raises(RuntimeError):
                await tx.on_rollback(lambda: ran.append("unseen"))
    assert ran == []


async def test_concurrent_transactions_keep_their_own_hooks() -> None:
    ran: list[str] = []

    async def unit(name: str, fail: bool) -> None:
        async with tx.transaction():
            await _write(name)
            await tx.after_commit(lambda: ran.append(f"{name} committed"))
            await tx.on_rollback(lambda: ran.append(f"{name} undone"))
            await asyncio.sleep(0)
            if fail:
                raise Boom

    results = await asyncio.gather(unit("a", False), unit("b", True), return_exceptions=True)
    assert results[0] is None and isinstance(results[1], Boom)
    assert sorted(ran) == ["a committed", "b undone"]
    assert await _actions() == ["a"]
