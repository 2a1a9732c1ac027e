"""Settings come from MALL_* variables and .env; production refuses unsafe settings,
both in Settings.check_safe and in `mall serve`, before anything starts."""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mall.config import DEFAULT_SECRET, SECRET_FILE, ConfigError, Settings, weak_secret

pytestmark = pytest.mark.nodb

SAFE_PRODUCTION: dict[str, str] = {
    "MALL_ENV": "production",
    "MALL_SECRET_KEY": "Qm9yaW5nIGJ1dCByYW5kb20tbG9va2luZyBzZWNyZXQgZm9y",
    "MALL_DEV_LOGIN": "false",
    "MALL_DATABASE_URL": "postgres://mall:pw@db.internal:5432/mall",
    "MALL_REDIS_URL": "redis://cache.internal:6379/0",
    "MALL_WECHAT_APPID": "wx1234567890abcdef",
    "MALL_WECHAT_SECRET": "0123456789abcdef0123456789abcdef",
}

# one unsafe change each -> the variable the refusal must name
UNSAFE: dict[str, tuple[dict[str, str], str]] = {
    "default secret": ({"MALL_SECRET_KEY": DEFAULT_SECRET}, "MALL_SECRET_KEY"),
    "short secret": ({"MALL_SECRET_KEY": "short"}, "MALL_SECRET_KEY"),
    "no secret": ({"MALL_SECRET_KEY": ""}, "MALL_SECRET_KEY"),
    "one character": ({"MALL_SECRET_KEY": "a" * 32}, "MALL_SECRET_KEY"),
    "a repeated word": ({"MALL_SECRET_KEY": "password" * 5}, "MALL_SECRET_KEY"),
    "mostly one character": ({"MALL_SECRET_KEY": "s3cret-" + "x" * 40}, "MALL_SECRET_KEY"),
    "dev login on": ({"MALL_DEV_LOGIN": "true"}, "MALL_DEV_LOGIN"),
    "sqlite by default": ({"MALL_DATABASE_URL": ""}, "MALL_DATABASE_URL"),
    "sqlite url": ({"MALL_DATABASE_URL": "sqlite:///tmp/mall.sqlite3"}, "MALL_DATABASE_URL"),
    "no redis": ({"MALL_REDIS_URL": ""}, "MALL_REDIS_URL"),
    "no wechat app": ({"MALL_WECHAT_APPID": ""}, "MALL_WECHAT_APPID"),
}
VARIABLES = {"MALL_SECRET_KEY", "MALL_DEV_LOGIN", "MALL_DATABASE_URL", "MALL_REDIS_URL"}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No MALL_* variables from the caller's shell, and a cwd without a .env."""
    for name in list(os.environ):
        if name.startswith("MALL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _settings(env: dict[str, str]) -> Settings:
    kwargs: dict[str, Any] = {k.removeprefix("MALL_").lower(): v for k, v in env.items()}
    for key in ("database_url", "redis_url"):
        if kwargs.get(key) == "":
            kwargs[key] = None
    return Settings(_env_file=None, **kwargs)  # type: ignore[call-arg]


def test_environment_variables_are_read(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALL_PORT", "9123")
    monkeypatch.setenv("MALL_WECHAT_APPID", "wx_from_env")
    monkeypatch.setenv("MALL_DEV_LOGIN", "false")
    monkeypatch.setenv("MALL_UPLOAD_VARIANT_WIDTHS", "[640, 320]")
    monkeypatch.setenv("PORT", "1")  # unprefixed names are not ours
    settings = Settings()
    assert settings.port == 9123
    assert settings.wechat_appid == "wx_from_env"
    assert settings.dev_login is False and settings.dev_login_enabled is False
    assert settings.upload_variant_widths == [640, 320]


def test_dotenv_is_read_and_environment_wins(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / ".env").write_text(
        "MALL_WECHAT_API_BASE=http://127.0.0.1:9999\n"
        "MALL_WECHAT_APPID=wx_from_dotenv\n"
        "MALL_STAFF_MAX_FAILED_LOGINS=3\n"
        "PORT=1\n"
    )
    monkeypatch.setenv("MALL_WECHAT_APPID", "wx_from_env")
    settings = Settings()
    assert settings.wechat_api_base == "http://127.0.0.1:9999"
    assert settings.staff_max_failed_logins == 3
    assert settings.wechat_appid == "wx_from_env"
    assert settings.port == 8000


def test_defaults_are_fine_outside_production(clean_env: Path) -> None:
    settings = Settings()
    assert settings.env == "development" and settings.is_sqlite and settings.dev_login_enabled
    settings.check_safe()  # no error


def test_safe_production_settings_pass(clean_env: Path) -> None:
    settings = _settings(SAFE_PRODUCTION)
    settings.check_safe()
    assert not settings.dev_login_enabled


@pytest.mark.parametrize("case", list(UNSAFE))
def test_production_refuses_each_unsafe_setting(clean_env: Path, case: str) -> None:
    change, variable = UNSAFE[case]
    settings = _settings({**SAFE_PRODUCTION, **change})
    with pytest.raises(ConfigError) as refused:
        settings.check_safe()
    message = str(refused.value)
    assert message.startswith("refusing to start")
    assert variable in message
    # only the broken setting is blamed
    assert all(v not in message for v in VARIABLES - {variable})


def test_random_secrets_pass_the_production_check() -> None:
    for _ in range(2000):
        assert weak_secret(secrets.token_hex(16)) is None  # `openssl rand -hex 16`
        assert weak_secret(secrets.token_urlsafe(32)) is None


def test_outside_production_a_random_secret_is_made_once_and_kept(
    clean_env: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    settings = _settings({"MALL_SECRET_KEY": "", "MALL_DATA_DIR": str(data)})
    key = settings.signing_key()
    assert key != DEFAULT_SECRET and weak_secret(key) is None
    kept = data / SECRET_FILE
    assert kept.read_text().strip() == key
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    # the next start (another process) reads the same secret: tokens stay valid
    assert _settings({"MALL_DATA_DIR": str(data)}).signing_key() == key
    # the public constant of old releases counts as no secret
    assert (
        _settings({"MALL_SECRET_KEY": DEFAULT_SECRET, "MALL_DATA_DIR": str(data)}).signing_key()
        == key
    )
    # another data folder, another secret
    assert _settings({"MALL_DATA_DIR": str(tmp_path / "other")}).signing_key() != key
    # a secret that is set is used as it is, and nothing is written for it
    mine = _settings({"MALL_SECRET_KEY": "mine-" + "z" * 30, "MALL_DATA_DIR": str(tmp_path / "x")})
    assert mine.signing_key() == "mine-" + "z" * 30
    assert not (tmp_path / "x").exists()


def test_processes_starting_at_once_agree_on_one_secret(clean_env: Path, tmp_path: Path) -> None:
    def start(_i: int) -> str:
        return _settings({"MALL_DATA_DIR": str(tmp_path)}).signing_key()

    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(start, range(16)))
    assert len(keys) == 1
    assert [p.name for p in tmp_path.iterdir()] == [SECRET_FILE]  # no temporary files left


def test_a_readable_secret_file_is_made_private(clean_env: Path, tmp_path: Path) -> None:
    kept = tmp_path / SECRET_FILE
    kept.write_text("r" + secrets.token_hex(24) + "\n")
    kept.chmod(0o644)
    assert _settings({"MALL_DATA_DIR": str(tmp_path)}).signing_key() == kept.read_text().strip()
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    kept.write_text("short\n")
    with pytest.raises(ConfigError, match="delete it"):
        _settings({"MALL_DATA_DIR": str(tmp_path)}).signing_key()


def test_production_never_makes_a_secret(clean_env: Path, tmp_path: Path) -> None:
    settings = _settings({**SAFE_PRODUCTION, "MALL_SECRET_KEY": "", "MALL_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="MALL_SECRET_KEY"):
        settings.signing_key()
    assert not any(tmp_path.iterdir())


def test_trusted_proxies_read_as_a_list_or_comma_separated(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MALL_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")
    assert Settings().trusted_proxies == ["10.0.0.0/8", "127.0.0.1"]
    monkeypatch.setenv("MALL_TRUSTED_PROXIES", '["::1"]')
    assert Settings().trusted_proxies == ["::1"]
    monkeypatch.setenv("MALL_TRUSTED_PROXIES", "not-an-address")
    with pytest.raises(ValueError):
        Settings()


def test_dev_login_is_off_in_production_whatever_the_flag(clean_env: Path) -> None:
    settings = _settings({**SAFE_PRODUCTION, "MALL_WECHAT_APPID": "", "MALL_DEV_LOGIN": "true"})
    assert not settings.dev_login_enabled


async def _serve(env: dict[str, str], cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mall.cli",
        "serve",
        "--port",
        "0",
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("mall serve did not refuse; it kept running") from None
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_mall_serve_refuses_unsafe_production_before_starting(tmp_path: Path) -> None:
    # one process for all three (each alone is covered above): it is the slow part
    problems = ("default secret", "dev login on", "sqlite by default")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALL_")}
    env.update(SAFE_PRODUCTION, MALL_DATA_DIR=str(tmp_path / "data"))
    for problem in problems:
        env.update(UNSAFE[problem][0])
    env = {k: v for k, v in env.items() if v != ""}
    code, stderr = await _serve(env, tmp_path)
    assert code != 0, stderr
    assert "refusing to start" in stderr, stderr
    for problem in problems:
        assert UNSAFE[problem][1] in stderr, stderr
    assert "MALL_REDIS_URL" not in stderr  # blames what is wrong, not everything
    assert "Traceback" not in stderr
    # refused before anything started: no data folder, SQLite file or Redis socket
    assert not (tmp_path / "data").exists()
