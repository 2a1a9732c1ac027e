from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

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
    ]
