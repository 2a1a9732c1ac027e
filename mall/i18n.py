"""Message catalogs from `locale/<lang>/LC_MESSAGES/*.po`, chosen by Accept-Language.

Message ids are English; zh_CN is the default locale. Each domain may keep its own
`.po` file; all files of a language are merged. Catalogs are read with Babel, so no
compile step is needed to run from a checkout."""

from __future__ import annotations

from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Any

from babel.messages.pofile import read_po

SUPPORTED = ("zh_CN", "en")
DEFAULT_LOCALE = "zh_CN"

_current: ContextVar[str] = ContextVar("mall_locale", default=DEFAULT_LOCALE)


def _(message: str) -> str:
    """Mark a message id for extraction; translation happens when it is rendered."""
    return message


def locale_dir() -> Path:
    """`mall/_locale`: a link to the top-level locale/ folder in the source tree, a real
    folder in the wheel."""
    return Path(__file__).resolve().parent / "_locale"


@cache
def catalog(locale: str) -> dict[str, str]:
    messages: dict[str, str] = {}
    folder = locale_dir() / locale / "LC_MESSAGES"
    if not folder.is_dir():
        return messages
    for po in sorted(folder.glob("*.po")):
        with po.open("rb") as fh:
            for entry in read_po(fh, locale=locale):
                if entry.id and entry.string and isinstance(entry.id, str):
                    messages[entry.id] = str(entry.string)
    return messages


def negotiate(accept_language: str | None, default: str = DEFAULT_LOCALE) -> str:
    """Pick zh_CN or en from an Accept-Language header, honouring q-values."""
    if not accept_language:
        return default
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept_language.split(",")):
        piece = part.strip()
        if not piece:
            continue
        tag, _sep, params = piece.partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if quality > 0:  # q=0 means "not acceptable"
            ranked.append((-quality, index, tag.strip().lower().replace("_", "-")))
    for _q, _i, tag in sorted(ranked):
        if tag.startswith("zh"):
            return "zh_CN"
        if tag.startswith("en"):
            return "en"
    return default


def set_locale(locale: str) -> None:
    _current.set(locale if locale in SUPPORTED else DEFAULT_LOCALE)


def get_locale() -> str:
    return _current.get()


def translate(message: str, locale: str | None = None, **params: Any) -> str:
    text = catalog(locale or get_locale()).get(message, message)
    if params:
        try:
            return text.format(**params)
        except (KeyError, IndexError, ValueError):
            return text
    return text
