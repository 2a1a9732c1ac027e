"""The test database's empty schema, migrated once and kept between runs.

Tortoise's executor clones its whole model state before every operation, so the real
migrations take 7-12 s of CPU on a fresh database, and CI starts pytest eleven times.
The copy is made by those same migrations and named after their text and Tortoise's
version, so a changed migration is run again; after a copy is laid down the migrations
still run, and find nothing to apply.
- SQLite: a file under ~/.cache/mall-tests (or $XDG_CACHE_HOME/mall-tests);
- PostgreSQL: a template database `mall_schema_<key>` on the test server."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import asyncpg
import tortoise
from tortoise import Tortoise, connections
from tortoise.migrations.api import migrate as run_migrations

MIGRATIONS = Path(__file__).resolve().parent.parent / "mall" / "migrations"


@functools.cache
def key() -> str:
    digest = hashlib.sha256(tortoise.__version__.encode())
    for path in sorted(MIGRATIONS.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _cached_sqlite() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mall-tests" / f"schema-{key()}.sqlite3"


async def _from_template(server: asyncpg.Connection, name: str) -> bool:
    """CREATE DATABASE `name` from the migrated template; False when there is none (or
    another run is copying it right now) and nothing was created."""
    template = f"mall_schema_{key()}"
    if not await server.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", template):
        return False
    try:
        await server.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    except asyncpg.ObjectInUseError:
        return False
    return True


async def migrate_sqlite(config: dict[str, Any], path: Path) -> None:
    """Lay the cached schema at `path` (a new file), or migrate it and keep a copy."""
    cached = _cached_sqlite()
    if cached.is_file():
        shutil.copyfile(cached, path)
        await run_migrations(config=config)
        return
    await run_migrations(config=config)
    # closing the last connection checkpoints the WAL into the file
    await connections.close_all()
    with contextlib.suppress(OSError):  # no cache is no failure
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.part")
        shutil.copyfile(path, partial)
        os.replace(partial, cached)


async def migrate_postgres(config: dict[str, Any], dsn: str) -> None:
    """Create the database `dsn` names from the template, or migrate it and keep one."""
    base, _sep, name = dsn.rpartition("/")
    server = await asyncpg.connect(f"{base}/postgres")
    try:
        if await _from_template(server, name):
            await run_migrations(config=config)
            return
        await Tortoise.init(config=config, _create_db=True)
        await Tortoise.close_connections()
        await run_migrations(config=config)
        await connections.close_all()
        with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.ObjectInUseError):
            await server.execute(f'CREATE DATABASE "mall_schema_{key()}" TEMPLATE "{name}"')
    finally:
        await server.close()


def lay_sqlite(path: Path) -> None:
    """Copy the migrated schema to `path`, a SQLite file a `mall` process will open, when
    an earlier run made one (else that process migrates, as on a first start)."""
    cached = _cached_sqlite()
    if cached.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached, path)


async def create_postgres_database(server: asyncpg.Connection, name: str) -> None:
    """CREATE DATABASE `name`, from the migrated template when there is one."""
    if not await _from_template(server, name):
        await server.execute(f'CREATE DATABASE "{name}"')
