"""The shared bounded integers and safe text types (mall.kit.bounds, mall.kit.text)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from mall.kit import bounds, text

pytestmark = pytest.mark.nodb

BIG = [2**63, 10**19, 10**20, 99999999999999999999]


def _ok(kind: Any, value: object) -> Any:
    return TypeAdapter(kind).validate_python(value)


def _refused(kind: Any, value: object) -> str:
    with pytest.raises(ValidationError) as exc:
        TypeAdapter(kind).validate_python(value)
    return str(exc.value.errors()[0]["type"])


@pytest.mark.parametrize("value", [0, -1, *BIG, 1e30])
def test_id_refuses_what_is_no_bigint_row_id(value: object) -> None:
    _refused(bounds.Id, value)


def test_id_takes_the_whole_bigint_range() -> None:
    assert _ok(bounds.Id, 1) == 1
    assert _ok(bounds.Id, 2**63 - 1) == 2**63 - 1
    assert _ok(bounds.Id, "42") == 42  # path and query values arrive as text


@pytest.mark.parametrize(
    ("kind", "low", "high"),
    [
        (bounds.Fen, 0, bounds.MAX_FEN),
        (bounds.SignedFen, -bounds.MAX_FEN, bounds.MAX_FEN),
        (bounds.Points, 0, bounds.MAX_POINTS),
        (bounds.SignedPoints, -bounds.MAX_POINTS, bounds.MAX_POINTS),
        (bounds.Count, 0, bounds.MAX_COUNT),
        (bounds.Quantity, 1, bounds.MAX_COUNT),
        (bounds.SignedCount, -bounds.MAX_COUNT, bounds.MAX_COUNT),
        (bounds.Percent, 0, 100),
        (bounds.Limit, 1, bounds.PAGE_MAX),
        (bounds.Version, 0, bounds.INT_MAX),
    ],
)
def test_each_bound_is_inclusive_and_refuses_one_beyond(kind: Any, low: int, high: int) -> None:
    assert _ok(kind, low) == low and _ok(kind, high) == high
    assert _refused(kind, low - 1) == "greater_than_equal"
    assert _refused(kind, high + 1) == "less_than_equal"
    for value in BIG:
        assert _refused(kind, value) == "less_than_equal"
        assert _refused(kind, -value) == "greater_than_equal"


def test_ceilings_fit_their_columns() -> None:
    # money in BIGINT with room for a million sums; counts and points in 32-bit INTEGER
    assert bounds.MAX_FEN * 1_000_000 < bounds.BIGINT_MAX
    assert bounds.MAX_COUNT * 2 < bounds.INT_MAX and bounds.MAX_POINTS * 2 < bounds.INT_MAX


@pytest.mark.parametrize("value", ["", "1", "42", "9223372036854775807"])
def test_cursor_takes_digits_that_fit(value: str) -> None:
    assert _ok(bounds.Cursor, value) == value


@pytest.mark.parametrize(
    "value", ["9223372036854775808", "99999999999999999999", "-1", "1e5", "abc", "٣", " 1"]
)
def test_cursor_refuses_the_rest(value: str) -> None:
    _refused(bounds.Cursor, value)


# --- text --------------------------------------------------------------------------

FORBIDDEN_EVERYWHERE = [
    "\x00",  # NUL (PostgreSQL cannot store it)
    "\x07",  # BEL
    "\x1b",  # ESC (terminal escapes in logs and exports)
    "\x7f",  # DEL
    "\x85",  # C1 NEL
    "\x9b",  # C1 CSI
    "\u202a",  # LRE
    "\u202b",  # RLE
    "\u202c",  # PDF
    "\u202d",  # LRO
    "\u202e",  # RLO
    "\u2066",  # LRI
    "\u2067",  # RLI
    "\u2068",  # FSI
    "\u2069",  # PDI
    "\u200e",  # LRM
    "\u200f",  # RLM
    "\u061c",  # ALM
]


@pytest.mark.parametrize("char", FORBIDDEN_EVERYWHERE)
@pytest.mark.parametrize("kind", [text.SafeLine, text.SafeText])
def test_control_and_direction_characters_are_refused(kind: Any, char: str) -> None:
    assert _refused(kind, f"张三{char}abc") == "text_forbidden_character"


@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\u2028", "\u2029"])
def test_line_breaks_only_in_multi_line_text(char: str) -> None:
    assert _refused(text.SafeLine, f"a{char}b") == "text_forbidden_character"
    assert _ok(text.SafeText, f"a{char}b") == f"a{char}b"


def test_text_is_stripped_and_keeps_what_people_write() -> None:
    assert _ok(text.SafeLine, " \u3000张三 \t") == "张三"
    assert _ok(text.SafeText, "\n第一行\n第二行\n") == "第一行\n第二行"
    for fine in ["Zoë 👨‍👩‍👧 😀", "O'Brien-Smith", "北京市 朝阳区 1 号", "مرحبا", "שלום"]:
        assert _ok(text.SafeLine, fine) == fine  # emoji ZWJ sequences, RTL scripts stay


def test_lone_surrogates_are_refused_as_text() -> None:
    _refused(text.SafeLine, "a\ud800b")


@pytest.mark.parametrize(
    "url",
    [
        "https://thirdwx.qlogo.cn/mmopen/vi_32/Q0j4TwGTfTK/132",
        "http://example.com",
        "https://cdn.example.com/a.png?x=1&y=2#top",
        "",  # removes the avatar
    ],
)
def test_web_url_takes_http_and_https(url: str) -> None:
    assert _ok(text.WebUrl, url) == url


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(document.cookie)",
        " javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox",
        "file:///etc/passwd",
        "ftp://example.com/a.png",
        "//evil.example/a.png",
        "/static/uploads/a.png",
        "https://",
        "https://exa mple.com",
        "https://example.com/\x00",
        "https://example.com/a\u202eb",
        "https:\\\\evil.example",
    ],
)
def test_web_url_refuses_other_schemes_and_junk(url: str) -> None:
    assert _refused(text.WebUrl, url) == "url_not_allowed"


def test_image_ref_adds_paths_on_this_site_only() -> None:
    assert (
        _ok(text.ImageRef, "/static/uploads/ab/abc-750.webp") == "/static/uploads/ab/abc-750.webp"
    )
    assert _ok(text.ImageRef, "https://cdn.example.com/a.webp")
    for bad in ["//evil.example/a.png", "/\\evil.example", "javascript:alert(1)", "a.png"]:
        assert _refused(text.ImageRef, bad) == "url_not_allowed"


def test_the_openapi_patterns_say_what_the_validators_do() -> None:
    import re

    cases = ["ok", "a\x00", "a\u202e", "a\nb", "https://x.cn", "javascript:x", "/p", "//h"]
    checks = [
        (text.LINE_PATTERN, text.SafeLine),
        (text.TEXT_PATTERN, text.SafeText),
        (text.WEB_URL_PATTERN, text.WebUrl),
        (text.IMAGE_REF_PATTERN, text.ImageRef),
    ]
    for pattern, kind in checks:
        for value in cases:
            try:
                TypeAdapter(kind).validate_python(value)
                accepted = True
            except ValidationError:
                accepted = False
            assert bool(re.match(pattern, value)) == accepted, (pattern, value)
