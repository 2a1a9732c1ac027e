from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model


class SubscribeGrant(Model):
    """How many one-time subscribe messages a member allowed for one WeChat template
    (each `wx.requestSubscribeMessage` acceptance allows one)."""

    id = fields.BigIntField(primary_key=True)
    member: Any = fields.ForeignKeyField("models.Member", related_name="subscribe_grants")
    member_id: int
    template_id = fields.CharField(max_length=128)
    remaining = fields.IntField(default=0)
    refused_at = fields.DatetimeField(null=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "subscribe_grant"
        unique_together = (("member_id", "template_id"),)


class TouchLog(Model):
    """Append-only record of one-to-one touches — `delta` is +1 for a touch, -1 when a
    touch was given back because the message did not go out. Redis decides the cap;
    this log re-seeds it and shows ops who was touched, why, and when."""

    id = fields.BigIntField(primary_key=True)
    member_id = fields.BigIntField()
    month = fields.CharField(max_length=6)  # yyyymm, Asia/Shanghai
    kind = fields.CharField(max_length=32)
    delta = fields.SmallIntField(default=1)
    reference = fields.CharField(max_length=128, default="")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "touch_log"
        indexes = (("member_id", "month"),)
