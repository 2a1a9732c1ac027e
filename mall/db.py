"""Tortoise configuration: every domain's models module, one app, its own migrations."""

from __future__ import annotations

import importlib.util
import logging
import pkgutil
from typing import Any

from tortoise import Tortoise, connections
from tortoise.backends.base.config_generator import expand_db_url

from mall import sqlite
from mall.config import Settings
from mall.domains import model_module_names
from mall.kit import dbtime

log = logging.getLogger("mall.db")

MIGRATIONS_PACKAGE = "mall.migrations"


def _connection_config(settings: Settings) -> str | dict[str, Any]:
    dsn = settings.database_dsn
    dbtime.install(sqlite=settings.is_sqlite)  # UTC text on SQLite; auto_now from the clock
    if not settings.is_sqlite:
        return dsn
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = expand_db_url(dsn)
    # several processes share the file: wait for the write lock, take it up front
    config["engine"] = sqlite.__name__
    # a pragma on every connection; a `?busy_timeout=` in MALL_DATABASE_URL wins
    config["credentials"].setdefault("busy_timeout", sqlite.BUSY_TIMEOUT_MS)
    return config


def tortoise_config(settings: Settings) -> dict[str, Any]:
    return {
        "connections": {"default": _connection_config(settings)},
        "apps": {
            "models": {
                "models": model_module_names(),
                "default_connection": "default",
                "migrations": MIGRATIONS_PACKAGE,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


async def init_db(settings: Settings, *, global_fallback: bool = False) -> None:
    """`global_fallback=True` lets other tasks see the connections: uvicorn runs the
    lifespan in one task and each request in another."""
    await Tortoise.init(config=tortoise_config(settings), _enable_global_fallback=global_fallback)


def _has_migrations() -> bool:
    """True when `mall.migrations` holds at least one migration module."""
    try:
        spec = importlib.util.find_spec(MIGRATIONS_PACKAGE)
    except ModuleNotFoundError:
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    return any(
        not is_pkg and name[0] not in "_~"
        for _finder, name, is_pkg in pkgutil.iter_modules(spec.submodule_search_locations)
    )


async def migrate(settings: Settings) -> None:
    """Apply Tortoise migrations (the tool's own executor).

    Until migration files are generated, create missing tables from the models instead,
    so a checkout without migrations still starts."""
    if not _has_migrations():
        log.warning("no migrations in %s; creating missing tables from models", MIGRATIONS_PACKAGE)
        await init_db(settings)
        await Tortoise.generate_schemas(safe=True)
        return
    from tortoise.migrations.api import migrate as run_migrations

    await run_migrations(config=tortoise_config(settings))


async def close_db() -> None:
    # also clears the global fallback, so a later init (tests, CLI) starts clean
    await Tortoise.close_connections()


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
