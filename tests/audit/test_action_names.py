"""Every audit action code the backend writes has a name in the console, in Chinese and
English (static/admin/js/audit_actions.js), and the table names no code nobody writes.

The codes are read from the source: each `audit_service.record(actor, "<code>", ...)`
call under mall/. An action built at run time (an f-string) is listed in DYNAMIC with
every code it can produce; a new one fails here until it is."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.nodb

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "static" / "admin" / "js" / "audit_actions.js"

# f-string actions (as ast.unparse prints them) -> every code they can be
DYNAMIC: dict[str, set[str]] = {
    # OrderRefund.kind of a staff cancel / close / refund / late payment
    "f'order.{refund.kind}'": {"order.cancel", "order.close"},
    "f'order.{kind}'": {"order.refund", "order.late_payment"},
    "f\"pointsmall.item.{('on' if on else 'off')}_shelf\"": {
        "pointsmall.item.on_shelf",
        "pointsmall.item.off_shelf",
    },
}


def _is_record(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr == "record":
        return isinstance(func.value, ast.Name) and func.value.id in ("audit_service", "audit")
    return False


def written_codes() -> tuple[set[str], list[str]]:
    codes: set[str] = set()
    problems: list[str] = []
    for path in sorted((ROOT / "mall").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and _is_record(node)):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            action: ast.expr | None = node.args[1] if len(node.args) > 1 else None
            for kw in node.keywords:
                if kw.arg == "action":
                    action = kw.value
            if isinstance(action, ast.Constant) and isinstance(action.value, str):
                codes.add(action.value)
            elif isinstance(action, ast.JoinedStr) and ast.unparse(action) in DYNAMIC:
                codes |= DYNAMIC[ast.unparse(action)]
            else:
                text = ast.unparse(action) if action is not None else "(none)"
                problems.append(f"{where}: action {text}: list what it can be in DYNAMIC")
    return codes, problems


def console_names() -> dict[str, dict[str, str]]:
    text = TABLE.read_text(encoding="utf-8")
    start = text.index("export const AUDIT_ACTIONS = ") + len("export const AUDIT_ACTIONS = ")
    end = text.rindex("};") + 1
    table: dict[str, dict[str, str]] = json.loads(text[start:end])
    return table


def test_the_source_scan_finds_the_codes() -> None:
    codes, problems = written_codes()
    assert not problems, problems
    # a scan that silently found nothing would pass everything below
    assert {"points.rules.update", "order.ship", "wallet.adjust", "order.refund"} <= codes


def test_every_written_code_has_a_chinese_and_english_name() -> None:
    codes, _ = written_codes()
    names = console_names()
    missing = sorted(codes - names.keys())
    assert not missing, f"add these to {TABLE.relative_to(ROOT)}: {missing}"
    stale = sorted(names.keys() - codes)
    assert not stale, f"no code writes these any more: {stale}"
    for code, name in names.items():
        assert set(name) == {"zh", "en"}, code
        assert re.search(r"[\u4e00-\u9fff]", name["zh"]), (code, name["zh"])
        assert name["en"].strip() and name["en"].isascii(), (code, name["en"])
