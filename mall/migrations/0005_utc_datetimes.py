"""Data only: datetimes on SQLite rewritten as UTC text.

SQLite keeps datetimes as text and compares them as text; before mall.kit.dbtime each was
written with the offset it came with (coupon expiry at +08:00, times typed in the console),
so text order was not time order. Every TIMESTAMP value not already in UTC is rewritten
in the format the adapter now writes (`YYYY-MM-DD HH:MM:SS[.ffffff]+00:00`); a value
without an offset was always read as UTC and is written so. PostgreSQL: nothing to do."""

from datetime import UTC, datetime
from typing import Any

from tortoise import migrations
from tortoise.migrations import operations as ops


async def datetimes_to_utc_text(apps: Any, schema_editor: Any) -> None:
    client = schema_editor.client
    if client.capabilities.dialect != "sqlite":
        return
    _n, tables = await client.execute_query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )
    for table in [str(t[0]) for t in tables]:
        _n, columns = await client.execute_query(f'PRAGMA table_info("{table}")')
        for column in [str(c[1]) for c in columns if str(c[2]).upper() == "TIMESTAMP"]:
            _n, rows = await client.execute_query(
                f'SELECT rowid, "{column}" FROM "{table}" '
                f'WHERE "{column}" IS NOT NULL AND "{column}" NOT LIKE ?',
                ["%+00:00"],
            )
            for rowid, value in [(r[0], r[1]) for r in rows]:
                try:
                    moment = datetime.fromisoformat(str(value))
                except ValueError:
                    continue  # not a datetime Tortoise could read either: left as it is
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                await client.execute_query(
                    f'UPDATE "{table}" SET "{column}" = ? WHERE rowid = ?',
                    [moment.astimezone(UTC).isoformat(" "), rowid],
                )


class Migration(migrations.Migration):
    dependencies = [("models", "0004_purchase")]

    initial = False

    operations = [
        ops.RunPython(datetimes_to_utc_text, ops.RunPython.noop),
    ]
