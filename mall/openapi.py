"""The OpenAPI document with the error envelope the API really sends.

FastAPI documents a 422 as its own `HTTPValidationError`, but every error is
`{"error": {"code", "message", ...}}` (mall.errors). Once FastAPI has built the document,
each operation gets the answers its shape implies, described with their stable codes:
- 422 `VALIDATION_ERROR` when it takes parameters or a body, and 400 `BAD_REQUEST` for a
  body that cannot be read at all;
- 401 (`UNAUTHORIZED`, `TOKEN_INVALID`, `TOKEN_EXPIRED`) when it takes a bearer token, and
  403 `FORBIDDEN` when an admin is required;
- 409 / 422 of the `Idempotency-Key` where the header is accepted;
- 404 `NOT_FOUND` where an id is in the path (the domain's own `..._NOT_FOUND` codes are
  listed by `GET /api/v1/errors`);
and every 4xx, declared by a route or added here, the shared `ErrorEnvelope` schema
(unless the route gave its own content, as WeChat Pay's notification endpoint does)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from mall import deps
from mall.errors import (
    BAD_REQUEST,
    FORBIDDEN,
    IDEMPOTENCY_IN_PROGRESS,
    IDEMPOTENCY_KEY_REUSED,
    NOT_FOUND,
    TOKEN_EXPIRED,
    TOKEN_INVALID,
    UNAUTHORIZED,
    VALIDATION_ERROR,
    ErrorCode,
    ErrorEnvelope,
    describe,
)

ENVELOPE_REF = "#/components/schemas/ErrorEnvelope"
# descriptions FastAPI fills in by itself; ours replace them
_GENERIC = {"Additional Response", "Validation Error", "Unprocessable Content"}


def install(app: FastAPI) -> None:
    """Make `app.openapi()` (and /openapi.json) return the document with error envelopes."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(build(), app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document_errors(schema: dict[str, Any], app: FastAPI) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    envelope = ErrorEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(envelope.pop("$defs", {}))
    components["ErrorEnvelope"] = envelope
    for route in _api_routes(app):
        if not route.include_in_schema:
            continue
        for method in route.methods:
            operation = schema["paths"].get(route.path_format, {}).get(method.lower())
            if operation is not None:
                _document(operation, route)
    # FastAPI's own validation schemas are no longer referenced
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema


def _api_routes(app: FastAPI) -> Iterator[Any]:
    """The API routes as the document sees them. Newer FastAPI keeps included routers as
    lazy branches (`iter_route_contexts` flattens them, with the prefixes applied)."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    for route in flatten(app.routes) if flatten is not None else app.routes:
        if isinstance(getattr(route, "original_route", route), APIRoute):
            yield route


def _document(operation: dict[str, Any], route: Any) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for code_status, codes in _implied_errors(operation, route).items():
        answer = responses.setdefault(str(code_status), {"description": ""})
        described = answer.get("description", "")
        generated = describe(codes)
        if not described or described in _GENERIC:
            answer["description"] = generated
        else:
            answer["description"] = f"{described}; {generated}"
    operation["responses"] = responses = dict(sorted(responses.items()))
    for status, answer in responses.items():
        if not status.startswith("4"):
            continue
        content = answer.get("content")
        if not content:
            answer["content"] = {"application/json": {"schema": {"$ref": ENVELOPE_REF}}}
            continue
        for media in content.values():
            schema = media.get("schema")
            if not schema or "HTTPValidationError" in str(schema.get("$ref", "")):
                media["schema"] = {"$ref": ENVELOPE_REF}


def _implied_errors(operation: dict[str, Any], route: Any) -> dict[int, list[ErrorCode]]:
    parameters = operation.get("parameters", [])
    codes: list[ErrorCode] = []
    if operation.get("security"):
        codes += [UNAUTHORIZED, TOKEN_INVALID, TOKEN_EXPIRED]
    if deps._admin_staff in set(_calls(route.dependant)):
        codes.append(FORBIDDEN)
    if any(p.get("in") == "path" for p in parameters):
        codes.append(NOT_FOUND)
    if operation.get("requestBody"):
        codes.append(BAD_REQUEST)
    if parameters or operation.get("requestBody"):
        codes.append(VALIDATION_ERROR)
    if any(p.get("name", "").lower() == "idempotency-key" for p in parameters):
        codes += [IDEMPOTENCY_IN_PROGRESS, IDEMPOTENCY_KEY_REUSED]
    by_status: dict[int, list[ErrorCode]] = {}
    for code in codes:
        by_status.setdefault(code.status, []).append(code)
    return by_status


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any] | None]:
    yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)
