"""The field messages of a 422 VALIDATION_ERROR are in the request's language: pydantic's
error types are rebuilt from their `type` and `ctx`, our validators' sentences come from
the catalogs."""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel, Field, ValidationError

import mall
from mall import i18n
from mall.validation import INVALID, MESSAGES, field_errors, field_message
from tests.conftest import MemberLogin

CJK = re.compile(r"[\u4e00-\u9fff]")


def _placeholders(text: str) -> set[str]:
    return {name for _lit, name, _spec, _conv in string.Formatter().parse(text) if name}


def _all_pydantic_error_types() -> list[dict[str, object]]:
    from pydantic_core import _pydantic_core

    return list(_pydantic_core.list_all_errors())


@pytest.mark.nodb
def test_every_message_has_a_chinese_translation_without_new_placeholders() -> None:
    zh = i18n.catalog("zh_CN")
    for message in {*MESSAGES.values(), INVALID}:
        assert message in zh, f"no zh_CN translation for {message!r}"
        # a translation may leave out a detail (pydantic's English parse errors) but never
        # ask for a value the English does not have
        assert _placeholders(zh[message]) <= _placeholders(message), message
        assert "expected_plural" not in _placeholders(zh[message])


@pytest.mark.nodb
def test_every_pydantic_error_type_renders_in_both_languages() -> None:
    kinds = _all_pydantic_error_types()
    assert len(kinds) > 80
    for info in kinds:
        error = {
            "type": info["type"],
            "msg": info["example_message_python"],
            "ctx": info["example_context"] or {},
        }
        if info["type"] in ("value_error", "assertion_error"):
            error["ctx"] = {}  # a validator without a sentence: see test_choices_and_own_validators
        zh = field_message(error, "zh_CN")
        en = field_message(error, "en")
        assert CJK.search(zh), f"{info['type']}: {zh!r} is not Chinese"
        assert en and not CJK.search(en), f"{info['type']}: {en!r}"
        for text in (zh, en):
            assert "{" not in text and "}" not in text, f"{info['type']}: {text!r}"


class _Form(BaseModel):
    size: int = Field(le=100)
    name: str = Field(min_length=2, max_length=1)
    kind: str = Field(pattern="^(a|b)$")


@pytest.mark.nodb
def test_numbers_from_ctx_and_plurals() -> None:
    try:
        _Form.model_validate({"size": 101, "name": "abc", "kind": "c"})
    except ValidationError as exc:
        errors = exc.errors()
    i18n.set_locale("zh_CN")
    zh = {f["field"]: f for f in field_errors(errors, prefix=("body",))}
    assert zh["body.size"] == {
        "field": "body.size",
        "message": "应小于或等于 100",
        "type": "less_than_equal",
    }
    assert zh["body.name"]["message"] == "最多 1 个字符"
    i18n.set_locale("en")
    try:
        en = {f["field"]: f["message"] for f in field_errors(errors)}
    finally:
        i18n.set_locale("zh_CN")
    assert en == {
        "size": "Input should be less than or equal to 100",
        "name": "String should have at most 1 character",
        "kind": "String should match pattern '^(a|b)$'",
    }


@pytest.mark.nodb
def test_choices_and_own_validators() -> None:
    literal = {"type": "literal_error", "ctx": {"expected": "'day', 'week' or 'month'"}}
    assert field_message(literal, "zh_CN") == "应为以下之一：'day'、'week'、'month'"
    assert field_message(literal, "en") == "Input should be 'day', 'week' or 'month'"
    ours = {"type": "value_error", "ctx": {"error": ValueError("delta must not be 0")}}
    assert field_message(ours, "zh_CN") == "调整数量不能为 0"
    assert field_message(ours, "en") == "delta must not be 0"
    unknown = {"type": "someone_elses_check", "msg": "Nope"}
    assert field_message(unknown, "zh_CN") == "取值无效"
    assert field_message(unknown, "en") == "Nope"


def _validator_messages() -> dict[str, str]:
    """`raise ValueError("literal")` in every module that declares pydantic validators, and
    the messages of hand-made fields (`{"field": ..., "message": "literal"}`) anywhere."""
    found: dict[str, str] = {}
    root = Path(mall.__file__).parent
    for path in root.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Dict):
                pairs = {
                    k.value: v
                    for k, v in zip(node.keys, node.values, strict=True)
                    if isinstance(k, ast.Constant)
                }
                message = pairs.get("message")
                if "field" in pairs and isinstance(message, ast.Constant):
                    found[str(message.value)] = f"{path.relative_to(root)}:{node.lineno}"
        if not re.search(
            r"\b(field_validator|model_validator|AfterValidator|BeforeValidator)\b", source
        ):
            continue
        for node in ast.walk(ast.parse(source)):
            if (
                isinstance(node, ast.Raise)
                and isinstance(node.exc, ast.Call)
                and isinstance(node.exc.func, ast.Name)
                and node.exc.func.id == "ValueError"
                and node.exc.args
                and isinstance(node.exc.args[0], ast.Constant)
                and isinstance(node.exc.args[0].value, str)
            ):
                found[node.exc.args[0].value] = f"{path.relative_to(root)}:{node.lineno}"
    return found


@pytest.mark.nodb
def test_our_validators_messages_have_chinese() -> None:
    messages = _validator_messages()
    assert len(messages) > 20, "validator messages were not found"
    zh = i18n.catalog("zh_CN")
    missing = sorted(f"{where}: {text!r}" for text, where in messages.items() if text not in zh)
    assert not missing, (
        "validator and field messages without a zh_CN translation in "
        "locale/zh_CN/LC_MESSAGES/validation.po:\n  " + "\n  ".join(missing)
    )


async def test_a_422_speaks_the_requests_language(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    url = "/api/v1/catalog/products?size=101&category=abc"
    zh = await client.get(url)
    assert zh.status_code == 422
    error = zh.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["message"] == "部分字段填写有误"
    fields = {f["field"]: f for f in error["fields"]}
    assert fields["query.size"]["message"] == "应小于或等于 100"
    assert fields["query.size"]["type"] == "less_than_equal"
    assert CJK.search(fields["query.category"]["message"])

    en = await client.get(url, headers={"Accept-Language": "en"})
    error = en.json()["error"]
    assert error["message"] == "Some fields are invalid"
    fields = {f["field"]: f for f in error["fields"]}
    assert fields["query.size"]["message"] == "Input should be less than or equal to 100"

    # a field made by hand in the code is translated like the others
    alice = await member_headers("alice")
    cursor = await client.get("/api/v1/orders?cursor=9999999999999999999", headers=alice)
    assert cursor.status_code == 422
    assert cursor.json()["error"]["fields"] == [
        {"field": "query.cursor", "message": "分页游标超出范围", "type": "value_error"}
    ]

    broken = await client.post(
        "/api/v1/auth/wechat-login",
        content=b'{"code": ',
        headers={"Content-Type": "application/json"},
    )
    assert broken.status_code == 422
    assert broken.json()["error"]["fields"][0] == {
        "field": "body.9",
        "message": "JSON 格式错误",
        "type": "json_invalid",
    }


async def test_an_over_long_idempotency_key_names_the_header(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    """A declared header (coupons claim) and one read by hand (the flash-sale attempt)
    answer alike: VALIDATION_ERROR naming `header.Idempotency-Key`, never
    IDEMPOTENCY_KEY_REUSED."""
    alice = await member_headers("alice")
    headers = {**alice, "Idempotency-Key": "k" * 129, "Accept-Language": "en"}
    expected = {
        "field": "header.Idempotency-Key",
        "message": "String should have at most 128 characters",
        "type": "string_too_long",
    }
    for method, url, body in (
        ("POST", "/api/v1/coupons/claim", {"template_id": 1}),
        ("POST", "/api/v1/seckill/items/1/attempt", None),
    ):
        r = await client.request(method, url, json=body, headers=headers)
        assert r.status_code == 422, (url, r.text)
        error = r.json()["error"]
        assert error["code"] == "VALIDATION_ERROR", url
        assert error["fields"] == [expected], url
