from __future__ import annotations

from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from mall.members.models import Member


class Address(Model):
    """A member's delivery address. Orders and redemptions copy it when they are
    placed, so editing or deleting an address never changes a past shipment."""

    id = fields.BigIntField(primary_key=True)
    member: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name=False, on_delete=fields.CASCADE
    )
    member_id: int
    name = fields.CharField(max_length=32)
    phone = fields.CharField(max_length=20)
    region = fields.CharField(max_length=128)
    detail = fields.CharField(max_length=255)
    is_default = fields.BooleanField(default=False)
    # normalized region + detail (kit.text.address_key): finds accounts sharing one address
    match_key = fields.CharField(max_length=40, default="", db_index=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "address"
        indexes = (("member_id", "is_default"),)
