"""create_app(): the one composition root. Lifespan opens the database, Redis and jobs."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mall import __version__, db, docs_ui, domains, errors, i18n, openapi
from mall import redis as mall_redis
from mall.config import Settings, get_settings, set_settings, static_folder
from mall.console import router as console_router
from mall.errors import (
    NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    SERVICE_UNAVAILABLE,
    UNAUTHORIZED,
    ErrorCode,
    MallError,
)
from mall.kit import heap
from mall.kit import metrics as node_metrics
from mall.kit.bodylimit import BodyLimit, Limit, LimitFor
from mall.kit.fastpath import FastPath
from mall.kit.headers import AddHeaders
from mall.kit.jobs import Runner
from mall.orders import service as orders_service
from mall.wallet import service as wallet_service
from mall.wechat import pay as wechat_pay

log = logging.getLogger("mall.app")

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "mall_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=REGISTRY
)
LATENCY = Histogram(
    "mall_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class RequestContext:
    """Pure ASGI middleware (cheap on hot paths): locale from Accept-Language, a
    request id, and Prometheus counts and latencies by route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        accept = None
        rid = None
        for name, value in scope["headers"]:
            if name == b"accept-language":
                accept = value.decode("latin-1")
            elif name == b"x-request-id":
                rid = _client_request_id(value)
        i18n.set_locale(i18n.negotiate(accept))
        rid = rid or os.urandom(16).hex()  # (uuid4's randomness, without the UUID object)
        scope.setdefault("state", {})["request_id"] = rid
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # label by route template (never the raw path) so label sets stay bounded
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            counter = _counters.get((method, template, status))
            if counter is None:
                counter = _counters[method, template, status] = REQUESTS.labels(
                    method, template, str(status)
                )
            timer = _timers.get((method, template))
            if timer is None:
                timer = _timers[method, template] = LATENCY.labels(method, template)
            counter.inc()
            timer.observe(time.perf_counter() - started)


# the metrics' children by label values (bounded like the labels): `labels()` takes a
# lock and builds a key on every call, a hot path's request need not
_counters: dict[tuple[str, str, int], Any] = {}
_timers: dict[tuple[str, str], Any] = {}


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _client_request_id(raw: bytes) -> str | None:
    """A caller's X-Request-ID, if it is a short safe token (it goes into headers and logs)."""
    text = raw.decode("latin-1")
    return text if _REQUEST_ID.fullmatch(text) else None


class MallApp(FastAPI):
    """FastAPI with `outer` middleware in front of the whole app, FastAPI's own error,
    body size and telemetry layers included (`add_middleware` puts a layer inside them):
    a hot route answered by the fast path pays for no layer it does not use, not even
    the per-request check of FastAPI's native telemetry (whether an OpenTelemetry
    provider is configured). The other routes reach FastAPI as before. Outermost first."""

    outer: Sequence[Callable[[ASGIApp], ASGIApp]] = ()
    _front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await super().__call__(scope, receive, send)
            return
        front = self._front
        if front is None:
            front = super().__call__
            for wrap in reversed(self.outer):
                front = wrap(front)
            self._front = front
        scope["app"] = self
        await front(scope, receive, send)


def create_app(settings: Settings | None = None, *, manage_resources: bool = True) -> FastAPI:
    """Build the app. With `manage_resources=False` the caller (tests) owns DB and Redis."""
    settings = set_settings(settings or get_settings())
    register_payment_handlers()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner: Runner | None = None
        if manage_resources:
            settings.check_safe()
            if not settings.redis_url:
                raise RuntimeError(
                    "MALL_REDIS_URL is not set (mall serve starts an embedded Redis)"
                )
            await db.init_db(settings, global_fallback=True)
            mall_redis.connect(settings.redis_url)
            if settings.run_jobs_in_process:
                runner = Runner(domains.jobs(), domains.consumers())
                runner.start()
            heap.freeze_startup_heap()
        try:
            yield
        finally:
            if runner is not None:
                await runner.close()
            if manage_resources:
                from mall.wechat import client as wechat_client

                await wechat_client.aclose()
                await mall_redis.close()
                await db.close_db()

    app = MallApp(
        title="mall",
        version=__version__,
        description=(
            "Backend for WeChat mini-program member malls. Money is integer fen, points are "
            'integers. Errors are `{"error": {"code", "message"}}` with a stable code '
            "(see `GET /api/v1/errors`) and a message localized by `Accept-Language`."
        ),
        lifespan=lifespan,
        # production publishes its API description only when asked to
        **_docs_urls(settings),
    )
    from mall.blindbox.router import FAST_ROUTES as BLINDBOX_FAST_ROUTES
    from mall.pointsmall.router import FAST_ROUTES as POINTSMALL_FAST_ROUTES
    from mall.seckill.router import FAST_ROUTES as SECKILL_FAST_ROUTES

    limits = body_limits(settings)
    fast_routes = [*SECKILL_FAST_ROUTES, *POINTSMALL_FAST_ROUTES, *BLINDBOX_FAST_ROUTES]
    # outermost, RequestContext (locale, id, metrics), then the body limit (a 413 is
    # localized and counted; the fast path's empty bodies are bounded too), then the hot
    # routes answered before FastAPI's own layers and routing
    app.outer = [
        RequestContext,
        lambda inner: BodyLimit(inner, limit_for=limits),
        lambda inner: FastPath(inner, routes=fast_routes),
    ]
    errors.install(app)
    docs_ui.install(app)  # /docs and /redoc from vendored assets, no CDN

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> dict[str, str]:
        """Database and Redis are reachable (on a Redis Cluster: every master says
        cluster_state:ok)."""
        checks = {
            "database": await _probe(db.ping_db),
            "redis": await _probe(mall_redis.check_ready),
        }
        if any(v != "ok" for v in checks.values()):
            raise MallError(SERVICE_UNAVAILABLE, **checks)  # type: ignore[arg-type]
        return {"status": "ok", **checks}

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def metrics(request: Request) -> Response:
        """Prometheus text: request counts and latencies by route, summed over the node's
        workers. With `MALL_METRICS_TOKEN` set it needs `Authorization: Bearer <token>`;
        production without one: 404."""
        token = settings.metrics_token.get_secret_value()
        if not token:
            if settings.env == "production":
                raise NOT_FOUND()
        elif not _bearer_is(request.headers.get("authorization"), token):
            return JSONResponse(
                MallError(UNAUTHORIZED).body(),
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return PlainTextResponse(node_metrics.latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/errors", tags=["health"])
    async def error_codes() -> list[dict[str, Any]]:
        """Every stable error code with its HTTP status and message in the request's language."""
        return [
            {"code": e.code, "status": e.status, "message": i18n.translate(e.message)}
            for e in sorted(_all_error_codes(), key=lambda e: e.code)
        ]

    for module in domains.domain_modules("router"):
        app.include_router(module.router)
    openapi.install(app)  # 4xx answers documented with the real error envelope

    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    uploads = StaticFiles(directory=settings.uploads_dir)
    app.mount("/static/uploads", AddHeaders(uploads, UPLOAD_HEADERS), name="uploads")
    static_dir = static_folder()
    if static_dir.is_dir():
        # the console's files: the same security headers as the page at /admin
        console = StaticFiles(directory=static_dir)
        app.mount("/static", AddHeaders(console, console_router.SECURITY_HEADERS), name="static")
    return app


def register_payment_handlers() -> None:
    """WeChat Pay hands each verified payment and refund to the domain that named it."""
    for handlers in (wallet_service.PAYMENTS, orders_service.PAYMENTS):
        wechat_pay.register(handlers)


# uploaded pictures are only ever images: never sniffed into anything else, never active
UPLOAD_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


def _docs_urls(settings: Settings) -> dict[str, Any]:
    if settings.env != "production" or settings.public_docs:
        return {}
    return {"docs_url": None, "redoc_url": None, "openapi_url": None}


def _bearer_is(authorization: str | None, token: str) -> bool:
    scheme, _sep, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


def body_limits(settings: Settings) -> LimitFor:
    """The body limit of each path (read from `settings` per request, so tests and a
    changed setting apply at once). Uploads keep their own 413 codes."""
    from mall.kit import images
    from mall.points.service import IMPORT_TOO_LARGE

    def default(max_bytes: int) -> Limit:
        return Limit(max_bytes, lambda: PAYLOAD_TOO_LARGE(max_kb=_kb(max_bytes)))

    def upload() -> Limit:
        return Limit(
            settings.upload_max_bytes + images.MULTIPART_SLACK,
            lambda: images.too_large(settings.upload_max_bytes),
        )

    def order_import() -> Limit:
        return Limit(settings.upload_max_bytes + images.MULTIPART_SLACK, IMPORT_TOO_LARGE)

    exact: dict[str, Callable[[], Limit]] = {
        "/api/v1/wechat/pay-notify": lambda: default(settings.pay_notify_max_body_bytes),
        "/api/admin/v1/uploads/images": upload,
        "/api/admin/v1/external-orders/import": order_import,
        # the one admin route without a login keeps the small limit
        "/api/admin/v1/login": lambda: default(settings.max_body_bytes),
    }

    def limit_for(path: str) -> Limit:
        special = exact.get(path)
        if special is not None:
            return special()
        if path.startswith("/api/admin/"):
            return default(settings.admin_max_body_bytes)
        return default(settings.max_body_bytes)

    return limit_for


def _kb(size: int) -> int | float:
    return size // 1024 if size % 1024 == 0 else round(size / 1024, 1)


READY_PROBE_SECONDS = 2.0


async def _probe(check: Callable[[], Awaitable[object]]) -> str:
    """Returns "ok" or the error's class name; bounded so a readiness probe answers fast."""
    try:
        async with asyncio.timeout(READY_PROBE_SECONDS):
            await check()
    except Exception as exc:
        return type(exc).__name__
    return "ok"


def _all_error_codes() -> list[ErrorCode]:
    domains.domain_modules("service")  # import every service so its codes are registered
    return list(errors.REGISTRY.values())
