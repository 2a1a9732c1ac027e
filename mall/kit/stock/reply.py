"""The one reply format of every stock script: a single string, `status` or
`status|value|value...` (only the last value may contain `|`).

One bulk string is the cheapest reply for redis-py to read (no hiredis: each element
of an array reply is parsed in Python), and a burst of `sold_out` answers compares one
string. Statuses shared by the kit's scripts are named here; a domain names its own
next to its decision script."""

from __future__ import annotations

from typing import NamedTuple

OK = "ok"
COLD = "cold"  # the pool is not loaded in Redis: warm it from the database
WARM = "warm"  # warm.lua: the pool was loaded already
DUP = "dup"  # give_back.lua: this reservation was given back before
SHORT = "short"  # adjust_stock.lua: fewer units left than the change takes away


class Reply(NamedTuple):
    status: str
    values: tuple[str, ...]

    def number(self, index: int = 0) -> int:
        return int(self.values[index])

    def __str__(self) -> str:
        return "|".join((self.status, *self.values))


def parse(raw: object, values: int | None = None) -> Reply:
    """Read a script's reply; `values`: how many values it carries at most (the last
    one keeps any `|` it contains)."""
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    status, *rest = text.split("|", -1 if values is None else values)
    return Reply(status, tuple(rest))
