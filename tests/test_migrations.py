"""The migrations in mall/migrations build the schema the models describe (the test
session's schema itself comes from them, on SQLite and on PostgreSQL)."""

from __future__ import annotations

from tortoise import Tortoise, connections
from tortoise.migrations.autodetector import MigrationAutodetector

from mall.config import Settings
from mall.db import MIGRATIONS_PACKAGE, _has_migrations, tortoise_config


async def test_migrations_exist_and_match_the_models(settings: Settings) -> None:
    assert _has_migrations(), "run: tortoise -c mall.db.TORTOISE_ORM makemigrations"
    apps = tortoise_config(settings)["apps"]
    assert apps["models"]["migrations"] == MIGRATIONS_PACKAGE
    writers = await MigrationAutodetector(Tortoise.apps, apps).changes()
    pending = [op for w in writers for op in getattr(w, "operations", [])]
    assert not writers, f"models changed without a migration: {pending}"


async def test_points_tables_keep_their_indexes_but_the_redundant_member_ones() -> None:
    """0012 drops only the single-column member indexes (a composite one starting with
    member_id serves them); Tortoise's own SQLite AlterField would have rebuilt the
    tables without any of their indexes."""
    conn = connections.get("default")
    if conn.capabilities.dialect == "postgres":
        sql = (
            "SELECT tablename, indexdef FROM pg_indexes "
            "WHERE tablename IN ('points_entry', 'points_lot')"
        )
    else:
        sql = (
            "SELECT tbl_name, sql FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name IN ('points_entry', 'points_lot') AND sql IS NOT NULL"
        )
    _n, rows = await conn.execute_query(sql)
    columns: dict[str, set[str]] = {"points_entry": set(), "points_lot": set()}
    for row in rows:
        table, definition = list(dict(row).values())
        if "UNIQUE" in definition.upper() or "_pkey" in definition:
            continue
        columns[table].add(definition[definition.rindex("(") + 1 : definition.rindex(")")])
    assert {c.replace('"', "") for c in columns["points_entry"]} == {
        "reference", "reverses_id", "created_at", "member_id, id", "kind, created_at",
    }  # fmt: skip
    assert {c.replace('"', "") for c in columns["points_lot"]} == {
        "entry_id", "member_id, remaining", "expires_at, remaining",
    }  # fmt: skip
