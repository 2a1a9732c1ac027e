"""Text a client sends that is stored and shown again: names, addresses, nicknames,
titles, reasons, descriptions, URLs.

- Surrounding whitespace is stripped (Unicode whitespace, e.g. the ideographic space).
- Control characters are refused: C0 (NUL, BEL, ESC, ...), DEL and C1. `SafeText`
  (multi-line: descriptions, rules) still allows tab, line feed and carriage return.
  NUL also cannot be stored by PostgreSQL, so refusing it here keeps it from a 500.
- Text-direction controls are refused: the embeddings and overrides U+202A..U+202E, the
  isolates U+2066..U+2069, and also the marks U+200E, U+200F and U+061C. The marks do
  not reorder runs by themselves but are invisible and only help spoof how a name or
  an address reads; the mini-program renders text in its natural direction anyway.
- Single-line fields also refuse U+2028 / U+2029 (line and paragraph separators).
- Lone surrogates never get this far: pydantic refuses them as invalid strings.

Lengths stay on each field (`Field(min_length=1, max_length=32)`), after stripping.
The OpenAPI document shows each rule as a `pattern`."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints
from pydantic_core import PydanticCustomError

# one character class each, written so that Python's `re` and JSON Schema read it alike
_DIRECTION = r"\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_LINE_FORBIDDEN = r"\x00-\x1f\x7f-\x9f\u2028\u2029" + _DIRECTION
_TEXT_FORBIDDEN = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f" + _DIRECTION

LINE_PATTERN = f"^[^{_LINE_FORBIDDEN}]*$"
TEXT_PATTERN = f"^[^{_TEXT_FORBIDDEN}]*$"
# absolute http(s) URL: a host, then no whitespace, control or direction characters or
# backslashes (browsers read a backslash as a slash)
_URL_CHAR = r"[^\s\\\x00-\x1f\x7f-\x9f" + _DIRECTION + "]"
_URL_HOST = r"[^\s/?#\\\x00-\x1f\x7f-\x9f" + _DIRECTION + "]+"
WEB_URL_PATTERN = f"^(https?://{_URL_HOST}([/?#]{_URL_CHAR}*)?)?$"
# that, or a path on this site ("/static/uploads/..."; "//host" would be another site)
IMAGE_REF_PATTERN = f"^((https?://{_URL_HOST}|/(?![/\\\\]))([/?#]?{_URL_CHAR}*)?)?$"

_line_bad = re.compile(f"[{_LINE_FORBIDDEN}]")
_text_bad = re.compile(f"[{_TEXT_FORBIDDEN}]")
_web_url = re.compile(WEB_URL_PATTERN)
_image_ref = re.compile(IMAGE_REF_PATTERN)


def _refuse(found: re.Match[str]) -> PydanticCustomError:
    return PydanticCustomError(
        "text_forbidden_character",
        "Control and text-direction characters are not allowed (found U+{codepoint})",
        {"codepoint": f"{ord(found.group()):04X}"},
    )


def scrub(value: str) -> str:
    """`value` with control and direction characters replaced by U+FFFD: for echoing
    input back (an import's row errors) without passing those characters on."""
    return _line_bad.sub("\ufffd", value)


def _check_line(value: str) -> str:
    found = _line_bad.search(value)
    if found:
        raise _refuse(found)
    return value


def _check_text(value: str) -> str:
    found = _text_bad.search(value)
    if found:
        raise _refuse(found)
    return value


def _check_web_url(value: str) -> str:
    if not _web_url.match(value):
        raise PydanticCustomError("url_not_allowed", "Only an http:// or https:// URL is allowed")
    return value


def _check_image_ref(value: str) -> str:
    if not _image_ref.match(value):
        raise PydanticCustomError(
            "url_not_allowed", "Only an http:// or https:// URL or a path on this site is allowed"
        )
    return value


SafeLine = Annotated[
    str,
    StringConstraints(strip_whitespace=True),
    AfterValidator(_check_line),
    Field(json_schema_extra={"pattern": LINE_PATTERN}),
]
"""One line of text: a name, title, nickname, reason, address part."""

SafeText = Annotated[
    str,
    StringConstraints(strip_whitespace=True),
    AfterValidator(_check_text),
    Field(json_schema_extra={"pattern": TEXT_PATTERN}),
]
"""Text that may span lines (tab, CR and LF allowed): descriptions, rules."""

WebUrl = Annotated[
    str,
    StringConstraints(strip_whitespace=True),
    AfterValidator(_check_web_url),
    Field(json_schema_extra={"pattern": WEB_URL_PATTERN}),
]
"""An absolute http(s) URL, or "" for none (so `javascript:` and `data:` are refused)."""

ImageRef = Annotated[
    str,
    StringConstraints(strip_whitespace=True),
    AfterValidator(_check_image_ref),
    Field(json_schema_extra={"pattern": IMAGE_REF_PATTERN}),
]
"""An image: an http(s) URL or a path on this site from the upload route; "" for none."""


_NOT_WORD = re.compile(r"[\W_]+")


def address_key(region: str, detail: str) -> str:
    """One key for one delivery address however it is typed: full-width and half-width
    forms folded (NFKC), case folded, spaces and punctuation dropped, then hashed (sha1
    hex, 40 characters). Finds many accounts shipping to one place."""
    folded = unicodedata.normalize("NFKC", f"{region}{detail}").casefold()
    return hashlib.sha1(_NOT_WORD.sub("", folded).encode()).hexdigest()
