"""Every error code has a Chinese message with the same placeholders, and the language
follows Accept-Language (zh_CN by default)."""

from __future__ import annotations

import importlib
import pkgutil
import re
import string
from collections import defaultdict

import httpx
import pytest
from babel.messages.pofile import read_po

import mall
from mall import errors, i18n
from mall.domains import domain_modules


def _import_everything() -> dict[str, errors.ErrorCode]:
    """Import every module that may declare an ErrorCode, then the registry is complete."""
    domain_modules("service")
    domain_modules("router")
    importlib.import_module("mall.admin.router")  # imports every admin router
    for info in pkgutil.walk_packages(mall.__path__, "mall."):
        if not info.name.startswith("mall.migrations"):
            importlib.import_module(info.name)
    return dict(errors.REGISTRY)


def _placeholders(text: str) -> set[str]:
    return {name for _lit, name, _spec, _conv in string.Formatter().parse(text) if name}


@pytest.mark.nodb
def test_every_error_code_has_a_chinese_message() -> None:
    codes = _import_everything()
    assert len(codes) > 10, "error codes were not collected"
    zh = i18n.catalog("zh_CN")
    missing = sorted(f"{c.code}: {c.message!r}" for c in codes.values() if c.message not in zh)
    assert not missing, (
        f"{len(missing)} error codes have no zh_CN translation in "
        "locale/zh_CN/LC_MESSAGES/<domain>.po:\n  " + "\n  ".join(missing)
    )


@pytest.mark.nodb
def test_translations_keep_the_placeholders() -> None:
    codes = _import_everything()
    wrong = []
    for locale in i18n.SUPPORTED:
        catalog = i18n.catalog(locale)
        for code in codes.values():
            translated = catalog.get(code.message)
            if translated is None:
                continue
            try:
                mine, theirs = _placeholders(code.message), _placeholders(translated)
            except ValueError as exc:  # unbalanced braces
                wrong.append(f"{locale} {code.code}: {exc}")
                continue
            if mine != theirs:
                wrong.append(
                    f"{locale} {code.code}: message has {sorted(mine)}, "
                    f"translation {translated!r} has {sorted(theirs)}"
                )
    assert not wrong, "translations that lose or invent placeholders:\n  " + "\n  ".join(wrong)


@pytest.mark.nodb
def test_codes_are_stable_upper_snake_with_real_statuses() -> None:
    codes = _import_everything()
    bad = [
        f"{c.code} ({c.status})"
        for c in codes.values()
        if not re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)*", c.code)
        or not 400 <= c.status <= 599
        or not c.message.strip()
    ]
    assert not bad, bad


@pytest.mark.nodb
def test_po_files_agree_with_each_other() -> None:
    """The same message id in two domains' .po files must not get two translations
    (the catalogs are merged and one would silently win)."""
    for locale in i18n.SUPPORTED:
        seen: dict[str, dict[str, str]] = defaultdict(dict)
        folder = i18n.locale_dir() / locale / "LC_MESSAGES"
        for po in sorted(folder.glob("*.po")):
            with po.open("rb") as fh:
                for entry in read_po(fh, locale=locale):
                    if entry.id and entry.string and isinstance(entry.id, str):
                        seen[entry.id][po.name] = str(entry.string)
        conflicts = {msgid: files for msgid, files in seen.items() if len(set(files.values())) > 1}
        assert not conflicts, f"{locale}: conflicting translations {conflicts}"


@pytest.mark.nodb
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "zh_CN"),
        ("", "zh_CN"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh_CN"),
        ("zh-TW", "zh_CN"),
        ("en", "en"),
        ("EN-us", "en"),
        ("en_US", "en"),
        ("en-US,en;q=0.9", "en"),
        ("en;q=0.5, zh;q=0.8", "zh_CN"),
        ("zh;q=0.2, en;q=0.9", "en"),
        ("fr-FR, de;q=0.9, en;q=0.5, zh;q=0.4", "en"),
        ("fr, de", "zh_CN"),
        ("*", "zh_CN"),
        ("en;q=abc, zh;q=0.1", "zh_CN"),  # an unreadable q-value ranks last
        (";;;,,,q=,=;", "zh_CN"),
        ("\u00ff\u00fe garbage", "zh_CN"),
    ],
)
def test_accept_language_negotiation(header: str | None, expected: str) -> None:
    assert i18n.negotiate(header) == expected


async def test_responses_follow_accept_language(client: httpx.AsyncClient) -> None:
    async def message(header: str | None) -> str:
        headers = {"Accept-Language": header} if header is not None else {}
        r = await client.get("/api/v1/no-such-route", headers=headers)
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "NOT_FOUND"
        return str(r.json()["error"]["message"])

    assert await message(None) == "未找到"
    assert await message("en-US,en;q=0.9") == "Not found"
    # the language of one request does not stick to the next
    assert await message(None) == "未找到"
    assert await message("zh;q=0.3, en;q=0.7") == "Not found"
    assert await message("fr") == "未找到"
    assert await message("q=;;,,*") == "未找到"


async def test_error_list_is_localized_and_complete(client: httpx.AsyncClient) -> None:
    codes = _import_everything()
    zh = {e["code"]: e for e in (await client.get("/api/v1/errors")).json()}
    en = {
        e["code"]: e
        for e in (await client.get("/api/v1/errors", headers={"Accept-Language": "en"})).json()
    }
    assert set(zh) == set(en) == set(codes)
    assert en["NOT_FOUND"]["message"] == "Not found"
    assert zh["NOT_FOUND"]["message"] == "未找到"
    assert zh["NOT_FOUND"]["status"] == 404
