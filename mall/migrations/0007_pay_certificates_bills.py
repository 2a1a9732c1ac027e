from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0006_seckill_payment')]

    initial = False

    operations = [
        ops.CreateModel(
            name='PayReconciliation',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('bill_date', fields.DateField(unique=True)),
                ('status', fields.CharField(max_length=16)),
                ('payments', fields.IntField(default=0)),
                ('paid_fen', fields.BigIntField(default=0)),
                ('refunds', fields.IntField(default=0)),
                ('refunded_fen', fields.BigIntField(default=0)),
                ('mismatches', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('error', fields.CharField(default='', max_length=255)),
                ('ran_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'wechat_pay_reconciliation', 'app': 'models', 'pk_attr': 'id', 'table_description': "WeChat Pay's trade and refund bills of one Shanghai day against the mall's records."},
            bases=['Model'],
        ),
    ]
