"""One Settings class: every knob comes from `MALL_*` environment variables or `.env`."""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import secrets
import tempfile
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

log = logging.getLogger("mall.config")

# The signing secret of old releases, public in the source: never used to sign anything.
DEFAULT_SECRET = "dev-secret-change-me-0123456789abcdef"
# Out of production with no MALL_SECRET_KEY, a random secret is made once and kept here.
SECRET_FILE = "secret_key"
MIN_SECRET_LENGTH = 32
# rough floor on the guessing work of a production secret (see weak_secret)
MIN_SECRET_BITS = 88


class ConfigError(RuntimeError):
    """The settings are unsafe or inconsistent; the service refuses to start."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MALL_", env_file=".env", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    # Signs member and staff tokens. Empty outside production: a random secret is made on
    # first use and kept in <data_dir>/secret_key (mode 0600). Production requires one.
    secret_key: str = ""
    data_dir: Path = Path(".mall-data")
    # None means: SQLite file / embedded redis-server under data_dir.
    database_url: str | None = None
    redis_url: str | None = None
    # A Redis Cluster behind MALL_REDIS_URL (any node): None = ask the server (INFO
    # cluster) at start-up; true/false skips the question.
    redis_cluster: bool | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    # the ASGI server of `mall serve` (mall/serving.py); granian is an optional extra
    server: Literal["uvicorn", "granian"] = "uvicorn"
    # Run background jobs and stream consumers inside `mall serve` (a separate
    # `mall worker` is the production shape).
    run_jobs_in_process: bool = True
    # Batches of one stream persisted at once by each process's consumer (seckill wins,
    # redemptions, draws): while one batch waits on the database, the next is read and
    # prepared. None: 2 on PostgreSQL, 1 on SQLite (one connection: they would take
    # turns anyway). Measured in docs/BENCHMARKS.md (round G).
    stream_consumer_tasks: int | None = Field(default=None, ge=1, le=8)

    default_locale: str = "zh_CN"

    # production serves /docs, /redoc and /openapi.json only when this is true
    public_docs: bool = False
    # /metrics asks for `Authorization: Bearer <token>` when this is set; production
    # without a token does not serve /metrics at all (404)
    metrics_token: SecretStr = SecretStr("")

    # Addresses (or networks) of reverse proxies whose X-Forwarded-For is believed; empty:
    # the client address is the TCP peer's. JSON list or comma separated.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Access tokens are short-lived; refresh tokens rotate on every use and a reused
    # (already rotated) one revokes its whole session. Members' sessions slide (each
    # refresh extends them), staff sessions end a fixed time after the login.
    access_token_ttl_seconds: int = 15 * 60
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    staff_token_ttl_seconds: int = 15 * 60
    staff_session_ttl_seconds: int = 12 * 3600
    # A staff name (existing or not) is locked this long after this many failed logins.
    staff_max_failed_logins: int = 5
    staff_lockout_seconds: int = 15 * 60
    # One client address may fail this many staff logins per window (any names) before
    # it gets 429; kept below staff_max_failed_logins so one address cannot lock anyone.
    staff_login_ip_max_failures: int = 4
    staff_login_ip_window_seconds: int = 15 * 60
    # Login attempts per staff name per window (from all addresses) before 429.
    staff_login_name_max_attempts: int = 10
    staff_login_name_window_seconds: int = 60
    # WeChat logins per client address per window before 429.
    member_login_ip_max_attempts: int = 60
    member_login_ip_window_seconds: int = 60
    # argon2 hashes computed at once per process (each takes ~64 MiB while it runs)
    password_hash_concurrency: int = 2

    wechat_api_base: str = "https://api.weixin.qq.com"
    wechat_appid: str = ""
    wechat_secret: str = ""
    wechat_timeout_seconds: float = 5.0
    # dev login (`dev:<name>` codes) works only with no app id and outside production.
    dev_login: bool = True

    upload_max_bytes: int = 10 * 1024 * 1024
    # a product picture needs far less; 24 MP decodes to about 72 MB of RGB
    upload_max_pixels: int = 24_000_000

    # --- request bodies: the most read before a request is answered 413. Shopper and
    # public routes, admin routes (product descriptions, bulk grants), WeChat Pay
    # notifications (real ones are 1-2 KB). Image uploads and the order import take
    # upload_max_bytes plus room for the multipart framing.
    max_body_bytes: int = 64 * 1024
    admin_max_body_bytes: int = 1024 * 1024
    pay_notify_max_body_bytes: int = 16 * 1024
    upload_variant_widths: list[int] = Field(default_factory=lambda: [750, 375, 150])

    idempotency_ttl_seconds: int = 24 * 3600

    # --- blindbox: a draw stream entry pending this long on a dead consumer is claimed by
    # another; a sold-out series is answered without Redis this long; the give-back
    # finisher and the reconciler run this often.
    blindbox_claim_idle_seconds: int = 30
    blindbox_sold_out_cache_seconds: float = 1.0
    blindbox_give_back_interval_seconds: float = 60.0
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
    # fair sales: the booking reminder (a subscribe message) goes out this long before
    # the start; no template id, no reminders
    seckill_booking_template_id: str = ""
    seckill_reminder_lead_seconds: int = 5 * 60
    seckill_reminder_page: str = "pages/seckill/index"

    # pointsmall: redemption-stream entries pending this long on a (dead) consumer are
    # claimed by another; the reconciler runs this often.
    pointsmall_claim_idle_seconds: int = 30
    pointsmall_reconcile_interval_seconds: float = 30.0
    # points + cash redemptions not paid this long after the consumer wrote them are
    # released (points back, units back); the expiry job looks this often
    pointsmall_payment_seconds: int = Field(default=15 * 60, ge=60, le=24 * 3600)
    pointsmall_expire_interval_seconds: float = 15.0

    # --- coupons and the touch cap ---
    # relative validity of a new template unless ops set another (calendar months)
    coupon_default_valid_months: int = 3
    # ops give a pack to at most this many members in one request (by id and/or a tag
    # or level); more go out as a segment campaign, which the campaign job runs
    gift_pack_issue_max: int = 1000
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
    # fetch platform certificates from /v3/certificates: "auto" = when no WeChat Pay
    # public key is configured (certificate mode), "on", "off"
    wechatpay_platform_cert_download: Literal["auto", "on", "off"] = "auto"
    # the CA a fetched platform certificate must be issued by (Tenpay.com Root CA); unset:
    # trusted because it opened with the APIv3 key and signed its own answer
    wechatpay_platform_ca_path: Path | None = None
    wechatpay_cert_refresh_seconds: float = 6 * 3600.0
    # yesterday's trade and refund bills are fetched after this Shanghai hour (WeChat makes
    # them from 9:00 and advises 10:00 or later); a bill file larger than this is refused
    wechatpay_bill_hour: int = Field(default=10, ge=0, le=23)
    wechatpay_bill_max_bytes: int = 200 * 1024 * 1024
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

    _generated_secret: str | None = PrivateAttr(default=None)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)  # ValueError names the bad entry
        return value

    def signing_key(self) -> str:
        """MALL_SECRET_KEY, or out of production the random secret of the data folder."""
        if self.secret_key and self.secret_key != DEFAULT_SECRET:
            return self.secret_key
        if self.env == "production":
            raise ConfigError("refusing to sign tokens: MALL_SECRET_KEY is not set")
        if self._generated_secret is None:
            self._generated_secret = _data_dir_secret(self.data_dir / SECRET_FILE)
        return self._generated_secret

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
    def consumer_tasks(self) -> int:
        """`stream_consumer_tasks`, or its default for the database."""
        if self.stream_consumer_tasks is not None:
            return self.stream_consumer_tasks
        return 1 if self.is_sqlite else 2

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
        weak = weak_secret(self.secret_key)
        if weak:
            problems.append(f"MALL_SECRET_KEY {weak} (make one with `openssl rand -hex 32`)")
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


def weak_secret(secret: str) -> str | None:
    """Why `secret` is unfit to sign production tokens, or None. A heuristic floor, not a
    proof: long enough, not the old public default, not a repeated pattern, and an
    estimated entropy (length x Shannon entropy of its characters) of MIN_SECRET_BITS."""
    if not secret:
        return "is not set"
    if secret == DEFAULT_SECRET:
        return "is the public default"
    if len(secret) < MIN_SECRET_LENGTH:
        return f"is shorter than {MIN_SECRET_LENGTH} characters"
    if (secret + secret).find(secret, 1) < len(secret):
        return "is a repeated pattern"
    counts = Counter(secret)
    n = len(secret)
    per_char = -sum(c / n * math.log2(c / n) for c in counts.values())
    if len(counts) < 8 or per_char * n < MIN_SECRET_BITS:
        return "is too predictable (too few different characters)"
    return None


def _data_dir_secret(path: Path) -> str:
    """The random secret kept at `path`, made on first use. Several processes may start at
    once: the secret is written to a private temporary file and linked into place, so the
    first link wins and every process reads the same secret."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret_key.")  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(secrets.token_urlsafe(48) + "\n")
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, path)
                log.info("made a random signing secret in %s", path)
            except FileExistsError:
                pass  # another process made it first
        finally:
            os.unlink(tmp)
        text = path.read_text(encoding="utf-8").strip()
    if len(text) < MIN_SECRET_LENGTH:
        raise ConfigError(f"{path} holds no usable secret; delete it to make a new one")
    if path.stat().st_mode & 0o077:
        log.warning("%s was readable by other users; made it private (0600)", path)
        path.chmod(0o600)
    return text


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
    """The source tree (pyproject.toml, docker/, tests/): only in a checkout. The files
    mall serves are found with static_folder() and i18n.locale_dir(), installed or not."""
    return Path(__file__).resolve().parent.parent


def static_folder() -> Path:
    """The ops console and the vendored docs assets. In the source tree `mall/_static` is
    a link to the top-level static/ folder; the wheel carries it as a real folder."""
    return Path(__file__).resolve().parent / "_static"


# How `mall serve` runs uvicorn; `mall bench` serves its bare reference app the same way.
UVICORN_OPTIONS: dict[str, Any] = {
    "log_level": "info",
    "access_log": False,
    # uvloop and httptools when installed (they are dependencies)
    "loop": "auto",
    "http": "auto",
    # the client address is decided by mall.kit.clientip (MALL_TRUSTED_PROXIES);
    # uvicorn would otherwise believe X-Forwarded-For from any local peer
    "proxy_headers": False,
}
