"""Blind-box draws persisted after the answer: a draw is confirmed or released (with a
reason, its unit given back once), reservation ids carry the series id, and each
prize counts its confirmed draws (`drawn`, the database's stock guard), filled here
from the draw log."""

from typing import Any

from tortoise import migrations
from tortoise.migrations import operations as ops
from mall.blindbox.models import DrawStatus
from tortoise import fields


async def count_drawn(apps: Any, schema_editor: Any) -> None:
    await schema_editor.client.execute_script(
        "UPDATE blindbox_prize SET drawn = "
        "(SELECT COUNT(*) FROM blindbox_draw WHERE blindbox_draw.prize_id = blindbox_prize.id)"
    )


class Migration(migrations.Migration):
    dependencies = [('models', '0009_fair_sales')]

    initial = False

    operations = [
        ops.AlterField(
            model_name='BlindBoxDraw',
            name='draw_id',
            field=fields.CharField(unique=True, max_length=48),
        ),
        ops.AddField(
            model_name='BlindBoxDraw',
            name='release_reason',
            field=fields.CharField(default='', max_length=32),
        ),
        ops.AddField(
            model_name='BlindBoxDraw',
            name='status',
            field=fields.CharEnumField(default=DrawStatus.CONFIRMED, description='CONFIRMED: confirmed\nRELEASED: released', enum_type=DrawStatus, max_length=16),
        ),
        ops.AddField(
            model_name='BlindBoxDraw',
            name='stock_returned',
            field=fields.BooleanField(default=False),
        ),
        ops.AddField(
            model_name='BlindBoxPrize',
            name='drawn',
            field=fields.IntField(default=0),
        ),
        ops.RunPython(count_drawn, ops.RunPython.noop),
    ]
