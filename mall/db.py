"""Tortoise configuration: every domain's models module, one app, its own migrations."""

from __future__ import annotations

from typing import Any

from tortoise import Tortoise, connections

from mall.config import Settings
from mall.domains import model_module_names


def tortoise_config(settings: Settings) -> dict[str, Any]:
    dsn = settings.database_dsn
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return {
        "connections": {"default": dsn},
        "apps": {
            "models": {
                "models": model_module_names(),
                "default_connection": "default",
                "migrations": "mall.migrations",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


async def init_db(settings: Settings) -> None:
    await Tortoise.init(config=tortoise_config(settings))


async def migrate(settings: Settings) -> None:
    """Apply Tortoise migrations (the tool's own executor)."""
    from tortoise.migrations.api import migrate as run_migrations

    await run_migrations(config=tortoise_config(settings))


async def close_db() -> None:
    await connections.close_all()


async def ping_db() -> bool:
    conn = connections.get("default")
    await conn.execute_query("SELECT 1")
    return True


def __getattr__(name: str) -> Any:
    # `tortoise -c mall.db.TORTOISE_ORM makemigrations` reads the config from here
    if name == "TORTOISE_ORM":
        from mall.config import get_settings

        return tortoise_config(get_settings())
    raise AttributeError(name)
