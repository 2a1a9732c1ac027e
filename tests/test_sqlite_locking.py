"""SQLite shared by several processes (`mall serve --workers 2`, `mall serve` beside
`mall worker`): each process has its own connection, so writers meet at the file lock.
Two connections in one test process are the same mechanism: each aiosqlite connection
runs in its own thread."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tortoise.backends.sqlite.client import SqliteClient as TortoiseSqliteClient

from mall import db, sqlite
from mall.config import Settings

WRITES_EACH = 25


def _clients(cls: type[TortoiseSqliteClient], path: Path, **pragmas: Any) -> list[Any]:
    return [cls(str(path), connection_name=f"sqlite-{n}", **pragmas) for n in "ab"]


async def _read_then_write(clients: list[Any]) -> tuple[list[str], int]:
    """Each connection runs transactions that read a counter and then write it: the
    shape of every service write (look up, check, then insert/update)."""
    await clients[0].execute_script(
        "CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
        "DELETE FROM counter; INSERT INTO counter VALUES (1, 0);"
    )
    errors: list[str] = []

    async def writer(client: Any) -> None:
        for _ in range(WRITES_EACH):
            try:
                async with client._in_transaction() as conn:
                    _n, rows = await conn.execute_query("SELECT n FROM counter WHERE id = 1")
                    await asyncio.sleep(0.002)  # the other connection reads meanwhile
                    await conn.execute_query(
                        "UPDATE counter SET n = ? WHERE id = 1", [rows[0]["n"] + 1]
                    )
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    try:
        await asyncio.gather(*(writer(c) for c in clients))
        _n, rows = await clients[0].execute_query("SELECT n FROM counter WHERE id = 1")
    finally:
        for client in clients:
            await client.close()
    return errors, int(rows[0]["n"])


@pytest.mark.db
async def test_two_connections_writing_at_once_never_see_database_is_locked(
    tmp_path: Path,
) -> None:
    config = db.tortoise_config(Settings(data_dir=tmp_path))
    info = config["connections"]["default"]
    assert info["engine"] == "mall.sqlite"
    credentials = dict(info["credentials"])
    assert credentials["busy_timeout"] == sqlite.BUSY_TIMEOUT_MS
    assert credentials["synchronous"] == "NORMAL"
    path = Path(credentials.pop("file_path"))

    errors, total = await _read_then_write(_clients(sqlite.client_class, path, **credentials))
    assert errors == []
    assert total == 2 * WRITES_EACH  # and no lost update: each read saw the last write


@pytest.mark.db
async def test_the_same_load_on_tortoises_own_client_is_refused(tmp_path: Path) -> None:
    """The control: with a deferred BEGIN, the second writer's lock upgrade fails at once
    (busy_timeout does not apply to it), which is what answered 500 before."""
    path = tmp_path / "control.sqlite3"
    clients = _clients(TortoiseSqliteClient, path, busy_timeout=sqlite.BUSY_TIMEOUT_MS)
    errors, _total = await _read_then_write(clients)
    assert errors and all("database is locked" in e for e in errors), errors[:3]


@pytest.mark.nodb
def test_postgres_and_explicit_busy_timeouts_are_left_alone(tmp_path: Path) -> None:
    pg = Settings(data_dir=tmp_path, database_url="postgres://u@127.0.0.1:5432/mall")
    assert db.tortoise_config(pg)["connections"]["default"] == "postgres://u@127.0.0.1:5432/mall"
    own = Settings(
        data_dir=tmp_path, database_url=f"sqlite://{tmp_path}/x.sqlite3?busy_timeout=100"
    )
    assert db.tortoise_config(own)["connections"]["default"]["credentials"]["busy_timeout"] == (
        "100"
    )
