"""Points + cash prices in the points mall: an item's cash part per unit, and on a
redemption its cash part, payment deadline, points hold, paying order and whether an
unpaid one's units went back to Redis."""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0010_blindbox_draw_status")]

    initial = False

    operations = [
        ops.AddField(
            model_name="PointsMallItem",
            name="cash_price_fen",
            field=fields.BigIntField(default=0),
        ),
        ops.AddField(
            model_name="PointsMallRedemption",
            name="cash_fen",
            field=fields.BigIntField(default=0),
        ),
        ops.AddField(
            model_name="PointsMallRedemption",
            name="pay_deadline",
            field=fields.DatetimeField(null=True),
        ),
        ops.AddField(
            model_name="PointsMallRedemption",
            name="hold_id",
            field=fields.BigIntField(null=True),
        ),
        ops.AddField(
            model_name="PointsMallRedemption",
            name="order_id",
            field=fields.BigIntField(null=True),
        ),
        ops.AddField(
            model_name="PointsMallRedemption",
            name="stock_returned",
            field=fields.BooleanField(default=False),
        ),
    ]
