"""create_app(): the one composition root. Lifespan opens the database, Redis and jobs."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mall import __version__, db, errors, i18n
from mall import redis as mall_redis
from mall.config import Settings, get_settings, project_root, set_settings
from mall.domains import domain_modules
from mall.errors import SERVICE_UNAVAILABLE, ErrorCode, MallError
from mall.kit import metrics as node_metrics
from mall.kit.jobs import Runner

log = logging.getLogger("mall.app")

HOT_ROUTERS = ("mall.seckill.router",)

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
        rid = rid or uuid.uuid4().hex
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
            REQUESTS.labels(method, template, str(status)).inc()
            LATENCY.labels(method, template).observe(time.perf_counter() - started)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _client_request_id(raw: bytes) -> str | None:
    """A caller's X-Request-ID, if it is a short safe token (it goes into headers and logs)."""
    text = raw.decode("latin-1")
    return text if _REQUEST_ID.fullmatch(text) else None


def create_app(settings: Settings | None = None, *, manage_resources: bool = True) -> FastAPI:
    """Build the app. With `manage_resources=False` the caller (tests) owns DB and Redis."""
    settings = set_settings(settings or get_settings())

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
                runner = Runner()
                runner.start()
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

    app = FastAPI(
        title="mall",
        version=__version__,
        description=(
            "Backend for WeChat mini-program member malls. Money is integer fen, points are "
            'integers. Errors are `{"error": {"code", "message"}}` with a stable code '
            "(see `GET /api/v1/errors`) and a message localized by `Accept-Language`."
        ),
        lifespan=lifespan,
    )
    from mall.seckill.router import AttemptFastPath

    app.add_middleware(AttemptFastPath)  # inside RequestContext: locale, id and metrics apply
    app.add_middleware(RequestContext)
    errors.install(app)

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
    async def metrics() -> PlainTextResponse:
        """Prometheus text: request counts and latencies by route."""
        return PlainTextResponse(node_metrics.latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/errors", tags=["health"])
    async def error_codes() -> list[dict[str, Any]]:
        """Every stable error code with its HTTP status and message in the request's language."""
        return [
            {"code": e.code, "status": e.status, "message": i18n.translate(e.message)}
            for e in sorted(_all_error_codes(), key=lambda e: e.code)
        ]

    # Starlette matches routes in order: the flash-sale attempt goes right after health.
    routers = sorted(domain_modules("router"), key=lambda m: m.__name__ not in HOT_ROUTERS)
    for module in routers:
        app.include_router(module.router)

    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    app.mount("/static/uploads", StaticFiles(directory=settings.uploads_dir), name="uploads")
    static_dir = project_root() / "static"
    if static_dir.is_dir():
        app.mount("/static", StaticFiles(directory=static_dir), name="static")
    return app


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
    domain_modules("service")  # import every service so its codes are registered
    return list(errors.REGISTRY.values())
