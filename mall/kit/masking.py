"""Phone numbers leave the system masked (138****8000) unless the reader may see them.

Three places, one rule:
- API answers: fields typed `Phone` are masked while `phones_masked()` is in force. The
  admin router turns it on for every ops route; a route that lets the admin role see a
  full number turns it off for its own request (and audits that).
- CSV exports: write `phone_out(value)`, which follows the same switch.
- Logs: `install_log_masking()` masks mainland mobile numbers in every log record of
  the process, whatever logger or library wrote it.

The switch is a context variable, so it holds for one request (its task) only."""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Annotated, Any

from pydantic import PlainSerializer

_masked: ContextVar[bool] = ContextVar("mall_phones_masked", default=False)


def mask_phone(value: str) -> str:
    """`13800138000` -> `138****8000`; short values keep at most their last two."""
    if len(value) >= 8:
        return f"{value[:3]}****{value[-4:]}"
    if len(value) > 4:
        return f"{'*' * (len(value) - 2)}{value[-2:]}"
    return "*" * len(value)


def masking() -> bool:
    return _masked.get()


def set_masking(on: bool) -> None:
    """Mask (or show) phones for the rest of the current request."""
    _masked.set(on)


async def phones_masked() -> AsyncIterator[None]:
    """A FastAPI dependency: phones are masked while the request runs (and its response
    streams); the previous state comes back after, so nothing leaks to the next request."""
    token = _masked.set(True)
    try:
        yield
    finally:
        _masked.reset(token)


def phone_out(value: str | None) -> str | None:
    """A phone as the current reader may see it (for CSV cells and hand-built answers)."""
    if value is None or not _masked.get():
        return value
    return mask_phone(value)


def _serialize(value: str) -> str:
    return mask_phone(value) if value and _masked.get() else value


# JSON only: answers (and cached idempotent answers) are masked, while a python-mode
# `model_dump()` that a service stores (an order's address snapshot) keeps the number
Phone = Annotated[str, PlainSerializer(_serialize, return_type=str, when_used="json")]
"""A phone number in an answer: masked while `phones_masked()` is in force."""


# --- logs ------------------------------------------------------------------------------

# a mainland mobile number, bare or with +86 / 86, not part of a longer digit run
_MOBILE = re.compile(r"(?<![\d])((?:\+?86[ -]?)?)(1[3-9]\d)(\d{4})(\d{4})(?!\d)")


def mask_text(text: str) -> str:
    """Mask every mainland mobile number in free text (log lines, error messages)."""
    return _MOBILE.sub(lambda m: f"{m.group(1)}{m.group(2)}****{m.group(4)}", text)


_installed = False


def install_log_masking() -> None:
    """Mask mobile numbers in every log record of this process (messages and tracebacks).

    A record factory sees each record once, before any handler or formatter, so it
    covers our loggers, uvicorn's and the libraries' alike. Safe to call twice."""
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is the handler's problem, as before
            return record
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = mask_text(text)
        return record

    logging.setLogRecordFactory(factory)
