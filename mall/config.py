"""One Settings class: every knob comes from `MALL_*` environment variables or `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
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

    # --- blindbox: a draw decided in Redis but not recorded this long after (a crashed
    # request) is settled by the sweeper; the sweeper and the reconciler run this often.
    blindbox_inflight_stale_seconds: int = 300
    blindbox_sweep_interval_seconds: float = 60.0
    blindbox_reconcile_interval_seconds: float = 600.0

    # --- points: order binding lets a member guess wrong this often per window ---
    points_bind_max_failures: int = 5
    points_bind_window_seconds: int = 10 * 60
    # the lot expiry and birthday jobs run this often
    points_job_interval_seconds: float = 3600.0
    # a points hold whose owner gives no deadline is released this long after it was
    # made (a checkout's hold lives until its order closes); the release job runs this often
    points_hold_timeout_seconds: int = Field(default=2 * 3600, ge=60, le=30 * 24 * 3600)
    points_hold_release_interval_seconds: float = 60.0
    # the re-levelling job (after level thresholds change) looks this often
    points_relevel_interval_seconds: float = 60.0

    # --- seckill (flash sales) ---
    # per member per item: at most N attempts per window (decided inside the attempt Lua)
    seckill_attempts_per_window: int = 5
    seckill_attempt_window_ms: int = 1000
    # cash-priced wins go back to stock when unpaid after this long
    seckill_payment_seconds: int = 15 * 60
    # the warm job loads sessions starting within this horizon into Redis
    seckill_warm_ahead_seconds: int = 3600
    # stream entries pending this long on a (dead) consumer are claimed by another
    seckill_claim_idle_seconds: int = 30
    # an item answered sold_out is remembered in-process this long (no Redis call)
    seckill_sold_out_cache_seconds: float = 1.0
    # Redis keys of items whose session ended this long ago are retired
    seckill_retire_after_seconds: int = 7 * 24 * 3600

    # pointsmall: a Redis reservation not written to the database within this many
    # seconds is returned by the reconciler; the reconciler runs this often.
    pointsmall_reservation_ttl_seconds: int = 60
    pointsmall_reconcile_interval_seconds: float = 30.0

    # --- coupons and the touch cap ---
    # relative validity of a new template unless ops set another (calendar months)
    coupon_default_valid_months: int = 3
    # expiry reminders: coupons expiring within this many days, sent once a day after
    # this Asia/Shanghai hour, on this WeChat subscribe-message template ("" = off)
    coupon_reminder_days: int = 7
    coupon_reminder_local_hour: int = 10
    coupon_expiry_template_id: str = ""
    coupon_reminder_page: str = "pages/coupons/index"
    # one-to-one touches per member per Asia/Shanghai calendar month, every kind shared
    touch_cap_per_month: int = 2

    # --- wallet: WeChat Pay v3 (direct merchant, JSAPI) and stored value ---
    # Secrets: the APIv3 key is a SecretStr and key files are read by mall.wechat.pay
    # only, so neither shows up in reprs or logs.
    wechatpay_mchid: str = ""
    wechatpay_api_base: str = "https://api.mch.weixin.qq.com"
    wechatpay_private_key_path: Path | None = None  # merchant apiclient_key.pem
    wechatpay_serial: str = ""  # merchant API certificate serial number
    wechatpay_apiv3_key: SecretStr = SecretStr("")  # 32 characters
    wechatpay_public_key_path: Path | None = None  # WeChat Pay public key (public-key mode)
    wechatpay_public_key_id: str = ""  # PUB_KEY_ID_...
    wechatpay_notify_url: str = ""  # https://<host>/api/v1/wechat/pay-notify
    # platform-certificate serial -> PEM path (certificate or public key), for merchants
    # still on, or migrating from, platform certificates
    wechatpay_platform_certs: dict[str, Path] = Field(default_factory=dict)
    # the mini-program appid payments are made under; "" means MALL_WECHAT_APPID
    wechatpay_appid: str = ""
    wechatpay_timeout_seconds: float = 10.0
    # spending order of stored value: principal (refundable cash) or bonus first
    wallet_spend_order: Literal["principal_first", "bonus_first"] = "principal_first"
    # a top-up not paid within this many seconds is closed
    wallet_topup_expire_seconds: int = 15 * 60
    # the poll job asks WeChat Pay about top-ups pending longer than this
    wallet_query_after_seconds: int = 120
    wallet_poll_interval_seconds: float = 60.0

    # --- orders: an unpaid order closes this long after it was placed (stock, coupon,
    # points and wallet come back); the closing job runs this often; if WeChat Pay cannot
    # be asked whether it was paid, the order is closed anyway this long after its deadline.
    order_payment_minutes: int = 15
    order_close_interval_seconds: float = 30.0
    order_close_force_after_seconds: int = 30 * 60
    # shipped orders complete themselves (and earn points) this many days after shipping
    order_auto_complete_days: int = 10

    # --- segments (crowd packs, auto tags, campaigns) ---
    # the auto-tag job runs this often; "repeat_buyer" needs this many purchases
    segments_auto_tag_interval_seconds: float = 3600.0
    segments_repeat_buyer_min_purchases: int = 5
    # campaigns to at most this many members run inside the request; bigger ones are
    # queued and run by the campaign job (every N seconds), this many sends at a time
    segments_inline_campaign_max: int = 500
    segments_campaign_interval_seconds: float = 10.0
    segments_campaign_concurrency: int = 8

    # --- referral: a new member may bind a share code this many days after joining ---
    referral_bind_days: int = 7

    @property
    def database_dsn(self) -> str:
        if self.database_url:
            return self.database_url
        # WAL + synchronous=NORMAL: commits survive a crash of the app (not a power cut)
        # without an fsync each; the zero-setup default, production runs PostgreSQL.
        return f"sqlite://{(self.data_dir / 'mall.sqlite3').resolve()}?synchronous=NORMAL"

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
