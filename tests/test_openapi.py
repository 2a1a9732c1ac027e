"""The OpenAPI document describes the error answers the API really sends: the shared
`ErrorEnvelope` on every 4xx, 422 wherever there is input, 401 wherever a token is
taken, 403 where an admin is required; never FastAPI's `HTTPValidationError`."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import StaffLogin

ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}
WECHAT_PAY = "/api/v1/wechat/pay-notify"  # answers in WeChat Pay's own format


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    return dict(r.json())


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def _schema(answer: dict[str, Any]) -> Any:
    return answer.get("content", {}).get("application/json", {}).get("schema")


async def test_the_envelope_is_a_shared_component(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in json.dumps(document)
    assert "ValidationError" not in schemas
    envelope = schemas["ErrorEnvelope"]
    assert envelope["required"] == ["error"]
    assert envelope["properties"]["error"] == {"$ref": "#/components/schemas/ErrorBody"}
    body = schemas["ErrorBody"]
    assert set(body["required"]) == {"code", "message"}
    assert body["properties"]["fields"]["items"] == {"$ref": "#/components/schemas/FieldError"}
    assert set(schemas["FieldError"]["required"]) == {"field", "message", "type"}


async def test_every_operation_documents_its_error_answers(document: dict[str, Any]) -> None:
    operations = _operations(document)
    assert len(operations) > 150
    wrong: list[str] = []
    for method, path, operation in operations:
        label = f"{method} {path}"
        responses = operation["responses"]
        takes_input = bool(operation.get("parameters") or operation.get("requestBody"))
        if takes_input and _schema(responses.get("422", {})) != ENVELOPE:
            wrong.append(f"{label}: no 422 with the envelope")
        if operation.get("security") and _schema(responses.get("401", {})) != ENVELOPE:
            wrong.append(f"{label}: takes a token but documents no 401 envelope")
        for status, answer in responses.items():
            if status.startswith("4") and path != WECHAT_PAY and _schema(answer) != ENVELOPE:
                wrong.append(f"{label}: {status} is not the envelope")
            if status.startswith("4") and not answer.get("description"):
                wrong.append(f"{label}: {status} has no description")
        if not path.startswith(("/api/v1/auth/", "/api/admin/v1/login", "/api/v1/referral/wechat")):
            if path.startswith("/api/admin/") and "401" not in responses:
                wrong.append(f"{label}: admin route without 401")
    assert not wrong, "\n".join(wrong)


async def test_descriptions_name_the_codes(document: dict[str, Any]) -> None:
    paths = document["paths"]
    staff = paths["/api/admin/v1/staff"]["post"]["responses"]
    assert staff["403"]["description"] == "`FORBIDDEN`: You are not allowed to do this"
    assert "`TOKEN_EXPIRED`" in staff["401"]["description"]
    assert "`VALIDATION_ERROR`" in staff["422"]["description"]
    # an ops route: a token, no admin
    assert "403" not in paths["/api/admin/v1/orders"]["get"]["responses"]
    redeem = paths["/api/v1/points-mall/items/{item_id}/redeem"]["post"]["responses"]
    # the route's own codes are kept, the implied ones added
    assert redeem["409"]["description"].startswith("ITEM_OFF_SHELF")
    assert "`IDEMPOTENCY_IN_PROGRESS`" in redeem["409"]["description"]
    assert "`IDEMPOTENCY_KEY_REUSED`" in redeem["422"]["description"]
    assert "`NOT_FOUND`" in redeem["404"]["description"]
    assert "`BAD_REQUEST`" in redeem["400"]["description"]
    assert "422" not in paths["/healthz"]["get"]["responses"]  # no input, no 422
    fail = _schema(paths[WECHAT_PAY]["post"]["responses"]["401"])
    assert fail["properties"]["code"] == {"type": "string", "enum": ["FAIL"]}


async def test_real_error_answers_fit_the_documented_envelope(
    client: httpx.AsyncClient, document: dict[str, Any], staff_headers: StaffLogin
) -> None:
    schemas = document["components"]["schemas"]
    body_keys = set(schemas["ErrorBody"]["properties"])
    field_keys = set(schemas["FieldError"]["properties"])
    ops = await staff_headers("ops")
    answers = [
        await client.get("/api/admin/v1/orders?size=0", headers=ops),  # 422
        await client.get("/api/admin/v1/orders"),  # 401
        await client.post("/api/admin/v1/staff", json={}, headers=ops),  # 403
        await client.get("/api/admin/v1/orders/1", headers=ops),  # 404
        await client.post(
            "/api/v1/auth/wechat-login",
            content=b"\xff",
            headers={"Content-Type": "application/json"},
        ),  # unreadable body
    ]
    assert [a.status_code for a in answers] == [422, 401, 403, 404, 400]
    assert answers[-1].json()["error"]["code"] == "BAD_REQUEST"
    for answer in answers:
        body = answer.json()
        assert set(body) == {"error"}
        error = body["error"]
        assert {"code", "message"} <= set(error) <= body_keys, error
        assert isinstance(error["code"], str) and error["message"]
        for field in error.get("fields", []):
            assert set(field) == field_keys


@pytest.mark.nodb
def test_error_responses_declares_codes_with_the_envelope() -> None:
    """`responses=error_responses(...)` on a route: grouped by status, the codes named."""
    from fastapi import FastAPI

    from mall import openapi
    from mall.errors import (
        IDEMPOTENCY_IN_PROGRESS,
        IDEMPOTENCY_KEY_REUSED,
        NOT_FOUND,
        RATE_LIMITED,
        error_responses,
    )

    app = FastAPI()
    codes = error_responses(
        IDEMPOTENCY_KEY_REUSED, NOT_FOUND, IDEMPOTENCY_IN_PROGRESS, RATE_LIMITED
    )

    @app.get("/brew", responses=codes)
    async def brew() -> dict[str, str]:
        return {}

    openapi.install(app)
    responses = app.openapi()["paths"]["/brew"]["get"]["responses"]
    assert list(responses) == ["200", "404", "409", "422", "429"]
    assert responses["409"]["description"] == (
        "`IDEMPOTENCY_IN_PROGRESS`: The same request is still being processed"
    )
    for status in ("404", "409", "422", "429"):
        assert _schema(responses[status]) == ENVELOPE
