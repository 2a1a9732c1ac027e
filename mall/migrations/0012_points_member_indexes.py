"""Drop the points entry's and lot's single-column member index: the composite indexes
(member_id, id) and (member_id, remaining) serve every lookup by member, and each
redemption, draw or earn wrote both for nothing."""

from __future__ import annotations

from typing import Any

from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.migrations import operations as ops


class DropFieldIndex(ops.AlterField):
    """The model state's AlterField (the field loses `db_index`), done in the database
    as one DROP INDEX: Tortoise's SQLite editor alters a column by rebuilding the table,
    and the rebuilt table would lose its other indexes."""

    def __init__(self, model_name: str, name: str, field: Any, *, index: str, table: str,
                 column: str) -> None:  # fmt: skip
        super().__init__(model_name, name, field)
        self.index, self.table, self.column = index, table, column

    async def database_forward(
        self, app_label: str, old_state: Any, new_state: Any, state_editor: Any = None
    ) -> None:
        if state_editor:
            await state_editor._run_sql(f'DROP INDEX IF EXISTS "{self.index}"')

    async def database_backward(
        self, app_label: str, old_state: Any, new_state: Any, state_editor: Any = None
    ) -> None:
        if state_editor:
            await state_editor._run_sql(
                f'CREATE INDEX IF NOT EXISTS "{self.index}" ON "{self.table}" ("{self.column}")'
            )


def _member() -> Any:
    return fields.ForeignKeyField(
        "models.Member",
        source_field="member_id",
        db_constraint=True,
        to_field="id",
        related_name=False,
        on_delete=OnDelete.RESTRICT,
    )


class Migration(migrations.Migration):
    dependencies = [("models", "0011_pointsmall_cash_price")]

    initial = False

    operations = [
        DropFieldIndex(
            "PointsEntry",
            "member",
            _member(),
            index="idx_points_entr_member__c57ad2",
            table="points_entry",
            column="member_id",
        ),
        DropFieldIndex(
            "PointsLot",
            "member",
            _member(),
            index="idx_points_lot_member__f4ba6a",
            table="points_lot",
            column="member_id",
        ),
    ]
