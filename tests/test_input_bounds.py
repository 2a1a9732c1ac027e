"""Hostile numbers and text on the real routes: out-of-range integers and control or
direction characters are a 422 VALIDATION_ERROR with the error envelope, never a 500;
the largest id the database can hold goes through to a clean "not found"."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mall.config import Settings
from mall.kit.bounds import BIGINT_MAX, MAX_FEN
from tests.conftest import MemberLogin, StaffLogin

HUGE = 10**20
OVER = 2**63  # one past BIGINT
V1 = "/api/v1"
A = "/api/admin/v1"


def _assert_refused(r: httpx.Response, field: str | None = None) -> None:
    assert r.status_code == 422, (r.request.url, r.status_code, r.text)
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["message"], r.text
    assert error["fields"], r.text
    if field is not None:
        assert any(f["field"].startswith(field) for f in error["fields"]), r.text


def _cart(**extra: Any) -> dict[str, Any]:
    return {"items": [{"sku_id": 1, "quantity": 1}], **extra}


# (method, path, json body, the field the error names)
MEMBER_CASES: list[tuple[str, str, Any, str]] = [
    ("GET", f"{V1}/orders/99999999999999999999", None, "path.order_id"),
    ("GET", f"{V1}/orders/{OVER}", None, "path.order_id"),
    ("GET", f"{V1}/orders/0", None, "path.order_id"),
    ("GET", f"{V1}/orders/-1", None, "path.order_id"),
    ("POST", f"{V1}/orders/{HUGE}/cancel", None, "path.order_id"),
    ("POST", f"{V1}/orders/{HUGE}/refund", {}, "path.order_id"),
    ("POST", f"{V1}/orders/preview", {"items": [{"sku_id": HUGE, "quantity": 1}]}, "body.items"),
    ("POST", f"{V1}/orders/preview", _cart(coupon_id=HUGE), "body.coupon_id"),
    ("POST", f"{V1}/orders/preview", _cart(address_id=OVER), "body.address_id"),
    ("POST", f"{V1}/orders/preview", _cart(points=HUGE), "body.points"),
    ("POST", f"{V1}/orders/preview", _cart(points=-1), "body.points"),
    ("POST", f"{V1}/orders", _cart(coupon_id=HUGE), "body.coupon_id"),
    ("POST", f"{V1}/orders", _cart(address_id=HUGE), "body.address_id"),
    ("POST", f"{V1}/orders/1/refund", {"lines": [{"line_id": HUGE, "quantity": 1}]}, "body.lines"),
    ("POST", f"{V1}/coupons/claim", {"template_id": HUGE}, "body.template_id"),
    ("POST", f"{V1}/coupons/claim", {"template_id": 1e30}, "body.template_id"),
    ("POST", f"{V1}/wallet/top-ups", {"plan_id": HUGE}, "body.plan_id"),
    ("GET", f"{V1}/wallet/top-ups/{HUGE}", None, "path.top_up_id"),
    ("POST", f"{V1}/seckill/items/{HUGE}/attempt", None, "path.item_id"),
    ("POST", f"{V1}/seckill/items/{OVER}/attempt", None, "path.item_id"),
    ("POST", f"{V1}/seckill/items/0/attempt", None, "path.item_id"),
    ("POST", f"{V1}/seckill/items/%D9%A3/attempt", None, "path.item_id"),  # Arabic-Indic 3
    ("GET", f"{V1}/seckill/reservations/a%00b", None, "path.reservation_id"),
    ("POST", f"{V1}/points-mall/items/{HUGE}/redeem", {"quantity": 1}, "path.item_id"),
    ("POST", f"{V1}/points-mall/items/1/redeem", {"address_id": HUGE}, "body.address_id"),
    ("GET", f"{V1}/points-mall/items/{HUGE}", None, "path.item_id"),
    ("POST", f"{V1}/points-mall/redemptions/{HUGE}/cancel", None, "path.redemption_id"),
    ("POST", f"{V1}/blind-boxes/{HUGE}/draw", None, "path.series_id"),
    ("GET", f"{V1}/blind-boxes/{HUGE}", None, "path.series_id"),
    ("GET", f"{V1}/blind-boxes/draws?series_id={HUGE}", None, "query.series_id"),
    ("GET", f"{V1}/catalog/products?cursor={HUGE}", None, "query.cursor"),
    ("GET", f"{V1}/catalog/products?cursor={OVER}", None, "query.cursor"),
    ("GET", f"{V1}/catalog/products?category={HUGE}", None, "query.category"),
    ("GET", f"{V1}/catalog/products?q=%00", None, "query.q"),
    ("GET", f"{V1}/catalog/products/{HUGE}", None, "path.product_id"),
    ("GET", f"{V1}/points/ledger?cursor={HUGE}", None, "query.cursor"),
    ("GET", f"{V1}/points/ledger?cursor=-5", None, "query.cursor"),
    ("GET", f"{V1}/points/ledger?size=0", None, "query.size"),
    ("GET", f"{V1}/coupons?cursor={HUGE}", None, "query.cursor"),
    ("GET", f"{V1}/orders?cursor={HUGE}", None, "query.cursor"),
    ("GET", f"{V1}/wallet?cursor={HUGE}", None, "query.cursor"),
    ("GET", f"{V1}/points-mall/redemptions?status=%00", None, "query.status"),
    ("GET", f"{V1}/addresses/{HUGE}", None, "path.address_id"),
    ("DELETE", f"{V1}/addresses/{HUGE}", None, "path.address_id"),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), MEMBER_CASES)
async def test_member_routes_refuse_numbers_the_database_cannot_hold(
    client: httpx.AsyncClient,
    member_headers: MemberLogin,
    method: str,
    path: str,
    body: Any,
    field: str,
) -> None:
    headers = await member_headers("bounds")
    r = await client.request(method, path, json=body, headers=headers)
    _assert_refused(r, field)


_TEMPLATE = {
    "name": "满100减20",
    "kind": "threshold",
    "face_value_fen": 2000,
    "threshold_fen": 10000,
}

STAFF_CASES: list[tuple[str, str, Any, str]] = [
    ("GET", f"{A}/audit-log?limit=-1", None, "query.limit"),
    ("GET", f"{A}/audit-log?limit=0", None, "query.limit"),
    ("GET", f"{A}/audit-log?limit={HUGE}", None, "query.limit"),
    ("POST", f"{A}/members/1/wallet/adjustments", {"principal_fen": 10**19, "reason": "test"},
     "body.principal_fen"),
    ("POST", f"{A}/members/1/wallet/adjustments", {"bonus_fen": -(10**19), "reason": "test"},
     "body.bonus_fen"),
    ("POST", f"{A}/members/{HUGE}/wallet/adjustments", {"principal_fen": 1, "reason": "test"},
     "path.member_id"),
    ("POST", f"{A}/wallet/top-ups/1/refund", {"principal_fen": 10**19, "reason": "test"},
     "body.principal_fen"),
    ("POST", f"{A}/wallet/plans", {"name": "x", "amount_fen": 100, "sort": 10**19}, "body.sort"),
    ("POST", f"{A}/coupon-templates", {**_TEMPLATE, "discount_cap_fen": 10**19},
     "body.discount_cap_fen"),
    ("POST", f"{A}/coupon-templates", {**_TEMPLATE, "total_quantity": 10**19},
     "body.total_quantity"),
    ("POST", f"{A}/coupon-templates", {**_TEMPLATE, "scope": "products", "scope_ids": [HUGE]},
     "body.scope_ids"),
    ("PATCH", f"{A}/coupon-templates/1", {"total_quantity": 10**19}, "body.total_quantity"),
    ("POST", f"{A}/gift-packs/1/issue", {"member_ids": [HUGE]}, "body.member_ids"),
    ("POST", f"{A}/members/{HUGE}/points", {"points": 10, "reason": "x"}, "path.member_id"),
    ("POST", f"{A}/members/1/points", {"points": 10**19, "reason": "x"}, "body.points"),
    ("GET", f"{A}/orders?member_id={HUGE}", None, "query.member_id"),
    ("GET", f"{A}/orders?cursor={HUGE}", None, "query.cursor"),
    ("GET", f"{A}/orders/{HUGE}", None, "path.order_id"),
    ("POST", f"{A}/categories", {"name": "x", "parent_id": HUGE}, "body.parent_id"),
    ("GET", f"{A}/products?category={HUGE}", None, "query.category"),
    ("POST", f"{A}/skus/{HUGE}/stock", {"delta": 1, "reason": "x"}, "path.sku_id"),
    ("POST", f"{A}/points-mall/items/1/stock-adjustments", {"delta": 10**19, "reason": "x"},
     "body.delta"),
    ("POST", f"{A}/points-mall/items", {"name": "x", "points_price": 1, "total_stock": 1,
     "min_points_balance": 10**19}, "body.min_points_balance"),
    ("GET", f"{A}/points-mall/redemptions?member_id={HUGE}", None, "query.member_id"),
    ("PUT", f"{A}/rules", {"rules": {}, "base_version": HUGE}, "body.base_version"),
    ("PUT", f"{A}/rules", {"rules": {"pricing": {"express_fee_fen": 10**19}}},
     "body.rules.pricing.express_fee_fen"),
    ("POST", f"{A}/segments/preview",
     {"rules": {"all": [{"field": "points_balance", "gte": 10**19}]}}, "body.rules"),
    ("GET", f"{A}/segments/{HUGE}", None, "path.segment_id"),
    ("POST", f"{A}/referral/promoters", {"member_id": HUGE}, "body.member_id"),
    ("GET", f"{A}/seckill/sessions/{HUGE}", None, "path.session_id"),
    ("GET", f"{A}/blind-boxes/{HUGE}/draws?member_id={HUGE}", None, "path.series_id"),
    ("GET", f"{A}/wallet/top-ups?member_id={HUGE}", None, "query.member_id"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "field"), STAFF_CASES)
async def test_admin_routes_refuse_numbers_the_database_cannot_hold(
    client: httpx.AsyncClient,
    staff_headers: StaffLogin,
    method: str,
    path: str,
    body: Any,
    field: str,
) -> None:
    headers = await staff_headers("admin")
    r = await client.request(method, path, json=body, headers=headers)
    _assert_refused(r, field)


async def test_the_largest_id_reaches_the_database_and_is_simply_not_found(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    """The bound is the database's own: BIGINT_MAX passes validation and every layer
    below it (SQLite INTEGER, PostgreSQL BIGINT, Redis keys) answers without a 500."""
    headers = await member_headers("edge")
    top = BIGINT_MAX
    calls: list[tuple[str, str, Any]] = [
        ("GET", f"{V1}/orders/{top}", None),
        ("GET", f"{V1}/addresses/{top}", None),
        ("GET", f"{V1}/catalog/products/{top}", None),
        ("GET", f"{V1}/catalog/products?category={top}&cursor={top}", None),
        ("POST", f"{V1}/coupons/claim", {"template_id": top}),
        ("POST", f"{V1}/wallet/top-ups", {"plan_id": top}),
        ("GET", f"{V1}/points-mall/items/{top}", None),
        ("POST", f"{V1}/points-mall/items/{top}/redeem", {"quantity": 1}),
        ("GET", f"{V1}/blind-boxes/{top}", None),
        ("POST", f"{V1}/blind-boxes/{top}/draw", None),
        ("POST", f"{V1}/seckill/items/{top}/attempt", None),
        ("POST", f"{V1}/orders/preview", _cart(coupon_id=top)),
        ("GET", f"{V1}/points/ledger?cursor={top}", None),
    ]
    for method, path, body in calls:
        r = await client.request(method, path, json=body, headers=headers)
        assert r.status_code < 500, (path, r.status_code, r.text)
        if r.status_code >= 400:
            assert r.json()["error"]["code"] != "VALIDATION_ERROR", (path, r.text)


async def test_money_at_its_ceiling_is_taken(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    me = (await client.get(f"{V1}/me", headers=await member_headers("rich"))).json()
    admin = await staff_headers("admin")
    path = f"{A}/members/{me['id']}/wallet/adjustments"
    r = await client.post(path, json={"principal_fen": MAX_FEN, "reason": "ceiling"}, headers=admin)
    assert r.status_code == 201, r.text
    assert r.json()["balance"]["principal_fen"] == MAX_FEN
    over = await client.post(
        path, json={"principal_fen": MAX_FEN + 1, "reason": "ceiling"}, headers=admin
    )
    _assert_refused(over, "body.principal_fen")


# --- text ----------------------------------------------------------------------------

HOSTILE_TEXT = [
    "bad\x00name",
    "bell\x07",
    "\x1b[31mred",
    "invoice\u202egpj.exe",
    "\u2066isolated\u2069",
    "mark\u200f",
    "two\nlines",
]


@pytest.mark.parametrize("value", HOSTILE_TEXT)
async def test_nickname_refuses_control_and_direction_characters(
    client: httpx.AsyncClient, member_headers: MemberLogin, value: str
) -> None:
    headers = await member_headers("nick")
    r = await client.patch(f"{V1}/me", json={"nickname": value}, headers=headers)
    _assert_refused(r, "body.nickname")
    assert r.json()["error"]["fields"][0]["type"] == "text_forbidden_character"


async def test_nickname_is_stripped_and_avatar_must_be_http(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    headers = await member_headers("avatar")
    ok = await client.patch(
        f"{V1}/me",
        json={"nickname": "  小明 😀 ", "avatar_url": "https://thirdwx.qlogo.cn/mmopen/a/132"},
        headers=headers,
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["nickname"] == "小明 😀"
    for bad in ["javascript:alert(document.cookie)", "data:text/html,x", "//evil.example/a.png"]:
        r = await client.patch(f"{V1}/me", json={"avatar_url": bad}, headers=headers)
        _assert_refused(r, "body.avatar_url")
        assert r.json()["error"]["fields"][0]["type"] == "url_not_allowed"
    after = (await client.get(f"{V1}/me", headers=headers)).json()
    assert after["avatar_url"] == "https://thirdwx.qlogo.cn/mmopen/a/132"
    cleared = await client.patch(f"{V1}/me", json={"avatar_url": ""}, headers=headers)
    assert cleared.status_code == 200 and cleared.json()["avatar_url"] == ""


@pytest.mark.parametrize("field", ["name", "region", "detail"])
@pytest.mark.parametrize("value", ["张\u202e三", "张\x00三", "\x1b]0;x\x07"])
async def test_address_parts_refuse_control_and_direction_characters(
    client: httpx.AsyncClient, member_headers: MemberLogin, field: str, value: str
) -> None:
    headers = await member_headers("addr")
    body = {"name": "张三", "phone": "13800138000", "region": "广东省 深圳市", "detail": "1 号"}
    r = await client.post(f"{V1}/addresses", json={**body, field: value}, headers=headers)
    _assert_refused(r, f"body.{field}")
    stored = await client.post(f"{V1}/addresses", json={**body, "name": " 张三 "}, headers=headers)
    assert stored.status_code == 201 and stored.json()["name"] == "张三"


async def test_ops_text_and_pictures_are_checked_too(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    ops = await staff_headers("ops")
    product = {"name": "杯子\u202e", "list_price": 100}
    _assert_refused(await client.post(f"{A}/products", json=product, headers=ops), "body.name")
    pictures = {"name": "x", "points_price": 1, "total_stock": 1, "pictures": ["javascript:x"]}
    _assert_refused(
        await client.post(f"{A}/points-mall/items", json=pictures, headers=ops), "body.pictures"
    )
    series = {"name": "盲盒", "points_cost": 10, "cover_image": "javascript:alert(1)"}
    _assert_refused(
        await client.post(f"{A}/blind-boxes", json=series, headers=ops), "body.cover_image"
    )
    # descriptions may span lines, but not carry escapes
    fine = {"name": "x", "points_price": 1, "total_stock": 1, "description": "第一行\n第二行"}
    assert (await client.post(f"{A}/points-mall/items", json=fine, headers=ops)).status_code == 201
    escape = {**fine, "description": "x\x1b[2J"}
    _assert_refused(
        await client.post(f"{A}/points-mall/items", json=escape, headers=ops), "body.description"
    )


# --- the whole surface -------------------------------------------------------------------


def _inputs(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, schema) of every integer, string and array a client can send."""
    components = spec["components"]["schemas"]
    found: list[tuple[str, dict[str, Any]]] = []

    def walk(schema: dict[str, Any], where: str, seen: frozenset[str]) -> None:
        ref = schema.get("$ref")
        if ref:
            name = ref.rsplit("/", 1)[-1]
            if name not in seen:
                walk(components[name], where, seen | {name})
            return
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in schema.get(key, []):
                walk(sub, where, seen)
        kind = schema.get("type")
        if kind in ("integer", "string", "array"):
            found.append((where, schema))
        if kind == "array" and "items" in schema:
            walk(schema["items"], where + "[]", seen)
        for name, sub in schema.get("properties", {}).items():
            walk(sub, f"{where}.{name}", seen)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            walk(extra, where + "{}", seen)

    for path, operations in spec["paths"].items():
        for verb, op in operations.items():
            for param in op.get("parameters", []):
                if param["in"] != "header":
                    where = f"{verb.upper()} {path} {param['in']}.{param['name']}"
                    walk(param.get("schema", {}), where, frozenset())
            for content in op.get("requestBody", {}).get("content", {}).values():
                if "schema" in content:
                    walk(content["schema"], f"{verb.upper()} {path} body", frozenset())
    return found


# opaque secrets, compared or hashed, never stored or shown as they are
_FREE_STRINGS = {".password", ".refresh_token"}


@pytest.mark.nodb
def test_every_input_in_the_openapi_document_is_bounded(settings: Settings) -> None:
    """A new route or field with a bare `int` or `str` fails here: integers need both
    bounds inside BIGINT (mall.kit.bounds), strings a length and a character rule
    (mall.kit.text, a pattern or an enum), arrays a length."""
    from mall.app import create_app

    spec = create_app(settings, manage_resources=False).openapi()
    problems = []
    for where, schema in _inputs(spec):
        kind = schema["type"]
        if kind == "integer":
            low, high = schema.get("minimum"), schema.get("maximum")
            low = schema.get("exclusiveMinimum", low)
            high = schema.get("exclusiveMaximum", high)
            # FastAPI writes body bounds as floats; float(2**63 - 1) rounds to 2**63
            if low is None or high is None or low < -float(2**63) or high > float(BIGINT_MAX):
                problems.append(f"{where}: integer without bounds that fit BIGINT")
        elif kind == "string":
            if (
                "enum" in schema
                or "const" in schema
                or schema.get("format")
                in (
                    "date",
                    "date-time",
                    "binary",
                )
            ):
                continue
            if "maxLength" not in schema and "pattern" not in schema:
                problems.append(f"{where}: string without maxLength")
            if "pattern" not in schema and not any(where.endswith(s) for s in _FREE_STRINGS):
                problems.append(f"{where}: free text without SafeLine / SafeText / a pattern")
        elif kind == "array" and "maxItems" not in schema:
            problems.append(f"{where}: array without maxItems")
    assert not problems, "\n".join(sorted(set(problems)))
