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
    """An ops or admin account for the console and the admin API.

    Failed logins and lock-outs are counted in Redis by name (see members.service), so
    names that do not exist lock the same way."""

    id = fields.BigIntField(primary_key=True)
    username = fields.CharField(max_length=64, unique=True)
    password_hash = fields.CharField(max_length=255)
    role = fields.CharField(max_length=16, default="ops")  # admin | ops
    active = fields.BooleanField(default=True)
    last_login_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "staff"


class AuthSession(Model):
    """One login of a member or a staff account: the family of its refresh tokens.

    Only the newest refresh token (`refresh_jti`) is valid; using it moves `refresh_jti`
    on with a conditional update, so of two uses of one token only one succeeds. A
    signed refresh token of this session with another id was already used: it is replayed,
    and the whole session is revoked. Staff access tokens carry the session id (`sid`) and
    admin routes check it is not revoked, so a logout ends them at once; member access
    tokens are checked by signature alone (the flash-sale path reads no row) and lapse
    within minutes."""

    id = fields.BigIntField(primary_key=True)
    kind = fields.CharField(max_length=8)  # member | staff
    subject_id = fields.BigIntField(description="Member or staff id, by kind")
    refresh_jti = fields.CharField(max_length=32)
    rotations = fields.IntField(default=0)
    ip = fields.CharField(max_length=64, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    last_used_at = fields.DatetimeField(null=True)
    expires_at = fields.DatetimeField(description="When the newest refresh token lapses")
    revoked_at = fields.DatetimeField(null=True)
    revoked_reason = fields.CharField(max_length=16, default="")  # logout | reuse | ...

    class Meta:
        table = "auth_session"
        indexes = (("kind", "subject_id"),)
