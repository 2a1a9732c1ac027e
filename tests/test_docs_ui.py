"""/docs and /redoc load Swagger UI and ReDoc from this site (static/vendor/), never from a
CDN: they must work offline and in mainland China."""

from __future__ import annotations

import hashlib
import re

import httpx
import pytest
from fastapi import FastAPI

from mall import docs_ui
from mall.config import static_folder

_ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


def _asset_urls(html: str) -> list[str]:
    return _ASSET.findall(html)


async def test_docs_pages_use_only_local_assets(client: httpx.AsyncClient) -> None:
    expected = {
        "/docs": {docs_ui.SWAGGER_JS, docs_ui.SWAGGER_CSS, docs_ui.FAVICON},
        "/redoc": {docs_ui.REDOC_JS, docs_ui.FAVICON},
    }
    for page, assets in expected.items():
        r = await client.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "/openapi.json" in r.text
        # what the scripts themselves would fetch (ReDoc's footer logo) stays blocked
        assert "img-src 'self' data:" in r.headers["content-security-policy"]
        # nothing from another host: no CDN, no Google Fonts, no validator badge
        assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}", r.text, re.I), r.text
        urls = _asset_urls(r.text)
        assert set(urls) == assets, urls
        for url in urls:
            asset = await client.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 500, url
    js = await client.get(docs_ui.SWAGGER_JS)
    assert "javascript" in js.headers["content-type"] and "SwaggerUIBundle" in js.text
    css = await client.get(docs_ui.SWAGGER_CSS)
    assert css.headers["content-type"].startswith("text/css")
    redoc = await client.get(docs_ui.REDOC_JS)
    assert "javascript" in redoc.headers["content-type"] and "spec-url" in redoc.text
    assert (await client.get("/openapi.json")).status_code == 200


def _http(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.mark.nodb
async def test_the_app_s_docs_urls_are_kept() -> None:
    """A moved page stays where the app put it; a page turned off stays off."""
    moved = FastAPI(docs_url="/api-docs", redoc_url=None)
    docs_ui.install(moved)
    async with _http(moved) as http:
        page = await http.get("/api-docs")
        assert page.status_code == 200 and docs_ui.SWAGGER_JS in page.text
        assert "cdn.jsdelivr.net" not in page.text
        assert (await http.get("/docs")).status_code == 404
        assert (await http.get("/redoc")).status_code == 404
    paths = [getattr(route, "path", None) for route in moved.router.routes]
    assert paths.count("/api-docs") == 1

    off = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    docs_ui.install(off)
    async with _http(off) as http:
        assert (await http.get("/docs")).status_code == 404
        assert (await http.get("/redoc")).status_code == 404


@pytest.mark.nodb
def test_vendored_files_match_their_recorded_checksums() -> None:
    vendor = static_folder() / "vendor"
    readme = (vendor / "README.md").read_text(encoding="utf-8")
    recorded = dict(
        (name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.M)
    )
    served = {url.rsplit("/", 1)[1] for url in (docs_ui.SWAGGER_JS, docs_ui.SWAGGER_CSS)}
    served |= {url.rsplit("/", 1)[1] for url in (docs_ui.FAVICON, docs_ui.REDOC_JS)}
    assert set(recorded) == served
    for name, digest in recorded.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
