"""Fair sales: session eligibility rules, bookings, member flags, and a normalized key
on delivery addresses (filled here for the addresses saved before it existed)."""

from typing import Any

from tortoise import migrations
from tortoise.migrations import operations as ops
from mall.seckill.models import BookingReminder
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

async def fill_address_keys(apps: Any, schema_editor: Any) -> None:
    from mall.kit.text import address_key

    client = schema_editor.client
    _n, rows = await client.execute_query(
        "SELECT id, region, detail FROM address WHERE match_key = ''"
    )
    mark = "?" if client.capabilities.dialect == "sqlite" else "$1"
    mark2 = "?" if client.capabilities.dialect == "sqlite" else "$2"
    for row in rows:
        await client.execute_query(
            f"UPDATE address SET match_key = {mark} WHERE id = {mark2}",
            [address_key(str(row[1]), str(row[2])), row[0]],
        )


class Migration(migrations.Migration):
    dependencies = [('models', '0008_pointsmall_release_reason')]

    initial = False

    operations = [
        ops.CreateModel(
            name='MemberFlag',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('member_id', fields.BigIntField(unique=True)),
                ('reason', fields.CharField(max_length=200)),
                ('flagged_by', fields.CharField(default='', max_length=64)),
                ('flagged_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'member_flag', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A member ops flagged as a suspected scalper: sessions with `exclude_flagged` turn'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SeckillBooking',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('session', fields.ForeignKeyField('models.SeckillSession', source_field='session_id', db_constraint=True, to_field='id', related_name='bookings', on_delete=OnDelete.CASCADE)),
                ('member_id', fields.BigIntField()),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('cancelled_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('reminder', fields.CharEnumField(default=BookingReminder.DUE, description='DUE: due\nSENDING: sending\nSENT: sent\nNO_GRANT: no_grant\nCAPPED: capped\nREFUSED: refused\nCANCELLED: cancelled', enum_type=BookingReminder, max_length=16)),
                ('reminded_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'seckill_booking', 'app': 'models', 'unique_together': (('session_id', 'member_id'),), 'indexes': [Index(fields=['member_id', 'created_at'])], 'pk_attr': 'id', 'table_description': "A member's booking (预约) of a session: a reminder before it starts, and the"},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Address',
            name='match_key',
            field=fields.CharField(default='', db_index=True, max_length=40),
        ),
        ops.AddField(
            model_name='SeckillSession',
            name='exclude_flagged',
            field=fields.BooleanField(default=False),
        ),
        ops.AddField(
            model_name='SeckillSession',
            name='joined_before',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='SeckillSession',
            name='min_level',
            field=fields.IntField(default=0),
        ),
        ops.AddField(
            model_name='SeckillSession',
            name='require_booking',
            field=fields.BooleanField(default=False),
        ),
        ops.AddField(
            model_name='SeckillSession',
            name='require_phone',
            field=fields.BooleanField(default=False),
        ),
        ops.RunPython(fill_address_keys, ops.RunPython.noop),
    ]
