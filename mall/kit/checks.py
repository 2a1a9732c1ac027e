"""What a domain offers the operator besides jobs: consistency checks and drills.

Each domain's `tasks.py` may define `CHECKS: dict[str, CheckFn]` (`mall check NAME`) and
`DRILLS: dict[str, DrillFn]` (`mall drill NAME ...`); `mall.domains` collects them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date
from typing import Any

# `mall check NAME --date YYYY-MM-DD`: the day a check about one day (e.g. `pay`) looks
# at; None means its own default (for `pay`: yesterday in Shanghai)
check_day: ContextVar[date | None] = ContextVar("check_day", default=None)


@dataclass
class CheckReport:
    """What `mall check NAME` prints; `ok=False` makes the command exit non-zero."""

    name: str
    ok: bool = True
    lines: list[str] = field(default_factory=list)

    def fail(self, line: str) -> None:
        self.ok = False
        self.lines.append("MISMATCH " + line)


CheckFn = Callable[[], Awaitable[CheckReport]]
DrillFn = Callable[[list[str]], Coroutine[Any, Any, int]]
