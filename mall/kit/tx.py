"""Database transactions with after-commit and rollback hooks.

Services open transactions with `transaction()` (tortoise's `in_transaction()` with a
scope of hooks kept in a context variable). Inside one:

- `await after_commit(fn)` runs `fn` once the OUTERMOST transaction has committed, in
  the order registered: work that must not happen for a write that is undone (sending a
  message, giving Redis stock to the next buyer).
- `await on_rollback(fn)` runs `fn` if the transaction rolls back instead, newest first,
  after the rollback: compensation for what the database cannot undo (Redis stock taken
  before the write).

A nested `transaction()` is a savepoint and joins the outer scope: when it commits its
hooks move to the outer scope; when it rolls back its rollback hooks run and its
after-commit hooks are dropped, as its writes were. Outside any transaction
`after_commit` runs `fn` at once and `on_rollback` has nothing to watch.

A hook that raises is logged, never raised: the transaction's outcome is already
decided, and the other hooks still run. Hooks run outside the transaction, so they may
open their own.

Hooks can only see a commit that `transaction()` made: registering one inside a raw
`in_transaction()` whose outermost block is not `transaction()` raises RuntimeError
(it would otherwise run before the commit). A raw `in_transaction()` inside
`transaction()` is a savepoint this module cannot see: hooks registered in it belong to
the enclosing `transaction()`."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from tortoise.backends.base.client import BaseDBAsyncClient, TransactionalDBClient
from tortoise.connection import get_connections
from tortoise.exceptions import ConfigurationError
from tortoise.transactions import in_transaction

log = logging.getLogger("mall.tx")

Hook = Callable[[], Awaitable[object] | object]


@dataclass
class _Scope:
    committed: list[Hook] = field(default_factory=list)
    rolled_back: list[Hook] = field(default_factory=list)
    # opened inside a raw in_transaction(): the real commit is out of sight
    detached: bool = False


_current: ContextVar[_Scope | None] = ContextVar("mall_tx_scope", default=None)


@asynccontextmanager
async def transaction(connection_name: str | None = None) -> AsyncIterator[BaseDBAsyncClient]:
    """`in_transaction()` that runs the hooks registered inside it; nests as a savepoint."""
    outer = _current.get()
    scope = _Scope(detached=outer.detached if outer else _in_db_transaction())
    token = _current.set(scope)
    try:
        async with in_transaction(connection_name) as connection:
            yield connection
    except BaseException:
        _current.reset(token)
        await _run(reversed(scope.rolled_back), "rollback")
        raise
    _current.reset(token)
    if outer is not None:
        outer.committed.extend(scope.committed)
        outer.rolled_back.extend(scope.rolled_back)
    else:
        await _run(scope.committed, "after-commit")


async def after_commit(fn: Hook) -> None:
    """Run `fn` after the outermost transaction commits (at once outside a transaction)."""
    scope = _scope_for_hook()
    if scope is None:
        await _run([fn], "after-commit")
    else:
        scope.committed.append(fn)


async def on_rollback(fn: Hook) -> None:
    """Run `fn` if the current transaction (or the savepoint it is in) rolls back."""
    scope = _scope_for_hook()
    if scope is not None:
        scope.rolled_back.append(fn)


def _scope_for_hook() -> _Scope | None:
    scope = _current.get()
    if (scope is None and _in_db_transaction()) or (scope is not None and scope.detached):
        raise RuntimeError(
            "a transaction hook inside a transaction not opened with mall.kit.tx.transaction(): "
            "open the outermost transaction with it"
        )
    return scope


def _in_db_transaction() -> bool:
    try:
        handler = get_connections()
        return any(isinstance(handler.get(a), TransactionalDBClient) for a in handler.db_config)
    except ConfigurationError:  # no database set up: nothing is in a transaction
        return False


async def _run(hooks: Iterable[Hook], kind: str) -> None:
    for hook in hooks:
        try:
            result = hook()
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("%s hook %r failed", kind, hook)
