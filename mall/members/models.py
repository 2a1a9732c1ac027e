from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class Member(Model):
    """A shopper, identified by the mini-program openid.

    `points_balance` is changed only by the points service, in the same transaction
    as its ledger entry, with a conditional update."""

    id = fields.BigIntField(primary_key=True)
    openid = fields.CharField(max_length=64, unique=True)
    unionid = fields.CharField(max_length=64, null=True, db_index=True)
    nickname = fields.CharField(max_length=64, default="")
    avatar_url = fields.CharField(max_length=512, default="")
    phone = fields.CharField(max_length=20, null=True, db_index=True)
    birthday = fields.DateField(null=True)
    points_balance = fields.BigIntField(default=0)
    growth_value = fields.BigIntField(default=0)
    level = fields.IntField(default=0)
    tags: list[str] = fields.JSONField(default=list)  # type: ignore[assignment]
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)
    # set when the member deleted the account: personal data is gone, ledgers stay,
    # and no token of this member opens anything any more (`mall.members.privacy`)
    deleted_at = fields.DatetimeField(null=True)

    class Meta:
        table = "member"


class Staff(Model):
    """An ops or admin account for the console and the admin API."""

    id = fields.BigIntField(primary_key=True)
    username = fields.CharField(max_length=64, unique=True)
    password_hash = fields.CharField(max_length=255)
    role = fields.CharField(max_length=16, default="ops")  # admin | ops
    active = fields.BooleanField(default=True)
    failed_logins = fields.IntField(default=0)
    locked_until = fields.DatetimeField(null=True)
    last_login_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "staff"
