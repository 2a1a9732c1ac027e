"""One Settings class: every knob comes from `MALL_*` environment variables or `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET = "dev-secret-change-me-0123456789abcdef"


class ConfigError(RuntimeError):
    """The settings are unsafe or inconsistent; the service refuses to start."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MALL_", env_file=".env", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    secret_key: str = DEFAULT_SECRET
    data_dir: Path = Path(".mall-data")
    # None means: SQLite file / embedded redis-server under data_dir.
    database_url: str | None = None
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    # Run background jobs and stream consumers inside `mall serve` (a separate
    # `mall worker` is the production shape).
    run_jobs_in_process: bool = True

    default_locale: str = "zh_CN"

    access_token_ttl_seconds: int = 2 * 3600
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    staff_token_ttl_seconds: int = 12 * 3600
    staff_max_failed_logins: int = 5
    staff_lockout_seconds: int = 15 * 60

    wechat_api_base: str = "https://api.weixin.qq.com"
    wechat_appid: str = ""
    wechat_secret: str = ""
    wechat_timeout_seconds: float = 5.0
    # dev login (`dev:<name>` codes) works only with no app id and outside production.
    dev_login: bool = True

    upload_max_bytes: int = 10 * 1024 * 1024
    upload_max_pixels: int = 40_000_000
    upload_variant_widths: list[int] = Field(default_factory=lambda: [750, 375, 150])

    idempotency_ttl_seconds: int = 24 * 3600

    @property
    def database_dsn(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite://{(self.data_dir / 'mall.sqlite3').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.database_dsn.startswith("sqlite")

    @property
    def dev_login_enabled(self) -> bool:
        return self.dev_login and not self.wechat_appid and self.env != "production"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    def check_safe(self) -> None:
        """Refuse unsafe production settings; raises ConfigError naming every problem."""
        if self.env != "production":
            return
        problems = []
        if self.secret_key == DEFAULT_SECRET or len(self.secret_key) < 32:
            problems.append("MALL_SECRET_KEY is the default or shorter than 32 characters")
        if self.dev_login:
            problems.append("MALL_DEV_LOGIN must be false in production")
        if self.is_sqlite:
            problems.append("MALL_DATABASE_URL must point at PostgreSQL in production")
        if not self.redis_url:
            problems.append("MALL_REDIS_URL must point at a Redis server in production")
        if not self.wechat_appid or not self.wechat_secret:
            problems.append("MALL_WECHAT_APPID and MALL_WECHAT_SECRET are required in production")
        if problems:
            raise ConfigError("refusing to start: " + "; ".join(problems))


_settings: Settings | None = None


def get_settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings()
    return _settings


def set_settings(settings: Settings) -> Settings:
    global _settings
    _settings = settings
    return settings


@lru_cache
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent
