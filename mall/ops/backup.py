"""`mall backup DIR` and `mall restore DIR`: the database (the record of truth) and the
uploaded images; Redis is rebuilt from the database, not restored.

- PostgreSQL: `pg_dump --format=custom` (a consistent snapshot while the mall runs) and
  `pg_restore --clean --if-exists --single-transaction` (all or nothing).
- SQLite: the online backup API of `sqlite3` (a consistent copy while the mall runs), and
  the same API back into the live file.
- Redis: not in the backup. Its hot state (stock, buyers, reservations, streams) is a
  projection of the database plus the decisions not yet written there; a Redis from
  another moment than the database would disagree with it. `mall restore` empties Redis
  (every master of a cluster) and each hot item is warmed from the restored database (by
  the warm jobs, or on its first call), which is what the reconcilers then check. What is
  lost with Redis: sessions and idempotency keys younger than the backup (members log in
  again), rate-limit windows, and any win decided after the backup (as every write after
  it). Keep Redis AOF on (docker/compose.yaml does) for restarts; that is not a backup.

The directory holds `manifest.json`, `mall.pgdump` or `mall.sqlite3`, and `uploads/`."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tortoise import connections
from tortoise.backends.base.config_generator import expand_db_url

from mall import __version__
from mall import redis as mall_redis

MANIFEST = "manifest.json"
PG_DUMP = "mall.pgdump"
SQLITE_COPY = "mall.sqlite3"
UPLOADS = "uploads"


class BackupError(RuntimeError):
    """The backup or restore cannot be done as asked; nothing was changed."""


@dataclass(frozen=True)
class Database:
    """The database mall is connected to (read from Tortoise's live configuration)."""

    kind: str  # "sqlite" or "postgres"
    credentials: dict[str, Any]

    @property
    def path(self) -> Path:
        return Path(str(self.credentials["file_path"]))


def current_database() -> Database:
    info: Any = connections.db_config["default"]
    if isinstance(info, str):
        info = expand_db_url(info)
    engine = str(info["engine"])
    credentials = dict(info["credentials"])
    if engine.endswith("sqlite"):
        return Database("sqlite", credentials)
    if engine.endswith(("asyncpg", "psycopg")):
        return Database("postgres", credentials)
    raise BackupError(f"no backup procedure for the database engine {engine}")


def pg_tool(name: str) -> str:
    """`pg_dump` / `pg_restore` on PATH, else the newest of Debian's versioned folders."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if candidates:
        return str(candidates[-1])
    raise BackupError(f"{name} not found: install the PostgreSQL client (postgresql-client)")


def _pg_connection(credentials: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """Command-line options and environment; the password goes in the environment, never
    on a command line others can read."""
    args = [
        *("--host", str(credentials.get("host") or "localhost")),
        *("--port", str(credentials.get("port") or 5432)),
        *("--dbname", str(credentials["database"])),
    ]
    if credentials.get("user"):
        args += ["--username", str(credentials["user"])]
    env = dict(os.environ)
    if credentials.get("password"):
        env["PGPASSWORD"] = str(credentials["password"])
    return args, env


async def _run(argv: list[str], env: dict[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _err = await proc.communicate()
    if proc.returncode != 0:
        text = out.decode(errors="replace").strip()
        raise BackupError(f"{Path(argv[0]).name} failed ({proc.returncode}): {text[-2000:]}")


def _sqlite_copy(source: Path, target: Path) -> None:
    """Copy through SQLite's online backup API: the copy is one moment of `source` while
    others go on reading and writing it, and other connections to `target` see either
    its old or its new content."""
    src = sqlite3.connect(source)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


async def backup(dest: Path, *, uploads: Path | None = None) -> dict[str, Any]:
    """Write a backup of the connected database (and `uploads`) into `dest`, which must be
    new or empty. Returns the manifest."""
    db = current_database()
    await asyncio.to_thread(_new_folder, dest)
    if db.kind == "sqlite":
        await asyncio.to_thread(_sqlite_copy, db.path, dest / SQLITE_COPY)
        dump = SQLITE_COPY
    else:
        args, env = _pg_connection(db.credentials)
        dump = PG_DUMP
        await _run(
            [pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
             "--file", str(dest / dump), *args],
            env,
        )  # fmt: skip
    copied = await asyncio.to_thread(_copy_tree, uploads, dest / UPLOADS)
    manifest = {
        "format": 1,
        "mall_version": __version__,
        "created_at": datetime.now(UTC).isoformat(),
        "database": db.kind,
        "dump": dump,
        "uploads": copied,
        "key_layout": mall_redis.KEY_LAYOUT_VERSION,
        "redis": "not included: rebuilt from the database on restore",
    }
    text = json.dumps(manifest, indent=2) + "\n"
    await asyncio.to_thread((dest / MANIFEST).write_text, text, encoding="utf-8")
    return manifest


def _new_folder(dest: Path) -> None:
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty; back up into a new folder")
    dest.mkdir(parents=True, exist_ok=True)


def _copy_tree(source: Path | None, target: Path) -> int:
    """Copy `source` (if it is a folder) into `target`, merging; how many files."""
    if source is None or not source.is_dir():
        return 0
    shutil.copytree(source, target, dirs_exist_ok=True)
    return sum(1 for p in source.rglob("*") if p.is_file())


def read_manifest(source: Path) -> dict[str, Any]:
    try:
        found: dict[str, Any] = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupError(f"{source} holds no readable {MANIFEST}: {exc}") from None
    if found.get("format") != 1 or not (source / str(found.get("dump"))).is_file():
        raise BackupError(f"{source} is not a complete mall backup")
    return found


async def restore(
    source: Path, *, uploads: Path | None = None, empty_redis: bool = True
) -> dict[str, Any]:
    """Replace the connected database (and add the backed-up `uploads`) with the backup in
    `source`, then empty Redis so that hot state is rebuilt from the restored database.
    Stop app nodes and workers first: they would keep deciding on the old state."""
    manifest = await asyncio.to_thread(read_manifest, source)
    db = current_database()
    if manifest["database"] != db.kind:
        raise BackupError(
            f"the backup is of {manifest['database']}, mall is connected to {db.kind}"
        )
    if db.kind == "sqlite":
        await asyncio.to_thread(_sqlite_copy, source / SQLITE_COPY, db.path)
    else:
        args, env = _pg_connection(db.credentials)
        # pooled connections hold statements prepared against the tables about to be
        # replaced: close them; the next query opens fresh ones
        await connections.close_all(discard=False)
        await _run(
            [pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--no-privileges",
             "--single-transaction", "--exit-on-error", *args, str(source / PG_DUMP)],
            env,
        )  # fmt: skip
    if uploads is not None:
        await asyncio.to_thread(_copy_tree, source / UPLOADS, uploads)
    if empty_redis:
        await mall_redis.get_redis().flushdb()  # on a cluster: every master
        mall_redis.layout_guard.forget()
    return manifest
