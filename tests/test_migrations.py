"""The migrations in mall/migrations build the schema the models describe (the test
session's schema itself comes from them, on SQLite and on PostgreSQL)."""

from __future__ import annotations

from tortoise import Tortoise
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
