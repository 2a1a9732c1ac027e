from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0002_member_deleted_at')]

    initial = False

    operations = [
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
    ]
