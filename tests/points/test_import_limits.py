"""Hostile marketplace-order imports: nesting, huge fields and huge numbers are answered
with IMPORT_UNREADABLE or a row error, never a 500, and good rows beside bad ones land."""

from __future__ import annotations

import json

import httpx

from mall.points.models import ExternalOrder
from mall.points.service import IMPORT_FIELD_MAX
from tests.conftest import StaffLogin

IMPORT = "/api/admin/v1/external-orders/import"
GOOD = {"platform": "tmall", "order_no": "G1", "phone": "13800138000", "paid_fen": 1000}


async def _post(
    client: httpx.AsyncClient, headers: dict[str, str], body: str, content_type: str
) -> httpx.Response:
    return await client.post(
        IMPORT,
        content=body.encode(),
        headers={**headers, "Content-Type": content_type, "Accept-Language": "en"},
    )


def _assert_unreadable(r: httpx.Response, says: str) -> None:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "IMPORT_UNREADABLE", r.text
    assert says in error["message"], r.text


async def test_json_nested_beyond_the_parser_is_unreadable(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    ops = await staff_headers("ops")
    deep = "[" * 100_000 + "]" * 100_000
    _assert_unreadable(await _post(client, ops, deep, "application/json"), "nested too deeply")
    wrapped = '{"orders": ' + "[" * 50_000 + "]" * 50_000 + "}"
    _assert_unreadable(await _post(client, ops, wrapped, "application/json"), "nested too deeply")
    assert await ExternalOrder.all().count() == 0


async def test_json_integer_beyond_python_limits_is_unreadable(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    ops = await staff_headers("ops")
    body = '[{"platform": "tmall", "order_no": "X", "phone": "13800138000", "paid_fen": 1'
    body += "0" * 5000 + "}]"
    _assert_unreadable(await _post(client, ops, body, "application/json"), "invalid JSON")


async def test_json_rows_with_nested_long_or_huge_values_are_row_errors(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    ops = await staff_headers("ops")
    nested = "[" * 500 + "]" * 500  # parses, but no field of an order is a list
    rows = (
        "["
        + json.dumps({**GOOD, "order_no": "N1"})[:-1]
        + ', "extra": '
        + nested
        + "}, "
        + json.dumps({**GOOD, "order_no": "N2", "phone": "1" * (IMPORT_FIELD_MAX + 1)})
        + ", "
        + json.dumps({**GOOD, "order_no": "N3", "paid_fen": 10**19})
        + ", "
        + json.dumps({**GOOD, "order_no": {"deep": [[["x"]]]}})
        + ", "
        + json.dumps(["not", "an", "object"])
        + ", "
        + json.dumps({**GOOD, "order_no": "N4\u202e"})
        + ", "
        + json.dumps(GOOD)
        + "]"
    )
    r = await _post(client, ops, rows, "application/json")
    assert r.status_code == 200, r.text
    body = r.json()
    errors = {e["row"]: e for e in body["errors"]}
    assert sorted(errors) == [1, 2, 3, 4, 5, 6], body
    assert all(e["code"] == "IMPORT_ROW_INVALID" for e in errors.values())
    assert "nested" in errors[1]["message"] and errors[1]["order_no"] == "N1"
    assert f"longer than {IMPORT_FIELD_MAX}" in errors[2]["message"]
    assert "paid_fen" in errors[3]["message"]
    assert "nested" in errors[4]["message"] and errors[4]["order_no"] == ""
    assert "object" in errors[5]["message"]
    assert "order_no" in errors[6]["message"]
    assert body["created"] == 1
    assert [o.order_no for o in await ExternalOrder.all()] == ["G1"]


async def test_csv_field_over_the_csv_limit_is_unreadable_and_nothing_lands(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    ops = await staff_headers("ops")
    csv = (
        "platform,order_no,phone,paid_fen\n"
        "tmall,C1,13800138000,100\n"
        f"tmall,C2,{'1' * 140_000},100\n"
        "tmall,C3,13800138000,100\n"
    )
    _assert_unreadable(await _post(client, ops, csv, "text/csv"), "line 3")
    quoted = 'platform,order_no,phone,paid_fen\ntmall,C4,"' + "x\n" * 70_000 + '",100\n'
    _assert_unreadable(await _post(client, ops, quoted, "text/csv"), "field larger")
    assert await ExternalOrder.all().count() == 0


async def test_csv_control_characters_are_row_errors_and_not_echoed(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    ops = await staff_headers("ops")
    csv = "platform,order_no,phone,paid_fen\ntmall,C5\x00\x1b[2J,13800138000,100\n"
    r = await _post(client, ops, csv, "text/csv")
    assert r.status_code == 200, r.text
    [error] = r.json()["errors"]
    assert error["code"] == "IMPORT_ROW_INVALID" and "U+0000" in error["message"]
    assert error["order_no"] == "C5\ufffd\ufffd[2J"
    assert await ExternalOrder.all().count() == 0


async def test_csv_field_longer_than_any_real_one_is_a_row_error(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    ops = await staff_headers("ops")
    csv = (
        "platform,order_no,phone,paid_fen,remark\n"
        f"tmall,L1,13800138000,100,{'r' * 5000}\n"
        f"tmall,{'L' * 100_000},13800138000,100,\n"
        "tmall,L3,13800138000,100,ok\n"
    )
    r = await _post(client, ops, csv, "text/csv")
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(e["row"], e["code"]) for e in body["errors"]] == [
        (2, "IMPORT_ROW_INVALID"),
        (3, "IMPORT_ROW_INVALID"),
    ]
    assert body["errors"][0]["order_no"] == "L1" and "remark" in body["errors"][0]["message"]
    assert len(body["errors"][1]["order_no"]) <= 64  # the answer does not echo the field
    assert body["created"] == 1
    assert [o.order_no for o in await ExternalOrder.all()] == ["L3"]
