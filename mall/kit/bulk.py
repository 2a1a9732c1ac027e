"""Many rows of one model in one INSERT, without a model instance per row.

The stream consumers write thousands of rows a second under a burst. Tortoise's
`bulk_create` builds and validates a model instance for each, then converts every field
again: most of a consumer's CPU, on the same cores as the app. `insert_rows` takes
plain mappings of field name -> value and sends one `executemany` on the model's current
connection (the open transaction's, when there is one), so errors are Tortoise's as
usual (IntegrityError for a duplicate key).

What Tortoise would fill in on save is filled here the same way: `auto_now` /
`auto_now_add` from `kit.clock`, a field's `default` (called when callable), else NULL
for a nullable field; a field with none of those must be given. Values are sent as
given but for enums (their value) and JSON fields (the field's own encoding): datetimes
must be aware (the SQLite adapter of `kit.dbtime` writes them as UTC text; asyncpg
takes them as they are).

On PostgreSQL the rows go in by `COPY` (asyncpg's `copy_records_to_table`, the same
codecs as an insert's parameters): measured on `points_entry`, 19 us of the server's
CPU a row where `executemany` took 30 (an executed statement per row, each opening the
table and its indexes). Constraints and errors are the same: a duplicate key fails the
whole COPY with IntegrityError."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError, OperationalError
from tortoise.fields.base import Field
from tortoise.fields.data import JSONField
from tortoise.models import Model

from mall.kit import clock


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    table: str
    columns: tuple[str, ...]
    # per given name: a conversion, or None to send the value as it is
    convert: tuple[Callable[[Any], Any] | None, ...]
    # per column not given: what to send (called once per row)
    fill: tuple[Callable[[], Any], ...]


# one moment for every row and column of an insert_rows call (created_at == updated_at,
# as a save makes them); outside a call, the clock's
_call_now: ContextVar[datetime | None] = ContextVar("mall_bulk_now", default=None)


def _now() -> datetime:
    return _call_now.get() or clock.now()


_plans: dict[tuple[type[Model], tuple[str, ...], str], _Plan] = {}


def _enum_value(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _converter(field: Field[Any]) -> Callable[[Any], Any] | None:
    if isinstance(field, JSONField):
        return lambda value: field.to_db_value(value, field.model)
    if getattr(field, "enum_type", None) is not None:
        return _enum_value
    return None


def _filler(field: Field[Any]) -> Callable[[], Any]:
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return _now
    default = field.default
    if default is not None:
        if callable(default):
            return lambda: _enum_value(default())
        value = _enum_value(default)
        return lambda: value
    if field.null:
        return lambda: None
    raise TypeError(f"{field.model.__name__}.{field.model_field_name} must be given")


def _encoded(field: Field[Any]) -> Callable[[], Any]:
    """The filler of a field left out, its value encoded as a given one would be (a JSON
    field's default list or dict)."""
    fill, convert = _filler(field), _converter(field)
    if convert is None:
        return fill
    return lambda: convert(fill())


def _plan(model: type[Model], names: tuple[str, ...], dialect: str) -> _Plan:
    key = (model, names, dialect)
    found = _plans.get(key)
    if found is not None:
        return found
    meta = model._meta
    projection = meta.fields_db_projection
    unknown = [n for n in names if n not in projection]
    if unknown:
        raise TypeError(f"{model.__name__} has no column for {unknown}")
    rest = [
        name
        for name in projection
        if name not in names and not (name == meta.pk_attr and meta.pk.generated)
    ]
    columns = [projection[n] for n in (*names, *rest)]
    if dialect == "postgres":
        marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    else:
        marks = ", ".join("?" for _ in columns)
    quoted = ", ".join(f'"{c}"' for c in columns)
    found = _Plan(
        sql=f'INSERT INTO "{meta.db_table}" ({quoted}) VALUES ({marks})',
        table=meta.db_table,
        columns=tuple(columns),
        convert=tuple(_converter(meta.fields_map[n]) for n in names),
        fill=tuple(_encoded(meta.fields_map[n]) for n in rest),
    )
    _plans[key] = found
    return found


async def insert_rows(model: type[Model], rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT `rows` (each the same field names, e.g. `member_id`, not `member`) into
    `model`'s table in one statement run for every row."""
    if not rows:
        return
    names = tuple(rows[0])
    conn = model._choose_db(for_write=True)
    plan = _plan(model, names, conn.capabilities.dialect)
    convert, fill = plan.convert, plan.fill
    values: list[list[Any]] = []
    token = _call_now.set(clock.now())
    try:
        for row in rows:
            if len(row) != len(names):
                raise TypeError("insert_rows: every row must give the same fields")
            line = [
                row[name] if conv is None else conv(row[name])
                for name, conv in zip(names, convert, strict=True)
            ]
            line.extend(f() for f in fill)
            values.append(line)
    finally:
        _call_now.reset(token)
    if conn.capabilities.dialect == "postgres":
        await _copy(conn, plan, values)
    else:
        await conn.execute_many(plan.sql, values)


async def _copy(conn: BaseDBAsyncClient, plan: _Plan, values: list[list[Any]]) -> None:
    """`values` into the plan's table by one COPY on `conn`'s connection (the open
    transaction's when there is one: a COPY is one statement, atomic without one), with
    asyncpg's errors as Tortoise's `execute_many` would raise them."""
    import asyncpg  # only with PostgreSQL

    async with conn.acquire_connection() as connection:
        try:
            await connection.copy_records_to_table(
                plan.table, records=values, columns=list(plan.columns)
            )
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(exc) from exc
        except (asyncpg.SyntaxOrAccessError, asyncpg.exceptions.DataError) as exc:
            raise OperationalError(exc) from exc


_IN_CHUNK = 1000  # well under SQLite's and PostgreSQL's limits on parameters


async def select_in(
    model: type[Model], key: str, values: Sequence[Any], columns: Sequence[str]
) -> list[tuple[Any, ...]]:
    """`columns` (field names) of `model`'s rows whose `key` is one of `values`, as tuples
    of what the driver returns (no model instance, and no query built value by value as
    `filter(key__in=...)` does): booleans may come back as 0/1 and enums as their value,
    so convert what you compare. In the open transaction, when there is one."""
    if not values:
        return []
    meta = model._meta
    projection = meta.fields_db_projection
    unknown = [n for n in (key, *columns) if n not in projection]
    if unknown:
        raise TypeError(f"{model.__name__} has no column for {unknown}")
    conn = model._choose_db()
    quoted = ", ".join(f'"{projection[n]}"' for n in columns)
    head = f'SELECT {quoted} FROM "{meta.db_table}" WHERE "{projection[key]}" IN '
    found: list[tuple[Any, ...]] = []
    for start in range(0, len(values), _IN_CHUNK):
        chunk = list(values[start : start + _IN_CHUNK])
        sql = driver_sql(conn, f"{head}({', '.join('?' * len(chunk))})")
        _count, rows = await conn.execute_query(sql, chunk)
        found.extend(tuple(row) for row in rows)
    return found


def driver_sql(conn: BaseDBAsyncClient, sql: str) -> str:
    """`sql` written with `?` placeholders, as the connection's driver takes them (`$1`,
    `$2` ... on PostgreSQL)."""
    if conn.capabilities.dialect == "postgres":
        parts = sql.split("?")
        sql = parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], 1))
    return sql
