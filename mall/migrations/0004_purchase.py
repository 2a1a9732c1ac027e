from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0003_auth_sessions')]

    initial = False

    operations = [
        ops.CreateModel(
            name='PointsDebt',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('member', fields.ForeignKeyField('models.Member', source_field='member_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('entry_id', fields.BigIntField(unique=True)),
                ('original_entry_id', fields.BigIntField(db_index=True)),
                ('points', fields.BigIntField()),
                ('remaining', fields.BigIntField()),
                ('reason', fields.CharField(default='', max_length=128)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('settled_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'points_debt', 'app': 'models', 'indexes': [Index(fields=['member_id', 'remaining'])], 'pk_attr': 'id', 'table_description': 'Points a claw-back could not take because they were already spent: owed, never a'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Coupon',
            name='void_reason',
            field=fields.CharField(default='', max_length=128),
        ),
        ops.AddField(
            model_name='Coupon',
            name='voided_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='ExternalOrder',
            name='points_reversed',
            field=fields.BigIntField(default=0),
        ),
        ops.AddField(
            model_name='ExternalOrder',
            name='refunded_at_bind_fen',
            field=fields.BigIntField(default=0),
        ),
        ops.AddField(
            model_name='ExternalOrder',
            name='refunded_fen',
            field=fields.BigIntField(default=0),
        ),
        ops.AlterModelOptions(
            name='LevelChange',
            options={'table': 'points_level_change', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A member moved from one level to another (growth moved, or the thresholds did).'},
        ),
        ops.AddField(
            model_name='LevelChange',
            name='reason',
            field=fields.CharField(default='growth', max_length=16),
        ),
        ops.AddField(
            model_name='LevelChange',
            name='rules_version',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='OrderRefund',
            name='cash_attempt',
            field=fields.IntField(default=0),
        ),
        ops.AddField(
            model_name='OrderRefund',
            name='resolution',
            field=fields.CharField(default='', max_length=16),
        ),
        ops.AddField(
            model_name='OrderRefund',
            name='resolution_note',
            field=fields.CharField(default='', max_length=255),
        ),
        ops.AddField(
            model_name='OrderRefund',
            name='resolved_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='OrderRefund',
            name='resolved_by',
            field=fields.BigIntField(null=True),
        ),
        ops.AlterModelOptions(
            name='PointsHold',
            options={'table': 'points_hold', 'app': 'models', 'indexes': [Index(fields=['status', 'expires_at'])], 'pk_attr': 'id', 'table_description': 'Points reserved for a checkout: `held` until captured or voided (or timed out).'},
        ),
        ops.AddField(
            model_name='PointsHold',
            name='expires_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddIndex(
            model_name='PointsHold',
            index=Index(fields=['status', 'expires_at']),
        ),
        ops.AddField(
            model_name='TopUpRefund',
            name='attempt',
            field=fields.IntField(default=0),
        ),
        ops.AddField(
            model_name='TopUpRefund',
            name='resolution',
            field=fields.CharField(default='', max_length=16),
        ),
        ops.AddField(
            model_name='TopUpRefund',
            name='resolution_note',
            field=fields.CharField(default='', max_length=255),
        ),
        ops.AddField(
            model_name='TopUpRefund',
            name='resolved_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='TopUpRefund',
            name='resolved_by',
            field=fields.BigIntField(null=True),
        ),
    ]
