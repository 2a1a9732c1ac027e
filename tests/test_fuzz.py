"""Schema-driven fuzzing of the whole OpenAPI document, in process.

Schemathesis reads the app's own document and makes, for every operation:
- its coverage cases (deterministic): boundary values (min, max, one past them, over-long
  strings), wrong types (`0.5`, `true`, `null`, `"AAA"` for an id), missing required fields,
  unexpected properties, malformed content types, an unspecified method;
- where a token is taken: none, a forged one and an over-long one;
- each integer parameter and each integer of a valid body set to -1, the largest BIGINT
  and one past it (the coverage phase only probes bounds a schema declares);
- a few Hypothesis examples (derandomized, so every run sends the same requests), some
  fitting the schema and some not.
Requests go through httpx's ASGI transport in the tests' event loop (the database and
Redis connections live there), with a member token on shopper routes and an admin token on
/api/admin routes, over the demo data so small ids find real objects, at a frozen clock.

Every answer must be below 500, and every 4xx must be the envelope
`{"error": {"code", "message", ...}}` with a registered code whose status is the answer's.

`MALL_FUZZ_ONLY=<regex>` limits the run to matching operations ("POST /api/v1/orders");
`MALL_FUZZ_TIMES=1` prints each operation's time and answers (with `-s`)."""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.modes import GenerationMode

from mall.domains import domain_modules
from mall.errors import REGISTRY
from mall.kit import clock
from tests.conftest import MemberLogin, StaffLogin

# Hypothesis examples per operation and generation mode, and coverage cases per operation
# (an even spread when there are more; large bodies make ~380). Raise them for a deeper
# local run: MALL_FUZZ_EXAMPLES=20 MALL_FUZZ_COVERAGE=400 pytest tests/test_fuzz.py
EXAMPLES = int(os.environ.get("MALL_FUZZ_EXAMPLES", "2"))
COVERAGE_PER_OPERATION = int(os.environ.get("MALL_FUZZ_COVERAGE", "40"))
BASE = "http://testserver"
CJK = re.compile(r"[\u4e00-\u9fff]")
# a fixed instant, early morning in Shanghai on the 1st (the previous day and month in UTC)
FROZEN = datetime(2026, 12, 1, 2, 47, tzinfo=ZoneInfo("Asia/Shanghai"))
WECHAT_PAY = "POST /api/v1/wechat/pay-notify"  # answers in WeChat Pay's own format
# Operations left out, each with its reason. (None today: huge uploads are not generated,
# the body limits are tested on their own.)
SKIP: dict[str, str] = {}
# Operations that are slow by design get fewer cases: (cases, why).
FEWER: dict[str, tuple[int, str]] = {
    "POST /api/admin/v1/login": (12, "every well-formed attempt hashes a password (argon2)"),
    "POST /api/admin/v1/staff": (12, "every new account hashes a password (argon2)"),
    "GET /api/admin/v1/dashboard": (12, "one answer is some thirty aggregate queries"),
}
# 5xx answers that are right on the test server, by code.
RIGHT_5XX = {
    "WECHAT_NOT_CONFIGURED": "the tests run without WeChat credentials (only dev: codes log in)",
    "PAY_NOT_CONFIGURED": "the tests run without WeChat Pay credentials",
}


def _operations(document: dict[str, Any]) -> list[Any]:
    # Tokens are ours to set (see _request and _auth_probes); no schemathesis.toml is read.
    config = SchemathesisConfig.from_dict({"generation": {"with-security-parameters": False}})
    schema = schemathesis.openapi.from_dict(document, config=config)
    only = os.environ.get("MALL_FUZZ_ONLY")
    operations = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in SKIP or (only and not re.search(only, operation.label)):
            continue
        operations.append(operation)
    return sorted(operations, key=lambda op: op.label)


def _coverage(operation: Any) -> list[Any]:
    schema = operation.schema
    generation = schema.config.generation_for(operation=operation, phase="coverage")
    cases, methods = [], 0
    for case in schema.iter_coverage_cases(
        operation,
        generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        generation_config=generation,
    ):
        # one unexpected method per operation is enough to see the 405 envelope
        if _about(case).startswith("Unspecified HTTP method"):
            methods += 1
            if methods > 1:
                continue
        cases.append(case)
    positives = [c for c in cases if c.meta is not None and c.meta.generation.mode.is_positive]
    limit = FEWER.get(operation.label, (COVERAGE_PER_OPERATION, ""))[0]
    if len(cases) > limit:
        step = len(cases) / limit  # an even spread over the kinds of cases
        cases = [cases[int(i * step)] for i in range(limit)]
    return cases + _big_integers(operation, positives)[: limit * 2] + _auth_probes(positives)


NO_TOKEN = "none"  # a marker for _request: send the case without Authorization
_keys = itertools.count()


def _auth_probes(positives: list[Any]) -> list[Any]:
    """A valid request without a token and with a forged one, where a token is taken."""
    if not positives or not positives[0].operation.definition.raw.get("security"):
        return []
    base = positives[0]
    probes = []
    for token in (NO_TOKEN, "Bearer not-a-token", "Bearer " + "e" * 2000):
        headers = {**dict(base.headers or {}), "Authorization": token}
        probes.append(
            base.operation.Case(
                path_parameters=dict(base.path_parameters or {}),
                query=dict(base.query or {}),
                headers=headers,
                body=base.body,
                media_type=base.media_type,
            )
        )
    return probes


# Integers past what the database holds (BIGINT), its largest, and a negative: the
# coverage phase only probes the bounds a schema declares.
BIG = (-1, 2**63 - 1, 2**63)


def _is_integer(schema: dict[str, Any]) -> bool:
    options = [schema, *schema.get("anyOf", []), *schema.get("oneOf", [])]
    return any(option.get("type") == "integer" for option in options)


def _int_leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _int_leaves(item, (*path, key))
    elif isinstance(value, list) and value:
        yield from _int_leaves(value[0], (*path, 0))


def _replace(value: Any, path: tuple[Any, ...], new: int) -> Any:
    if not path:
        return new
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy


def _big_integers(operation: Any, positives: list[Any]) -> list[Any]:
    """Each integer parameter and each integer of the fullest valid body, set to BIG."""
    if not positives:
        return []
    base = positives[0]
    places = {"path": "path_parameters", "query": "query", "header": "headers"}
    probes = []
    for parameter in operation.definition.raw.get("parameters", []):
        place = places.get(parameter.get("in"))
        if place is None or not _is_integer(parameter.get("schema", {})):
            continue
        for number in BIG:
            parts = {name: dict(getattr(base, name) or {}) for name in places.values()}
            parts[place][parameter["name"]] = str(number)
            probes.append(operation.Case(**parts, body=base.body, media_type=base.media_type))
    bodies = [c for c in positives if isinstance(c.body, (dict, list))]
    if bodies:
        fullest = max(bodies, key=lambda c: len(list(_int_leaves(c.body))))
        for leaf in _int_leaves(fullest.body):
            for number in BIG:
                probes.append(
                    operation.Case(
                        path_parameters=dict(fullest.path_parameters or {}),
                        query=dict(fullest.query or {}),
                        headers=dict(fullest.headers or {}),
                        body=_replace(fullest.body, leaf, number),
                        media_type=fullest.media_type,
                    )
                )
    return probes


def _about(case: Any) -> str:
    return str(case.meta.phase.data.description) if case.meta is not None else ""


def _examples(operation: Any) -> list[Any]:
    found: list[Any] = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        try:
            strategy = operation.as_strategy(generation_mode=mode)
        except Exception:  # nothing of the schema can be made invalid, say
            continue

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
        )
        @given(case=strategy)
        def collect(case: Any) -> None:
            found.append(case)

        try:
            collect()
        except Exception as exc:  # e.g. Unsatisfiable: no invalid value exists
            if "Unsatisfiable" not in type(exc).__name__:
                raise
    return found


def _request(case: Any, tokens: dict[str, str]) -> dict[str, Any]:
    kwargs: dict[str, Any] = case.as_transport_kwargs(base_url=BASE)
    kwargs.pop("cookies", None)
    headers = {str(k): str(v) for k, v in (kwargs.get("headers") or {}).items()}
    headers.pop("X-Schemathesis-TestCaseId", None)
    operation = case.operation
    key = headers.get("Idempotency-Key")
    if key is not None and 0 < len(key) <= 128:
        # a fresh key per request, or every case after the first is a replay (or a reuse)
        headers["Idempotency-Key"] = f"fuzz-{next(_keys)}"
    probe = headers.get("Authorization")
    if probe == NO_TOKEN:
        del headers["Authorization"]
    elif probe is None and operation.definition.raw.get("security"):
        admin = operation.path.startswith("/api/admin/")
        headers["Authorization"] = tokens["admin" if admin else "member"]
    kwargs["headers"] = headers
    data = kwargs.get("data")
    if isinstance(data, (bytes, str)):
        kwargs["content"] = kwargs.pop("data")
    return kwargs


def _cause(caplog: pytest.LogCaptureFixture, response: httpx.Response) -> str:
    """The exception class and message the server logged for this answer, if any."""
    rid = response.headers.get("x-request-id", "")
    for record in reversed(caplog.records):
        if rid and rid in record.getMessage() and record.exc_info and record.exc_info[1]:
            exc = record.exc_info[1]
            return f"{type(exc).__name__}: {str(exc)[:200]}"
    return ""


def _right_5xx(response: httpx.Response) -> bool:
    try:
        return response.json()["error"]["code"] in RIGHT_5XX
    except (ValueError, KeyError, TypeError):
        return False


def _check(label: str, response: httpx.Response) -> str | None:
    """What is wrong with one answer, or None."""
    status = response.status_code
    if status >= 500 and not _right_5xx(response):
        return f"{status} {response.text[:300]}"
    if status < 400 or label == WECHAT_PAY:
        return None
    try:
        body = response.json()
    except ValueError:
        return f"{status} not JSON: {response.text[:200]!r}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(body) != {"error"}:
        return f"{status} not the envelope: {response.text[:200]}"
    code, message = error.get("code"), error.get("message")
    if not isinstance(code, str) or not isinstance(message, str) or not message:
        return f"{status} without code and message: {error}"
    registered = REGISTRY.get(code)
    if registered is None:
        return f"{status} unregistered code {code}: {message}"
    if registered.status != status:
        return f"{status} but {code} is registered as {registered.status}"
    for field in error.get("fields", []):
        # the requests carry no Accept-Language: the field messages are Chinese
        if set(field) != {"field", "message", "type"} or not CJK.search(field["message"]):
            return f"{status} a field message that is not localized: {field}"
    return None


async def test_fuzz_the_openapi_document(
    app: Any,
    client: httpx.AsyncClient,
    member_headers: MemberLogin,
    staff_headers: StaffLogin,
    caplog: pytest.LogCaptureFixture,
) -> None:
    document = json.loads(json.dumps(app.openapi()))  # a copy for schemathesis to keep
    operations = _operations(document)
    clock.set_now(FROZEN)  # the same answers on any day (the fixtures reset the clock)
    for module in domain_modules("demo"):
        await module.seed()
    tokens = {
        "member": (await member_headers("fuzzy"))["Authorization"],
        "admin": (await staff_headers("admin"))["Authorization"],
    }
    failures: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    sent = unsendable = 0
    statuses: Counter[int] = Counter()
    started, cpu = time.perf_counter(), time.process_time()
    for operation in operations:
        op_started, op_statuses = time.perf_counter(), Counter[int]()
        for case in [*_coverage(operation), *_examples(operation)]:
            try:
                kwargs = _request(case, tokens)
                request = client.build_request(**kwargs)
                request.read()  # a body httpx cannot encode fails here, not in the app
            except Exception:  # not sendable over HTTP (e.g. a header that is not latin-1)
                unsendable += 1
                continue
            response = await client.send(request)
            sent += 1
            statuses[response.status_code] += 1
            op_statuses[response.status_code] += 1
            problem = _check(operation.label, response)
            if problem is not None:
                sent_as = f"{request.method} {request.url}"
                body = kwargs.get("json", kwargs.get("content"))
                if body is not None:
                    sent_as += f" body={str(body)[:200]}"
                kind = problem.split(" ", 1)[0]
                cause = _cause(caplog, response)
                if cause:  # one entry per distinct exception class
                    problem += f"\n      cause: {cause}"
                    kind += " " + cause.split(":", 1)[0]
                failures[operation.label][kind].append(f"{sent_as}\n      -> {problem}")
        if os.environ.get("MALL_FUZZ_TIMES"):
            took = time.perf_counter() - op_started
            print(f"  {took:6.2f} s {operation.label} {dict(sorted(op_statuses.items()))}")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"fuzz: {len(operations)} operations, {sent} requests ({unsendable} cases not "
        f"sendable over HTTP), {elapsed:.1f} s ({cpu:.1f} s of CPU); answers: "
        + ", ".join(f"{n} x {status}" for status, n in sorted(statuses.items()))
    )
    if failures:
        lines = []
        for label, by_status in sorted(failures.items()):
            for status, examples in sorted(by_status.items()):
                lines.append(f"{label}: {len(examples)} x {status}, e.g.\n    {examples[0]}")
        pytest.fail(
            f"{sum(len(e) for b in failures.values() for e in b.values())} bad answers "
            f"on {len(failures)} operations:\n" + "\n".join(lines),
            pytrace=False,
        )


@pytest.mark.nodb
def test_the_examples_are_reproducible() -> None:
    """Derandomized: the same schema gives the same requests in every run."""
    document = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "/items/{item_id}": {
                "get": {
                    "parameters": [
                        {
                            "name": "item_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer"},
                        }
                    ],
                    "responses": {"200": {"description": "ok"}},
                }
            }
        },
    }
    first = [c.path_parameters for c in _examples(_operations(document)[0])]
    again = [c.path_parameters for c in _examples(_operations(document)[0])]
    assert first == again and len(first) >= EXAMPLES
