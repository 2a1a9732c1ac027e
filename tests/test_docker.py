"""docker/: the compose file names every setting production needs, and every MALL_*
variable it or .env.example names is a real setting. (No Docker engine is needed: the
files are parsed and the app's own Settings judge the result.)"""

from __future__ import annotations

import re
from fnmatch import fnmatch
from typing import Any

import pytest
import yaml

from mall.config import ConfigError, Settings, project_root

pytestmark = pytest.mark.nodb

DOCKER = project_root() / "docker"
# what Settings.check_safe demands in production, by variable
PRODUCTION_NEEDS = (
    "MALL_ENV",
    "MALL_SECRET_KEY",
    "MALL_DATABASE_URL",
    "MALL_REDIS_URL",
    "MALL_WECHAT_APPID",
    "MALL_WECHAT_SECRET",
    "MALL_DEV_LOGIN",
)
# stand-ins for the secrets a deployer writes into docker/.env
DEPLOYER_VALUES = {
    "MALL_SECRET_KEY": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "MALL_WECHAT_APPID": "wx0123456789abcdef",
    "MALL_WECHAT_SECRET": "s" * 32,
    "POSTGRES_PASSWORD": "pg-password",
    "SITE_DOMAIN": "api.example.com",
    "ACME_EMAIL": "ops@example.com",
}
_SETTING_LINE = re.compile(r"^(#\s*)?(MALL_[A-Z0-9_]+)=(.*)$")
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _env_example_text() -> str:
    return (DOCKER / ".env.example").read_text(encoding="utf-8")


def _env_example() -> list[tuple[int, bool, str, str]]:
    """(line number, commented out, name, value) of each MALL_* line in .env.example."""
    found = []
    lines = _env_example_text().splitlines()
    for number, line in enumerate(lines):
        match = _SETTING_LINE.match(line.strip())
        if match:
            found.append((number, bool(match.group(1)), match.group(2), match.group(3)))
    return found


def _env_example_values() -> dict[str, str]:
    """Uncommented assignments of .env.example (any name), as compose would read them."""
    values = {}
    for line in _env_example_text().splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and not name.startswith("#"):
            values[name.strip()] = value.strip()
    return values


def _interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, with `values` as docker/.env."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = values.get(name)
        if op and op.startswith(":") and value == "":
            value = None
        if value is None and op and op.endswith("-"):
            return arg
        if value is None:
            raise AssertionError(f"compose needs ${{{name}}}: {arg or 'unset'}")
        return value

    return _INTERPOLATION.sub(one, text)


def _environment(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def _resolved_environment(name: str, values: dict[str, str]) -> dict[str, str]:
    env = _environment(_compose()["services"][name])
    return {k: _interpolate(v, values) for k, v in env.items()}


def _deployed_values() -> dict[str, str]:
    values = _env_example_values()
    values.update(DEPLOYER_VALUES)
    return values


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as the container would build them from exactly `env`."""
    import os

    for key in list(os.environ):
        if key.startswith("MALL_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_compose_has_app_worker_postgres_and_redis() -> None:
    services = _compose()["services"]
    assert {"app", "worker", "postgres", "redis"} <= set(services)
    app, worker = services["app"], services["worker"]
    # one image, two commands
    assert app["build"] == worker["build"]
    assert app["build"]["dockerfile"] == "docker/Dockerfile"
    assert app.get("image") == worker.get("image")
    assert app["command"][:2] == ["mall", "serve"]
    assert "0.0.0.0" in app["command"]
    assert worker["command"] == ["mall", "worker"]

    assert str(services["postgres"]["image"]).startswith("postgres:16")
    redis = services["redis"]
    assert str(redis["image"]).startswith("redis:7")
    command = redis["command"]
    assert "--appendonly" in command and command[command.index("--appendonly") + 1] == "yes"


def test_compose_keeps_data_in_named_volumes() -> None:
    compose = _compose()
    declared = set(compose.get("volumes") or {})

    def mounted(service: str, target: str) -> str:
        for volume in compose["services"][service].get("volumes", []):
            source, _sep, inside = str(volume).partition(":")
            if inside.split(":")[0] == target:
                assert source in declared, f"{service}: {source} is not a named volume"
                return source
        raise AssertionError(f"{service} keeps no volume at {target}")

    mounted("postgres", "/var/lib/postgresql/data")
    mounted("redis", "/data")
    app_data = mounted("app", "/data")
    assert mounted("worker", "/data") == app_data
    assert _environment(compose["services"]["app"])["MALL_DATA_DIR"] == "/data"


def test_app_and_worker_name_every_setting_production_needs() -> None:
    for name in ("app", "worker"):
        env = _environment(_compose()["services"][name])
        missing = [key for key in PRODUCTION_NEEDS if key not in env]
        assert not missing, f"{name} does not set {missing}"
        assert env["MALL_ENV"] == "production"
        assert env["MALL_DEV_LOGIN"] == "false"
        assert env["MALL_REDIS_URL"] == "redis://redis:6379/0"
        assert env["MALL_DATABASE_URL"].startswith("postgres://")
        assert "@postgres:5432/" in env["MALL_DATABASE_URL"]
    app = _environment(_compose()["services"]["app"])
    assert app["MALL_RUN_JOBS_IN_PROCESS"] == "false"


@pytest.mark.parametrize("service", ["app", "worker"])
def test_compose_environment_passes_the_production_check(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _resolved_environment(service, _deployed_values())
    settings = _settings_from(env, monkeypatch)
    settings.check_safe()  # raises ConfigError naming what is wrong
    assert settings.env == "production"
    assert not settings.is_sqlite
    assert settings.redis_url == "redis://redis:6379/0"
    assert not settings.dev_login_enabled
    assert settings.run_jobs_in_process is False


@pytest.mark.parametrize("dropped", PRODUCTION_NEEDS[1:])
def test_each_named_setting_is_one_production_needs(
    dropped: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without any one of them the app refuses to start (so the list above is real)."""
    env = _resolved_environment("app", _deployed_values())
    del env[dropped]
    settings = _settings_from(env, monkeypatch)
    with pytest.raises(ConfigError):
        settings.check_safe()


def test_secrets_must_be_supplied_not_defaulted() -> None:
    """compose stops with a message instead of starting with an empty secret."""
    values = _env_example_values()  # as copied, before the deployer fills it in
    for secret in ("MALL_SECRET_KEY", "MALL_WECHAT_APPID", "MALL_WECHAT_SECRET"):
        assert values.get(secret) == "", f".env.example must leave {secret} empty"
        with pytest.raises(AssertionError, match=secret):
            _resolved_environment("app", {**_deployed_values(), secret: ""})


def test_every_interpolated_variable_is_documented_in_env_example() -> None:
    text = (DOCKER / "compose.yaml").read_text(encoding="utf-8")
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", _env_example_text(), re.M))
    used = {m.group(1) for m in _INTERPOLATION.finditer(text)}
    assert used, "compose.yaml interpolates nothing from docker/.env?"
    undocumented = sorted(used - documented)
    assert not undocumented, f"set in compose.yaml but not in .env.example: {undocumented}"


def test_every_mall_variable_named_is_a_real_setting() -> None:
    fields = set(Settings.model_fields)
    for path in (DOCKER / "compose.yaml", DOCKER / ".env.example", DOCKER / "Dockerfile"):
        named = set(re.findall(r"\bMALL_([A-Z0-9_]+)", path.read_text(encoding="utf-8")))
        unknown = sorted(f"MALL_{n}" for n in named if n.lower() not in fields)
        assert not unknown, f"{path.name} names settings that do not exist: {unknown}"


def test_env_example_lists_every_setting_with_a_comment() -> None:
    entries = _env_example()
    listed = {name for _n, _c, name, _v in entries}
    missing = sorted(
        f"MALL_{f.upper()}" for f in Settings.model_fields if f"MALL_{f.upper()}" not in listed
    )
    assert not missing, f"docker/.env.example does not list: {missing}"
    lines = _env_example_text().splitlines()
    for number, _commented, name, _value in entries:
        # the line above is a description, or another setting of the same described group
        above = number - 1
        while above >= 0 and _SETTING_LINE.match(lines[above].strip()):
            above -= 1
        assert above >= 0 and lines[above].startswith("#") and lines[above].strip("# -"), (
            f"{name} in .env.example has no comment above it"
        )


def test_env_example_shows_the_real_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each `# MALL_X=value` line parses as a setting and equals the default."""
    defaults = _settings_from({}, monkeypatch)
    wrong = []
    for _number, commented, name, value in _env_example():
        if not commented:
            continue
        field = name[len("MALL_") :].lower()
        expected = getattr(defaults, field)
        if value == "" and expected in (None, ""):
            continue
        try:
            parsed = getattr(_settings_from({name: value}, monkeypatch), field)
        except Exception as exc:
            wrong.append(f"{name}={value}: {exc}")
            continue
        if parsed != expected:
            wrong.append(f"{name}={value} but the default is {expected!r}")
    assert not wrong, "\n".join(wrong)


def test_only_the_tls_proxy_is_published() -> None:
    """WeChat calls the API and the pay notifications over HTTPS only: Caddy terminates TLS
    in front of the app, and nothing else is reachable from outside."""
    services = _compose()["services"]
    proxy = services["proxy"]
    assert str(proxy["image"]).startswith("caddy:2")
    published = {str(port).split("/")[0] for port in proxy["ports"]}
    assert {"80:80", "443:443"} <= published  # 80: the ACME challenge and the redirect
    assert [name for name, svc in services.items() if svc.get("ports")] == ["proxy"]
    assert "8000" in [str(port) for port in services["app"].get("expose", [])]

    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in proxy["volumes"]}
    assert mounts["/etc/caddy/Caddyfile"] == "./Caddyfile"
    assert mounts["/data"] in (_compose().get("volumes") or {}), "certificates must persist"
    caddyfile = (DOCKER / "Caddyfile").read_text(encoding="utf-8")
    assert re.search(r"^\{\$SITE_DOMAIN\}\s*\{", caddyfile, re.M), "the site is SITE_DOMAIN"
    assert re.search(r"^\s*reverse_proxy app:8000\s*$", caddyfile, re.M)
    # Caddy's default X-Forwarded-For (the client's address) reaches the app untouched
    assert not re.search(r"header_up\s+-?X-Forwarded-For", caddyfile, re.I)
    assert "tls internal" not in caddyfile, "a public certificate, not Caddy's own CA"

    env = _resolved_environment("proxy", _deployed_values())
    assert env["SITE_DOMAIN"] == "api.example.com"
    with pytest.raises(AssertionError, match="SITE_DOMAIN"):
        _resolved_environment("proxy", {**_deployed_values(), "SITE_DOMAIN": ""})


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        if line.strip():
            name, _sep, rest = line.strip().partition(" ")
            found.append((name.upper(), rest.strip()))
    return found


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for name, rest in _dockerfile():
        if name == "FROM":
            stages.append([])
        stages[-1].append((name, rest))
    return stages


def test_image_installs_the_built_wheel_not_the_source_tree() -> None:
    stages = _stages()
    assert len(stages) >= 2, "a build stage makes the wheel, the runtime stage installs it"
    build, runtime = stages[0], stages[-1]
    alias = build[0][1].split()[-1]
    assert build[0][1].lower().startswith("python:3.11-slim as "), build[0]
    runs = [rest for name, rest in build if name == "RUN"]
    assert any(re.search(r"pip wheel .*--no-deps", run) for run in runs), runs
    installs = [
        run for stage in stages for name, run in stage if name == "RUN" and "pip install" in run
    ]
    assert installs and all(re.search(r"/wheels/mall-\S*\.whl", run) for run in installs), installs
    assert not any(re.search(r"(^|\s)(-e|--editable)\s", run) for run in installs), installs
    # the runtime stage takes only what the build stage installed: no source, no editable
    copies = [rest for name, rest in runtime if name in ("COPY", "ADD")]
    assert copies and all(rest.startswith(f"--from={alias} ") for rest in copies), copies
    assert all(name != "ADD" for name, _rest in runtime)
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    assert "build" in ignore, "a stale local build/ must not leak into the wheel"


def test_dockerfile_runs_unprivileged_and_checks_health() -> None:
    instructions = _dockerfile()
    by_name: dict[str, list[str]] = {}
    for name, rest in instructions:
        by_name.setdefault(name, []).append(rest)
    assert all(base.startswith("python:3.11-slim") for base in by_name["FROM"])
    assert by_name["FROM"][-1] == "python:3.11-slim"
    users = by_name.get("USER", [])
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    user_at = max(i for i, (name, _r) in enumerate(instructions) if name == "USER")
    cmd_at = max(i for i, (name, _r) in enumerate(instructions) if name == "CMD")
    assert user_at < cmd_at
    healthchecks = by_name.get("HEALTHCHECK", [])
    # ready means the database and Redis answer, not only that the process is up
    assert healthchecks and "/readyz" in healthchecks[-1] and "/healthz" not in healthchecks[-1]
    assert '"mall", "serve"' in by_name["CMD"][-1] and "0.0.0.0" in by_name["CMD"][-1]
    assert any("pip install" in run for run in by_name.get("RUN", []))
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    assert ".env" in ignore and ".mall-data" in ignore, "secrets and local data stay out"


# --- pinned versions -------------------------------------------------------------------

CONSTRAINTS = DOCKER / "constraints.txt"


def _pins() -> dict[str, str]:
    """{normalized name: version} of docker/constraints.txt; every line is `name==version`."""
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name), f"not a pin: {line!r}"
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), f"not an exact version: {line!r}"
        key = canonicalize_name(name)
        assert key not in pins, f"{name} is pinned twice"
        pins[key] = version
    return pins


def _project_requirements() -> list[Any]:
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((project_root() / "pyproject.toml").read_text(encoding="utf-8"))
    listed = (
        project["project"]["dependencies"] + project["project"]["optional-dependencies"]["test"]
    )
    return [Requirement(text) for text in listed]


def test_constraints_pin_every_dependency_within_its_floor() -> None:
    from packaging.utils import canonicalize_name

    pins = _pins()
    assert len(pins) > 30, "the constraints file should pin the whole resolved set"
    for requirement in _project_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in docker/constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{requirement.name}=={pins[name]} is outside pyproject's {requirement}"
        )


def test_image_and_ci_install_the_pinned_versions_and_the_readme_does_not() -> None:
    installs = [rest for name, rest in _dockerfile() if name == "RUN" and "pip install" in rest]
    assert installs and all("-c docker/constraints.txt" in run for run in installs), installs
    ci = (project_root() / ".ci" / "run").read_text(encoding="utf-8")
    ci_installs = [line for line in ci.splitlines() if re.search(r"\bpip install .*-e ", line)]
    assert ci_installs and all("-c docker/constraints.txt" in line for line in ci_installs)
    # the README's command stays the plain one
    readme = (project_root() / "README.md").read_text(encoding="utf-8")
    assert "pip install -e '.[test]' && pytest" in readme
    # the build context does not leave the file out of the image
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    for entry in ignore:
        pattern = entry.rstrip("/")
        assert not fnmatch("docker/constraints.txt", pattern) and pattern != "docker", entry
