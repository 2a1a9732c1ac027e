"""What the service shows without a login: production keeps its API description and its
metrics to itself unless told otherwise, and every path serving the ops console sends
the console's security headers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from mall.app import create_app
from mall.config import Settings, set_settings

pytestmark = pytest.mark.nodb

AppClient = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
DOCS = ("/docs", "/redoc", "/openapi.json")


@pytest.fixture
def app_client(settings: Settings) -> AppClient:
    """`async with app_client(env="production", ...) as c`: a client of an app built with
    these changes to the test settings (the session's settings are restored at once)."""

    @asynccontextmanager
    async def make(**changes: Any) -> AsyncIterator[httpx.AsyncClient]:
        try:
            app = create_app(settings.model_copy(update=changes), manage_resources=False)
        finally:
            set_settings(settings)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c

    return make


async def test_production_hides_the_api_description(app_client: AppClient) -> None:
    async with app_client(env="production") as c:
        for path in DOCS:
            r = await c.get(path)
            assert r.status_code == 404, path
            assert r.json()["error"]["code"] == "NOT_FOUND"
        assert (await c.get("/healthz")).status_code == 200


async def test_production_shows_it_when_asked_and_elsewhere_always(
    app_client: AppClient,
) -> None:
    for changes in ({"env": "production", "public_docs": True}, {"env": "development"}):
        async with app_client(**changes) as c:
            for path in DOCS:
                assert (await c.get(path)).status_code == 200, (changes, path)
            assert "/api/v1/errors" in (await c.get("/openapi.json")).json()["paths"]


async def test_production_metrics_need_the_token(app_client: AppClient) -> None:
    async with app_client(env="production") as c:  # no token: not served at all
        r = await c.get("/metrics")
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
        assert (await c.get("/metrics", headers={"Authorization": "Bearer "})).status_code == 404

    token = "m" * 40
    async with app_client(env="production", metrics_token=SecretStr(token)) as c:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {token}"},
            {"Authorization": f"Bearer {token}x"},
        ):
            r = await c.get("/metrics", headers=headers)
            assert r.status_code == 401, headers
            assert r.json()["error"]["code"] == "UNAUTHORIZED"
            assert r.headers["www-authenticate"] == "Bearer"
            assert "mall_http_requests_total" not in r.text
        r = await c.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        assert "mall_http_requests_total" in r.text


async def test_metrics_outside_production_are_open_unless_a_token_is_set(
    app_client: AppClient,
) -> None:
    async with app_client(env="development") as c:
        assert (await c.get("/metrics")).status_code == 200
    async with app_client(env="development", metrics_token=SecretStr("t0ken")) as c:
        assert (await c.get("/metrics")).status_code == 401
        ok = await c.get("/metrics", headers={"Authorization": "bearer t0ken"})
        assert ok.status_code == 200


CONSOLE_PATHS = (
    "/admin",
    "/admin/",
    "/static/admin/index.html",
    "/static/admin/app.css",
    "/static/admin/js/main.js",
)


@pytest.mark.parametrize("env", ["production", "development"])
async def test_every_path_serving_the_console_sends_its_security_headers(
    app_client: AppClient, env: str
) -> None:
    async with app_client(env=env) as c:
        reference = (await c.get("/admin")).headers
        assert reference["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in reference["content-security-policy"]
        for path in CONSOLE_PATHS:
            r = await c.get(path)
            assert r.status_code == 200, path
            for name in (
                "content-security-policy",
                "x-frame-options",
                "x-content-type-options",
                "referrer-policy",
            ):
                assert r.headers.get(name) == reference[name], (path, name)
            assert r.headers["x-content-type-options"] == "nosniff"
        # the same page by either path
        page = await c.get("/static/admin/index.html")
        assert page.text == (await c.get("/admin")).text


async def test_uploaded_files_are_never_sniffed_or_active(
    app_client: AppClient, settings: Settings
) -> None:
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    (settings.uploads_dir / "exposure-probe.jpg").write_bytes(b"<html><script>1</script>")
    try:
        async with app_client() as c:
            r = await c.get("/static/uploads/exposure-probe.jpg")
            assert r.status_code == 200
            assert r.headers["content-type"] == "image/jpeg"
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["content-security-policy"] == "default-src 'none'; sandbox"
    finally:
        (settings.uploads_dir / "exposure-probe.jpg").unlink()
