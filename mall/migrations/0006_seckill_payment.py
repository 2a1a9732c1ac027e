from tortoise import migrations
from tortoise.migrations import operations as ops
from mall.seckill.models import OrderStatus
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0005_utc_datetimes')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Order',
            name='source',
            field=fields.CharField(default='', max_length=16),
        ),
        ops.AddField(
            model_name='Order',
            name='source_ref',
            field=fields.CharField(null=True, unique=True, max_length=64),
        ),
        ops.AlterField(
            model_name='SeckillOrder',
            name='status',
            field=fields.CharEnumField(db_index=True, description='CONFIRMED: confirmed\nPENDING_PAYMENT: pending_payment\nPAID: paid\nEXPIRED: expired\nRELEASED: released\nREFUNDED: refunded', enum_type=OrderStatus, max_length=16),
        ),
        ops.AddField(
            model_name='SeckillOrder',
            name='mall_order_id',
            field=fields.BigIntField(null=True, unique=True),
        ),
        ops.AddField(
            model_name='BlindBoxDraw',
            name='mall_order_id',
            field=fields.BigIntField(null=True, unique=True),
        ),
    ]
