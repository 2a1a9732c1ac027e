from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [('models', '0007_pay_certificates_bills')]

    initial = False

    operations = [
        ops.AlterModelOptions(
            name='PointsMallRedemption',
            options={'table': 'pointsmall_redemption', 'app': 'models', 'indexes': [Index(fields=['item_id', 'status']), Index(fields=['member_id', 'item_id'])], 'pk_attr': 'id', 'table_description': 'One redemption: written by the consumer in the same transaction as the points'},
        ),
        ops.AddField(
            model_name='PointsMallRedemption',
            name='release_reason',
            field=fields.CharField(default='', max_length=32),
        ),
    ]
