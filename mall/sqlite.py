"""The SQLite client: Tortoise's, with write transactions that take the lock up front.

Its own module because Tortoise's migration executor picks the SQLite schema editor by
the client class's module name (it must contain "sqlite"); `mall.db` wires it in."""

from __future__ import annotations

import sqlite3

from tortoise.backends.base.client import TransactionContext
from tortoise.backends.sqlite.client import SqliteClient as _TortoiseSqliteClient
from tortoise.backends.sqlite.client import SqliteTransactionContext, SqliteTransactionWrapper
from tortoise.exceptions import TransactionManagementError

# How long a statement waits for another process's write lock before it fails with
# "database is locked" (`mall serve --workers N`, or `mall serve` beside `mall worker`).
BUSY_TIMEOUT_MS = 5000


class _ImmediateTransaction(SqliteTransactionWrapper):
    async def begin(self) -> None:
        # BEGIN IMMEDIATE takes the write lock at once, waiting up to busy_timeout for it.
        # A deferred BEGIN reads first and upgrades later; when another process wrote in
        # between, the upgrade fails at once with SQLITE_BUSY (waiting could deadlock, so
        # busy_timeout does not apply) and concurrent writers answered 500.
        try:
            await self._connection.commit()
            await self._connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise TransactionManagementError(exc) from exc


class SqliteClient(_TortoiseSqliteClient):
    """Transactions begin with `BEGIN IMMEDIATE`; nested ones (savepoints) and single
    statements are unchanged. In-process, Tortoise already runs one transaction at a
    time per connection, so this only serializes writers across processes."""

    def _in_transaction(self) -> TransactionContext:
        return SqliteTransactionContext(_ImmediateTransaction(self), self._lock)


# what Tortoise looks up in an engine module (`{"engine": "mall.sqlite", ...}`)
client_class = SqliteClient
