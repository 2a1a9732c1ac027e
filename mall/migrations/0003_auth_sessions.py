from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0002_member_deleted_at')]

    initial = False

    operations = [
        ops.CreateModel(
            name='AuthSession',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('kind', fields.CharField(max_length=8)),
                ('subject_id', fields.BigIntField(description='Member or staff id, by kind')),
                ('refresh_jti', fields.CharField(max_length=32)),
                ('rotations', fields.IntField(default=0)),
                ('ip', fields.CharField(default='', max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('last_used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('expires_at', fields.DatetimeField(description='When the newest refresh token lapses', auto_now=False, auto_now_add=False)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('revoked_reason', fields.CharField(default='', max_length=16)),
            ],
            options={'table': 'auth_session', 'app': 'models', 'indexes': [Index(fields=['kind', 'subject_id'])], 'pk_attr': 'id', 'table_description': 'One login of a member or a staff account: the family of its refresh tokens.'},
            bases=['Model'],
        ),
        ops.RemoveField(model_name='Staff', name='failed_logins'),
        ops.RemoveField(model_name='Staff', name='locked_until'),
    ]
