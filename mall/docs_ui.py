"""/docs (Swagger UI) and /redoc (ReDoc) from the vendored assets under /static/vendor/
(static/vendor/README.md): FastAPI's own pages load them from jsDelivr and Google Fonts,
so they are blank offline and unreliable in mainland China.

install() swaps FastAPI's two pages for the same pages with local asset URLs, at the
same paths: whatever the app was built with (a docs URL moved or turned off, e.g. in
production) still holds."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.routing import Route

VENDOR = "/static/vendor"
SWAGGER_JS = f"{VENDOR}/swagger-ui-bundle.js"
SWAGGER_CSS = f"{VENDOR}/swagger-ui.css"
FAVICON = f"{VENDOR}/favicon-32x32.png"
REDOC_JS = f"{VENDOR}/redoc.standalone.js"
# the pages fetch only from this site: ReDoc's footer would show a logo from its CDN
# (hidden when it does not load), and "Try it out" calls this API only
CSP = "img-src 'self' data:; font-src 'self' data:; connect-src 'self'"


def install(app: FastAPI) -> None:
    openapi_url = app.openapi_url
    pages = {url for url in (app.docs_url, app.redoc_url) if url}
    if not openapi_url or not pages:
        return
    app.router.routes[:] = [
        route
        for route in app.router.routes
        if not (isinstance(route, Route) and route.path in pages)
    ]

    def root(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    if app.docs_url:

        async def swagger_ui(request: Request) -> HTMLResponse:
            oauth2_redirect = app.swagger_ui_oauth2_redirect_url
            page = get_swagger_ui_html(
                openapi_url=root(request) + openapi_url,
                title=f"{app.title} - Swagger UI",
                swagger_js_url=root(request) + SWAGGER_JS,
                swagger_css_url=root(request) + SWAGGER_CSS,
                swagger_favicon_url=root(request) + FAVICON,
                oauth2_redirect_url=root(request) + oauth2_redirect if oauth2_redirect else None,
                init_oauth=app.swagger_ui_init_oauth,
                # no badge fetched from validator.swagger.io
                swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},
            )
            page.headers["Content-Security-Policy"] = CSP
            return page

        app.add_route(app.docs_url, swagger_ui, include_in_schema=False)

    if app.redoc_url:

        async def redoc(request: Request) -> HTMLResponse:
            page = get_redoc_html(
                openapi_url=root(request) + openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=root(request) + REDOC_JS,
                redoc_favicon_url=root(request) + FAVICON,
                with_google_fonts=False,
            )
            page.headers["Content-Security-Policy"] = CSP
            return page

        app.add_route(app.redoc_url, redoc, include_in_schema=False)
