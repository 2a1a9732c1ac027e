"""The hot-stock kit: one way to hold a stock in Redis, for every domain that does
(flash sales, points mall, blind boxes, coupons).

A *pool* is the Redis side of one hot object (an item, a series, a coupon template): its
keys share one hash tag, `{<prefix>:<id>}:<part>`, so every script touches one cluster
slot. Standard parts: `meta` (terms, and `initial`: the units the database allots),
`stock` (units left: a number, or a hash when a pool holds several kinds of unit),
`buyers` (units per member, for limits) and `returned` (reservation ids given back).

Invariants, the same in every domain:
- The database is the record of truth. A cold pool (no `meta`) is loaded from it; a
  warm never resets a count that is there (`Warm`).
- A decision script answering `cold` is warmed and run again, once (`decide`).
- Units go back exactly once per reservation id (`give_back`).
- Redis never holds more than the database allows: a decrease of the stock goes to
  Redis first, an increase after the database commits (`adjust`); a crash between
  leaves Redis short, never over, and the reconciler repairs it (`repair_persistent`:
  a drift seen the same on two runs in a row).
- Per pool: `redis + held + in_flight + returns_due == initial`, judged on a reading
  taken twice the same (`balance`).

Scripts reply in one format (`reply.py`): `status` or `status|value|...`, with the
statuses named here; each domain's Lua keeps only its own decision and runs with the
shared helpers of `lua/library.lua` (`script(package, name)`).

A decision persisted later goes through the pool's stream (`stream.py`: `Stream`, and
`StreamConsumer`, which hands batches of entries to the domain and acknowledges them
after its commit)."""

from mall.kit.stock.pool import (
    Balance,
    Pool,
    PoolKeys,
    Warm,
    adjust,
    balance,
    decide,
    give_back,
    repair,
    repair_persistent,
    script,
    snapshot,
    warm_cold,
)
from mall.kit.stock.reply import COLD, DUP, OK, SHORT, WARM, Reply, parse
from mall.kit.stock.stream import Entry, PersistBatch, Stream, StreamConsumer, in_halves

__all__ = [
    "COLD",
    "DUP",
    "OK",
    "SHORT",
    "WARM",
    "Balance",
    "Entry",
    "PersistBatch",
    "Pool",
    "PoolKeys",
    "Reply",
    "Stream",
    "StreamConsumer",
    "Warm",
    "adjust",
    "balance",
    "decide",
    "give_back",
    "in_halves",
    "parse",
    "repair",
    "repair_persistent",
    "script",
    "snapshot",
    "warm_cold",
]
